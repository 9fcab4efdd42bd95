"""Self-Refine: answer with Chain-of-Thought, then up to 2 rounds of critique and refinement (stops once the critic accepts)."""

# What the model is and what form the answer takes (set for the benchmark's kind).
ROLE = "math expert"
ANSWER_RULE = "The answer must be the final result only: a number (or a simplified expression if the problem asks for one), with no units and no words."
# A regex whose first group is kept from the answer text (None: keep the whole text).
ANSWER_PATTERN = None


def solver(agent, task: str):
    import re

    solve_instructions = "Think step by step and write your working in `reasoning`. " + ANSWER_RULE
    problem = {"role": "user", "content": f"Problem:\n{task}"}
    current = agent.call_json_format_llm(
        messages=[problem],
        temperature=0.5,
        num_of_response=1,
        agent_role=ROLE,
        return_dict_keys=["reasoning", "answer"],
        instructions=solve_instructions,
    )[0]

    for _ in range(2):
        solution_text = f"Reasoning:\n{current.get('reasoning', '')}\n\nAnswer: {current.get('answer', '')}"
        critique = agent.call_json_format_llm(
            messages=[{"role": "user", "content": f"Problem:\n{task}\n\nProposed solution:\n{solution_text}\n\n"
                       "Check this solution carefully, step by step. Point out any error in `feedback`. "
                       "Set `correct` to True only if you are sure the answer is right, else False."}],
            temperature=0.5,
            num_of_response=1,
            agent_role="careful critic",
            return_dict_keys=["feedback", "correct"],
            instructions="Be strict: check the reasoning and the final answer against the problem.",
        )[0]
        if str(critique.get("correct", "")).strip().lower() in ("true", "yes", "1"):
            break
        current = agent.call_json_format_llm(
            messages=[problem,
                      {"role": "assistant", "content": solution_text},
                      {"role": "user", "content": f"Critique of your previous solution:\n{critique.get('feedback', '')}\n\n"
                       "Using this critique, solve the problem again and give a corrected answer."}],
            temperature=0.5,
            num_of_response=1,
            agent_role=ROLE,
            return_dict_keys=["reasoning", "answer"],
            instructions=solve_instructions,
        )[0]

    answer = str(current.get("answer", "")).strip()
    if ANSWER_PATTERN:
        found = re.search(ANSWER_PATTERN, answer)
        answer = found.group(1) if found else answer
    return {"answer": answer}

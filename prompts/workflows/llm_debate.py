"""LLM Debate: 3 agents answer, then revise after reading each other's solutions (2 rounds in all); a judge gives the final answer."""

# What the model is and what form the answer takes (set for the benchmark's kind).
ROLE = "math expert"
ANSWER_RULE = "The answer must be the final result only: a number (or a simplified expression if the problem asks for one), with no units and no words."
# A regex whose first group is kept from the answer text (None: keep the whole text).
ANSWER_PATTERN = None


def solver(agent, task: str):
    import re

    num_agents = 3
    instructions = "Think step by step and write your working in `reasoning`. " + ANSWER_RULE
    problem = f"Problem:\n{task}"

    def show(solution):
        return f"Reasoning: {solution.get('reasoning', '')}\nAnswer: {solution.get('answer', '')}"

    # Round 1: independent solutions (one call, several samples).
    solutions = agent.call_json_format_llm(
        messages=[{"role": "user", "content": problem}],
        temperature=0.8,
        num_of_response=num_agents,
        agent_role=ROLE,
        return_dict_keys=["reasoning", "answer"],
        instructions=instructions,
    )
    # Round 2: each agent reads the others' solutions and revises its own.
    revised = []
    for i, own in enumerate(solutions):
        others = "\n\n".join(f"Agent {j + 1}:\n{show(s)}" for j, s in enumerate(solutions) if j != i)
        revised.append(agent.call_json_format_llm(
            messages=[{"role": "user", "content": problem},
                      {"role": "assistant", "content": show(own)},
                      {"role": "user", "content": f"Solutions from the other agents:\n\n{others}\n\n"
                       "Using their reasoning as extra evidence, check all solutions and give your updated answer."}],
            temperature=0.8,
            num_of_response=1,
            agent_role=ROLE,
            return_dict_keys=["reasoning", "answer"],
            instructions=instructions,
        )[0])

    # Final decision: a judge reads the revised solutions.
    debate = "\n\n".join(f"Agent {j + 1}:\n{show(s)}" for j, s in enumerate(revised))
    final = agent.call_json_format_llm(
        messages=[{"role": "user", "content": f"{problem}\n\nFinal solutions of the debating agents:\n\n{debate}\n\n"
                   "Weigh these solutions and decide the final answer."}],
        temperature=0.2,
        num_of_response=1,
        agent_role="final decision maker",
        return_dict_keys=["reasoning", "answer"],
        instructions=instructions,
    )[0]
    answer = str(final.get("answer", "")).strip()
    if ANSWER_PATTERN:
        found = re.search(ANSWER_PATTERN, answer)
        answer = found.group(1) if found else answer
    return {"answer": answer}

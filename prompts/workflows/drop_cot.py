"""Chain-of-Thought for DROP: find the relevant facts in the passage, count or compute step by step, answer briefly."""


def solver(agent, task: str):
    instructions = (
        "Read the passage carefully, find the sentences the question depends on, and do any counting, "
        "sorting or arithmetic step by step in `reasoning`. Put only the answer in `answer`: a number, a "
        "date, or the exact words of the passage that answer the question (several items separated by "
        "commas). Do not write a full sentence."
    )
    responses = agent.call_json_format_llm(
        messages=[{"role": "user", "content": task}],
        temperature=0.5,
        num_of_response=1,
        agent_role="reading comprehension expert",
        return_dict_keys=["reasoning", "answer"],
        instructions=instructions,
    )
    return {"answer": str(responses[0].get("answer", "")).strip()}

"""Chain-of-Thought for math: one expert call that reasons step by step, then gives the final answer."""


def solver(agent, task: str):
    instructions = (
        "Solve the problem step by step and check each calculation. Write your working in `reasoning`. "
        "Put only the final result in `answer`: a number (or a simplified expression if the problem "
        "asks for one), with no units and no words."
    )
    responses = agent.call_json_format_llm(
        messages=[{"role": "user", "content": f"Problem:\n{task}"}],
        temperature=0.5,
        num_of_response=1,
        agent_role="math expert",
        return_dict_keys=["reasoning", "answer"],
        instructions=instructions,
    )
    return {"answer": str(responses[0].get("answer", "")).strip()}

"""Chain-of-Thought with self-consistency for multiple choice: 5 sampled solutions, majority vote on the letter."""


def solver(agent, task: str):
    import re
    from collections import Counter

    instructions = (
        "Think step by step: work out what the question asks, weigh every option, and rule out the wrong "
        "ones. Write this in `reasoning`. Put only the letter of the correct option in `answer`, for "
        "example: B"
    )
    responses = agent.call_json_format_llm(
        messages=[{"role": "user", "content": f"Question:\n{task}"}],
        temperature=0.8,
        num_of_response=5,
        agent_role="expert in the subject of the question",
        return_dict_keys=["reasoning", "answer"],
        instructions=instructions,
    )
    votes = []
    for response in responses:
        letter = re.search(r"\b([A-Z])\b", str(response.get("answer", "")).strip())
        if letter:
            votes.append(letter.group(1))
    if not votes:
        return {"answer": ""}
    return {"answer": Counter(votes).most_common(1)[0][0]}

"""Chain-of-Thought for multiple choice: reason about the options step by step, answer with one letter."""


def solver(agent, task: str):
    import re

    instructions = (
        "Think step by step: work out what the question asks, weigh every option, and rule out the wrong "
        "ones. Write this in `reasoning`. Put only the letter of the correct option in `answer`, for "
        "example: B"
    )
    responses = agent.call_json_format_llm(
        messages=[{"role": "user", "content": f"Question:\n{task}"}],
        temperature=0.5,
        num_of_response=1,
        agent_role="expert in the subject of the question",
        return_dict_keys=["reasoning", "answer"],
        instructions=instructions,
    )
    text = str(responses[0].get("answer", "")).strip()
    letter = re.search(r"\b([A-Z])\b", text)
    return {"answer": letter.group(1) if letter else text[:1].upper()}

"""Vanilla for code: one direct call that writes the program, with no reasoning step."""


def solver(agent, task: str, entry_point: str):
    import re

    responses = agent.call_json_format_llm(
        messages=[{"role": "user", "content": f"{task}\n\nWrite the function `{entry_point}`."}],
        temperature=0.5,
        num_of_response=1,
        agent_role="Python programmer",
        return_dict_keys=["code"],
        instructions=(
            f"Put in `code` a complete, self-contained Python program that defines `{entry_point}` with "
            "the signature the task gives, including the imports it needs. Do not read input, do not print, "
            "no Markdown fences."
        ),
    )
    code = str(responses[0].get("code", "")).strip()
    fenced = re.search(r"```(?:python)?\s*\n(.*?)```", code, re.DOTALL)
    return {"answer": fenced.group(1) if fenced else code}

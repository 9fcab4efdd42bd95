"""Chain-of-Thought code generation: plan the solution step by step, then write the complete program."""


def solver(agent, task: str, entry_point: str):
    import re

    instructions = (
        "First think through the task in `reasoning`: the inputs, the expected outputs, the algorithm and "
        f"the edge cases. Then put in `code` a complete, self-contained Python program that defines "
        f"`{entry_point}` with the signature the task gives, including the imports it needs. Do not read "
        "input, do not print, no Markdown fences."
    )
    responses = agent.call_json_format_llm(
        messages=[{"role": "user", "content": f"{task}\n\nWrite the function `{entry_point}`."}],
        temperature=0.3,
        num_of_response=1,
        agent_role="expert Python programmer",
        return_dict_keys=["reasoning", "code"],
        instructions=instructions,
    )
    code = str(responses[0].get("code", "")).strip()
    fenced = re.search(r"```(?:python)?\s*\n(.*?)```", code, re.DOTALL)
    return {"answer": fenced.group(1) if fenced else code}

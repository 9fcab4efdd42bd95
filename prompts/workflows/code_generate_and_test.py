"""Generate and test: write a program, run the public tests, and repair it with their feedback (up to 2 repairs)."""


def solver(agent, task: str, entry_point: str):
    import re

    def clean(code):
        code = str(code).strip()
        fenced = re.search(r"```(?:python)?\s*\n(.*?)```", code, re.DOTALL)
        return fenced.group(1) if fenced else code

    instructions = (
        "First think through the task in `reasoning`: the inputs, the expected outputs, the algorithm and "
        f"the edge cases. Then put in `code` a complete, self-contained Python program that defines "
        f"`{entry_point}` with the signature the task gives, including the imports it needs. Do not read "
        "input, do not print, no Markdown fences."
    )
    messages = [{"role": "user", "content": f"{task}\n\nWrite the function `{entry_point}`."}]
    program = clean(agent.call_json_format_llm(
        messages=messages,
        temperature=0.3,
        num_of_response=1,
        agent_role="expert Python programmer",
        return_dict_keys=["reasoning", "code"],
        instructions=instructions,
    )[0].get("code", ""))

    for _ in range(2):
        result = agent.run_public_tests(program)
        if result.get("passed"):
            break
        messages = messages + [
            {"role": "assistant", "content": program},
            {"role": "user", "content": f"Your program failed the public tests:\n{result.get('feedback', '')}\n\n"
             "Find the bug, explain it in `reasoning`, and give the complete corrected program in `code`."},
        ]
        program = clean(agent.call_json_format_llm(
            messages=messages,
            temperature=0.3,
            num_of_response=1,
            agent_role="expert Python programmer",
            return_dict_keys=["reasoning", "code"],
            instructions=instructions,
        )[0].get("code", ""))
    return {"answer": program}

"""LLM Debate for code: 3 programmers write, then revise after reading each other's programs (2 rounds in all); a judge writes the final program."""


def solver(agent, task: str, entry_point: str):
    import re

    def clean(code):
        code = str(code).strip()
        fenced = re.search(r"```(?:python)?\s*\n(.*?)```", code, re.DOTALL)
        return fenced.group(1) if fenced else code

    num_agents = 3
    instructions = (
        "First think through the task in `reasoning`: the inputs, the expected outputs, the algorithm and "
        f"the edge cases. Then put in `code` a complete, self-contained Python program that defines "
        f"`{entry_point}` with the signature the task gives, including the imports it needs. Do not read "
        "input, do not print, no Markdown fences."
    )
    request = f"{task}\n\nWrite the function `{entry_point}`."

    # Round 1: independent programs (one call, several samples).
    programs = [clean(r.get("code", "")) for r in agent.call_json_format_llm(
        messages=[{"role": "user", "content": request}],
        temperature=0.8,
        num_of_response=num_agents,
        agent_role="expert Python programmer",
        return_dict_keys=["reasoning", "code"],
        instructions=instructions,
    )]
    # Round 2: each programmer reads the others' programs and revises its own.
    revised = []
    for i, own in enumerate(programs):
        others = "\n\n".join(f"Programmer {j + 1}:\n{p}" for j, p in enumerate(programs) if j != i)
        revised.append(clean(agent.call_json_format_llm(
            messages=[{"role": "user", "content": request},
                      {"role": "assistant", "content": own},
                      {"role": "user", "content": f"Programs from the other programmers:\n\n{others}\n\n"
                       "Compare them with yours, look for bugs and missed edge cases, and give your updated program."}],
            temperature=0.8,
            num_of_response=1,
            agent_role="expert Python programmer",
            return_dict_keys=["reasoning", "code"],
            instructions=instructions,
        )[0].get("code", "")))

    # Final decision: a judge reads the revised programs and writes the final one.
    debate = "\n\n".join(f"Programmer {j + 1}:\n{p}" for j, p in enumerate(revised))
    final = agent.call_json_format_llm(
        messages=[{"role": "user", "content": f"{request}\n\nFinal programs of the debating programmers:\n\n{debate}\n\n"
                   "Decide which approach is correct and give the final program."}],
        temperature=0.2,
        num_of_response=1,
        agent_role="final decision maker and senior Python programmer",
        return_dict_keys=["reasoning", "code"],
        instructions=instructions,
    )[0]
    return {"answer": clean(final.get("code", ""))}

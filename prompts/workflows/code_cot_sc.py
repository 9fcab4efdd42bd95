"""Code generation with self-consistency: 5 sampled programs, majority vote on their syntax trees (comments and layout ignored)."""


def solver(agent, task: str, entry_point: str):
    import ast
    import re
    from collections import Counter

    def clean(code):
        code = str(code).strip()
        fenced = re.search(r"```(?:python)?\s*\n(.*?)```", code, re.DOTALL)
        return fenced.group(1) if fenced else code

    def vote_key(code):
        # Programs that differ only in comments or formatting get the same vote.
        try:
            return ast.dump(ast.parse(code))
        except SyntaxError:
            return "unparsable:" + code

    instructions = (
        "First think through the task in `reasoning`: the inputs, the expected outputs, the algorithm and "
        f"the edge cases. Then put in `code` a complete, self-contained Python program that defines "
        f"`{entry_point}` with the signature the task gives, including the imports it needs. Do not read "
        "input, do not print, no Markdown fences."
    )
    responses = agent.call_json_format_llm(
        messages=[{"role": "user", "content": f"{task}\n\nWrite the function `{entry_point}`."}],
        temperature=0.8,
        num_of_response=5,
        agent_role="expert Python programmer",
        return_dict_keys=["reasoning", "code"],
        instructions=instructions,
    )
    programs = [clean(r.get("code", "")) for r in responses]
    programs = [p for p in programs if p]
    if not programs:
        return {"answer": ""}
    winner = Counter(vote_key(p) for p in programs).most_common(1)[0][0]
    return {"answer": next(p for p in programs if vote_key(p) == winner)}

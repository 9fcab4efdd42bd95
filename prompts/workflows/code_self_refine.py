"""Self-Refine for code: write a program, then up to 2 rounds of code review and revision (stops once the reviewer accepts)."""


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
    request = {"role": "user", "content": f"{task}\n\nWrite the function `{entry_point}`."}
    program = clean(agent.call_json_format_llm(
        messages=[request],
        temperature=0.3,
        num_of_response=1,
        agent_role="expert Python programmer",
        return_dict_keys=["reasoning", "code"],
        instructions=instructions,
    )[0].get("code", ""))

    for _ in range(2):
        review = agent.call_json_format_llm(
            messages=[{"role": "user", "content": f"Task:\n{task}\n\nProposed program:\n{program}\n\n"
                       "Review this program: trace it on the examples and on edge cases. Point out any bug in "
                       "`feedback`. Set `correct` to True only if you are sure it is correct, else False."}],
            temperature=0.5,
            num_of_response=1,
            agent_role="strict code reviewer",
            return_dict_keys=["feedback", "correct"],
            instructions="Be strict: check correctness against the task, including edge cases.",
        )[0]
        if str(review.get("correct", "")).strip().lower() in ("true", "yes", "1"):
            break
        program = clean(agent.call_json_format_llm(
            messages=[request,
                      {"role": "assistant", "content": program},
                      {"role": "user", "content": f"Code review of your previous program:\n{review.get('feedback', '')}\n\n"
                       "Using this review, give the complete corrected program."}],
            temperature=0.3,
            num_of_response=1,
            agent_role="expert Python programmer",
            return_dict_keys=["reasoning", "code"],
            instructions=instructions,
        )[0].get("code", ""))
    return {"answer": program}

"""Chain-of-Thought with self-consistency for math: 5 sampled solutions, majority vote on the answer."""


def solver(agent, task: str):
    from collections import Counter

    def normalise(answer):
        # "1,000", "1000.0" and "$1000" count as the same vote; expressions stay as written.
        text = str(answer).strip().rstrip(".").lstrip("$")
        try:
            value = float(text.replace(",", ""))
        except ValueError:
            return text
        return str(int(value)) if value.is_integer() else str(value)

    instructions = (
        "Solve the problem step by step and check each calculation. Write your working in `reasoning`. "
        "Put only the final result in `answer`: a number (or a simplified expression if the problem "
        "asks for one), with no units and no words."
    )
    responses = agent.call_json_format_llm(
        messages=[{"role": "user", "content": f"Problem:\n{task}"}],
        temperature=0.8,
        num_of_response=5,
        agent_role="math expert",
        return_dict_keys=["reasoning", "answer"],
        instructions=instructions,
    )
    votes = [normalise(r.get("answer", "")) for r in responses]
    votes = [v for v in votes if v] or [""]
    return {"answer": Counter(votes).most_common(1)[0][0]}

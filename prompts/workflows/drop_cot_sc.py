"""Chain-of-Thought with self-consistency for DROP: 5 sampled solutions, majority vote on the normalised answer."""


def solver(agent, task: str):
    import re
    from collections import Counter

    def normalise(answer):
        # Votes ignore case, punctuation, articles and number formatting ("1,000" == "1000.0").
        text = re.sub(r"[^\w\s.]", " ", str(answer).lower())
        text = re.sub(r"\b(a|an|the)\b", " ", text)
        words = []
        for word in text.split():
            try:
                value = float(word.strip("."))
                words.append(str(int(value)) if value.is_integer() else str(value))
            except ValueError:
                words.append(word.strip("."))
        return " ".join(w for w in words if w)

    instructions = (
        "Read the passage carefully, find the sentences the question depends on, and do any counting, "
        "sorting or arithmetic step by step in `reasoning`. Put only the answer in `answer`: a number, a "
        "date, or the exact words of the passage that answer the question (several items separated by "
        "commas). Do not write a full sentence."
    )
    responses = agent.call_json_format_llm(
        messages=[{"role": "user", "content": task}],
        temperature=0.8,
        num_of_response=5,
        agent_role="reading comprehension expert",
        return_dict_keys=["reasoning", "answer"],
        instructions=instructions,
    )
    answers = [str(r.get("answer", "")).strip() for r in responses]
    answers = [a for a in answers if a]
    if not answers:
        return {"answer": ""}
    winner = Counter(normalise(a) for a in answers).most_common(1)[0][0]
    # Return the answer as first written by a sample in the winning group.
    return {"answer": next(a for a in answers if normalise(a) == winner)}

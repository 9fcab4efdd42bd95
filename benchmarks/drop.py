"""DROP (reading comprehension with discrete reasoning), as ADAS runs it.

Source: drop_v0_dev.jsonl.gz (ADAS's copy of simple-evals' DROP dev set; keys context, completion,
ref_text). Split: ADAS drops the first and the last row (few-shot examples), shuffles the rest with
seed 0, 128 validation / next 800 test. Id: the row index in the file. Score: DROP F1 in [0, 1],
max over the "|"-separated gold answers.
"""
from __future__ import annotations

import re
import string

from benchmarks.common import adas_split, as_text, bounded_scorer, data_file, read_jsonl

NAME = "drop"
KIND = "drop"
FILES = ("drop_v0_dev.jsonl.gz",)
DESCRIPTION = """
DROP (Discrete Reasoning Over Paragraphs) Benchmark.
**Type**: Reading comprehension with discrete reasoning (counting, sorting, arithmetic over the passage)
**Answer Type**: A short string: a number, a date, or one or more spans copied from the passage. Keep it concise.
**Metric**: token-level F1 between the answer and the gold answer(s), after lower-casing and removing punctuation and articles.
**Description**: Each task is a passage followed by a question about it. Answering usually needs several steps over facts spread across the passage.

Example Task:
Passage: The harbour town had 1,240 residents in 1990 and 1,615 in 2000. Of the 2000 residents, 38% worked in fishing and 12% in tourism.
Question: By how many residents did the town grow between 1990 and 2000?

Example Answer: 375
""".strip()

_ANSWER_SUFFIX = re.compile(r"\s*Answer:\s*$")


def load(data_dir, verify=True) -> dict[str, list[dict]]:
    rows = read_jsonl(data_file(data_dir, FILES[0], verify))
    examples = []
    # ShengranHu/ADAS _drop/search.py @03dd85b: `load_drop(...)[1:-1]`, first and last are few-shot examples.
    for i, row in enumerate(rows[1:-1], start=1):
        # context is "Passage: ...\nQuestion: ...\nAnswer:"; the solver gets passage + question.
        task = _ANSWER_SUFFIX.sub("", row["context"]).strip()
        examples.append({"id": f"drop/{i}", "task": task, "answer": row["ref_text"].split("|")})
    valid, test = adas_split(examples, 128, 800)
    return {"valid": valid, "test": test}


@bounded_scorer(linear=True)
def score(prediction, example) -> float:
    """DROP F1 in [0, 1]: max over gold answers, as ADAS's drop_metric (which reports it x100).

    >>> score("Filipinos and Pakistanis", {"answer": ["Pakistanis and Filipinos"]})
    1.0
    """
    golds = example["answer"]
    if isinstance(golds, str):
        golds = golds.split("|")
    prediction = as_text(prediction)
    f1s = [drop_f1(prediction, gold) for gold in golds if gold.strip() != ""]
    return max(f1s) if f1s else 0.0


# DROP F1 as ADAS computes it: ShengranHu/ADAS _drop/utils.py (from openai/simple-evals drop_eval.py):
# tokens split on " " and "-", each lower-cased, stripped of punctuation unless numeric, numbers
# normalised with str(float(x)), articles removed; F1 over token sets; 0 when the gold has numbers and
# the prediction shares none of them; rounded to 2 decimals on the 0-100 scale.

def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _normalize_token(token: str) -> str:
    token = token.lower()
    if not _is_number(token):
        token = "".join(ch for ch in token if ch not in string.punctuation)
    if _is_number(token):
        token = str(float(token))
    token = re.sub(r"\b(a|an|the)\b", " ", token)
    return " ".join(token.split())


def _bag(text: str) -> set[str]:
    parts = [_normalize_token(tok) for tok in re.split(" |-", text)]
    return set(" ".join(p for p in parts if p.strip()).strip().split())


def drop_f1(prediction: str, gold: str) -> float:
    """F1 of one prediction against one gold answer, in [0, 1]."""
    pred_bag, gold_bag = _bag(prediction), _bag(gold)
    gold_numbers = {w for w in gold_bag if _is_number(w)}
    if gold_numbers and not gold_numbers & {w for w in pred_bag if _is_number(w)}:
        return 0.0
    common = len(gold_bag & pred_bag)
    precision = common / len(pred_bag) if pred_bag else 1.0
    recall = common / len(gold_bag) if gold_bag else 1.0
    if precision == 0.0 and recall == 0.0:
        return 0.0
    # Same float operations as ADAS, so the rounding to 2 decimals (of the x100 value) agrees bit for bit.
    f1_x100 = ((2 * precision * recall) / (precision + recall)) * 100
    return round(f1_x100, 2) / 100

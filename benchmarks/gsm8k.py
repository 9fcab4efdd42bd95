"""GSM8K (grade-school math word problems), split 1:4 and scored as AFlow does.

Source: gsm8k_test.jsonl (openai/grade-school-math test set, 1,319 rows; answers end in "#### n").
Split: AFlow uses 264 validation / 1,055 test rows of this test set; its split files are not public
data here, so we shuffle the 1,319 rows with seed 0 (ADAS's convention) and take the first 264 as
validation and the other 1,055 as test: same sizes, not the same members. Id: gsm8k/<row>.
Score: AFlow's: the last number in the prediction equals the gold within 1e-6.
"""
from __future__ import annotations

from benchmarks.common import adas_split, bounded_scorer, data_file, last_number, read_jsonl

NAME = "gsm8k"
KIND = "math"
FILES = ("gsm8k_test.jsonl",)
DESCRIPTION = """
Grade School Math 8K (GSM8K) Benchmark.
**Type**: Mathematical problem solving
**Answer Type**: The answer must be a number; the last number in the returned answer is the one that is scored.
**Description**: GSM8K holds linguistically diverse grade-school math word problems that take between two and eight steps of basic arithmetic (addition, subtraction, multiplication, division) to solve.

Example Question:
A bookshop sells notebooks at $3 each and pens at $2 each. Maya buys 4 notebooks and 5 pens and pays with a $50 bill. How much change does she get?

Example Answer: 28
""".strip()


def load(data_dir, verify=True) -> dict[str, list[dict]]:
    rows = read_jsonl(data_file(data_dir, FILES[0], verify))
    # AFlow feeds the bare question and takes the gold from the "#### n" tail with the same extractor
    # (geekan/MetaGPT metagpt/ext/aflow/benchmark/gsm8k.py @27e942c evaluate_problem).
    examples = [{"id": f"gsm8k/{i}", "task": row["question"], "answer": last_number(row["answer"])}
                for i, row in enumerate(rows)]
    valid, test = adas_split(examples, 264, 1055)
    return {"valid": valid, "test": test}


@bounded_scorer(linear=True)
def score(prediction, example) -> float:
    """1.0 when the last number in the prediction equals the gold within 1e-6.

    >>> score("The answer is $1,028.", {"answer": 1028.0})
    1.0
    """
    predicted = last_number(prediction)
    if predicted is None:
        return 0.0
    return 1.0 if abs(example["answer"] - predicted) <= 1e-6 else 0.0

"""GSM-Hard (GSM8K with larger, less friendly numbers), as the official W4S code runs it.

Source: gsmhardv2.jsonl (1,319 rows: input, code, target). Split: shuffled with seed 0, the first 128
rows are validation and rows 128-627 (500) are test, as fannie1208/W4S src/tasks/gsmhard/
task_gsmhard.py @d4b0788 (valid_set = examples[:128]; test_evaluate uses examples[128:628]).
Id: gsm_hard/<row>. Score: float(prediction) within 0.1 of the target, as the same file's score_gsmhard.
"""
from __future__ import annotations

from benchmarks.common import adas_split, as_text, bounded_scorer, data_file, read_jsonl

NAME = "gsm_hard"
KIND = "math"
FILES = ("gsmhardv2.jsonl",)
DESCRIPTION = """
Grade School Math (GSM) Hard Benchmark.
**Type**: Mathematical problem solving
**Answer Type**: The answer must be a float, written as a plain number (no units, no commas, no text); it is correct within 0.1.
**Description**: GSM-Hard rewrites GSM8K problems with much larger and less convenient numbers, so careless mental arithmetic fails and exact computation (for example by writing and running code) pays off. The reasoning steps are those of grade-school math.

Example Question:
Solve this math problem:
A warehouse holds 7,834,215 bottles. Every day 12,870 bottles are shipped out and 3,045 new bottles arrive. How many bottles are in the warehouse after 30 days?

Example solution code:
def solution():
    bottles = 7834215
    shipped_per_day = 12870
    arrived_per_day = 3045
    days = 30
    return bottles - days * (shipped_per_day - arrived_per_day)

Final answer: 7539465
""".strip()


def load(data_dir, verify=True) -> dict[str, list[dict]]:
    rows = read_jsonl(data_file(data_dir, FILES[0], verify))
    examples = [{"id": f"gsm_hard/{i}", "task": "Solve this math problem:\n" + row["input"],
                 "answer": str(row["target"])} for i, row in enumerate(rows)]
    valid, test = adas_split(examples, 128, 500)
    return {"valid": valid, "test": test}


@bounded_scorer(linear=True)
def score(prediction, example) -> float:
    """1.0 when float(prediction) is within 0.1 of the target; text around the number scores 0.

    >>> score("7539465.04", {"answer": "7539465.0"})
    1.0
    """
    try:
        target, predicted = float(example["answer"]), float(as_text(prediction))
    except (TypeError, ValueError):
        return 0.0
    return 1.0 if abs(target - predicted) < 1e-1 else 0.0

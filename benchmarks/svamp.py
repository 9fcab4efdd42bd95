"""SVAMP (robustness variants of one-step/two-step arithmetic word problems), as ADAS runs it.

Source: SVAMP.json (1,000 rows: ID, Body, Question, Equation, Answer, Type). Split: shuffled with seed 0,
128 validation / next 800 test (ShengranHu/ADAS _transfer_math/evaluation_SVAMP.py @03dd85b).
Id: SVAMP's own ID (e.g. chal-12). Score: ADAS's exact numeric string match.
"""
from __future__ import annotations

import json

from benchmarks.common import adas_number_match, adas_split, adas_target, as_text, bounded_scorer, data_file

NAME = "svamp"
KIND = "math"
FILES = ("SVAMP.json",)
DESCRIPTION = """
SVAMP (Simple Variations on Arithmetic Math word Problems) Benchmark.
**Type**: Mathematical problem solving
**Answer Type**: The answer must be a number written with digits only (an integer, or a decimal without trailing zeros).
**Description**: SVAMP varies simple elementary-school word problems (changing the question, the order of facts, or adding irrelevant numbers) to test whether a solver really reads the problem instead of relying on shallow patterns. Each problem needs one or two arithmetic operations.

Example Question:
Solve this math problem:
A library had 86 books on a shelf. Some students borrowed 29 of them and later returned 12. How many books are on the shelf now?

Example Answer: 69
""".strip()


def load(data_dir, verify=True) -> dict[str, list[dict]]:
    with open(data_file(data_dir, FILES[0], verify), encoding="utf-8") as f:
        rows = json.load(f)
    # Task text and gold as ShengranHu/ADAS _transfer_math/SVAMP_utils.py @d0acd49 get_all_examples.
    examples = [{"id": row["ID"], "task": "Solve this math problem:\n" + row["Body"] + "\n" + row["Question"],
                 "answer": adas_target(row["Answer"])} for row in rows]
    valid, test = adas_split(examples, 128, 800)
    return {"valid": valid, "test": test}


@bounded_scorer(linear=True)
def score(prediction, example) -> float:
    """1.0 when the prediction is the gold number as a string (commas and trailing ".0" ignored).

    >>> score("69.0", {"answer": "69"})
    1.0
    """
    return float(adas_number_match(example["answer"], as_text(prediction)))

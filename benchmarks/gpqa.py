"""GPQA diamond (graduate-level, "Google-proof" science multiple choice), as ADAS runs it.

Source: gpqa_diamond.csv (198 rows, the original columns). Split: ADAS keeps the file order, shuffles
each row's four answers with one generator seeded 0 (row by row, in file order), and takes the first 32
rows as validation and the other 166 as test (ShengranHu/ADAS _gpqa/utils.py load_questions and
_gpqa/search.py @03dd85b). Id: gpqa/<Record ID>. Score: ADAS's letter extraction.

The GPQA authors ask that examples are not republished in plain text online: never print examples
from this benchmark into published logs, and never commit them.
"""
from __future__ import annotations

import csv
import random

from benchmarks.common import LETTERS, adas_letter, as_text, bounded_scorer, data_file, format_choices

NAME = "gpqa"
KIND = "multiple_choice"
FILES = ("gpqa_diamond.csv",)
# A made-up question in GPQA's format; never a real GPQA example.
DESCRIPTION = """
GPQA (Graduate-Level Google-Proof Q&A) Benchmark, diamond subset.
**Type**: Multiple-choice question answering
**Answer Type**: The answer must be a single capital letter naming one option (A, B, C or D), with nothing else.
**Description**: GPQA holds very hard questions written by domain experts in biology, physics and chemistry. Skilled non-experts with web access reach only about a third of the answers, so careful step-by-step domain reasoning is needed.

Example Question:
What is the correct answer to this question: A spin-1/2 particle is prepared in the eigenstate of S_x with eigenvalue +hbar/2 and then S_z is measured. What is the probability of obtaining +hbar/2?

Choices:
(A) 1
(B) 1/4
(C) 1/2
(D) 0

Example Answer: C
""".strip()


def load(data_dir, verify=True) -> dict[str, list[dict]]:
    with open(data_file(data_dir, FILES[0], verify), encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    rng = random.Random(0)
    examples = []
    for row in rows:
        choices = [row["Incorrect Answer 1"], row["Incorrect Answer 2"], row["Incorrect Answer 3"], row["Correct Answer"]]
        rng.shuffle(choices)
        examples.append({"id": f"gpqa/{row['Record ID']}",
                         "task": format_choices(row["Question"], choices, "What is the correct answer to this question: "),
                         "answer": LETTERS[choices.index(row["Correct Answer"])], "num_options": 4})
    return {"valid": examples[:32], "test": examples[32:]}


@bounded_scorer(linear=True)
def score(prediction, example) -> float:
    """1.0 when ADAS's letter extraction gives the gold letter: "C" or "(C)" count, "c" does not.

    >>> score("(C)", {"answer": "C", "num_options": 4})
    1.0
    """
    index = adas_letter(as_text(prediction), example["num_options"])
    return 1.0 if index is not None and LETTERS[index] == example["answer"] else 0.0

"""MMLU-Pro (10-option multiple choice over 14 subjects), split and scored the ADAS way.

Source: mmlu_pro_full_test.jsonl (12,032 rows: question_id, question, options, answer, ...). Split:
shuffled with seed 0, 128 validation / next 800 test, as ADAS does for MMLU (ShengranHu/ADAS
_mmlu/search.py @03dd85b). Id: mmlu_pro/<question_id>. Score: ADAS's letter extraction, extended to
the ten letters A-J.
"""
from __future__ import annotations

from benchmarks.common import (LETTERS, adas_letter, adas_split, as_text, bounded_scorer, data_file, format_choices,
                               read_jsonl)

NAME = "mmlu_pro"
KIND = "multiple_choice"
FILES = ("mmlu_pro_full_test.jsonl",)
DESCRIPTION = """
MMLU-Pro (Massive Multitask Language Understanding, Professional) Benchmark.
**Type**: Multiple-choice question answering
**Answer Type**: The answer must be a single capital letter naming one option (A, B, C, ... up to J), with nothing else.
**Description**: MMLU-Pro holds harder, more reasoning-focused questions than MMLU across 14 subjects (law, health, engineering, physics, chemistry, math, economics, business, psychology, biology, history, philosophy, computer science, other), most with ten options, so guessing rarely helps.

Example Question:
Answer the following multiple choice question.

A company's fixed costs are $12,000 a month and each unit sells for $50 with a variable cost of $30. How many units must it sell in a month to break even?

Choices:
(A) 240
(B) 400
(C) 500
(D) 600
(E) 750
(F) 800
(G) 1,000
(H) 1,200
(I) 1,500
(J) 2,400

Example Answer: D
""".strip()


def load(data_dir, verify=True) -> dict[str, list[dict]]:
    rows = read_jsonl(data_file(data_dir, FILES[0], verify))
    examples = [{"id": f"mmlu_pro/{row['question_id']}",
                 "task": format_choices(row["question"], row["options"], "Answer the following multiple choice question.\n\n"),
                 "answer": LETTERS[row["answer_index"]], "num_options": len(row["options"]),
                 "category": row["category"]} for row in rows]
    valid, test = adas_split(examples, 128, 800)
    return {"valid": valid, "test": test}


@bounded_scorer(linear=True)
def score(prediction, example) -> float:
    """1.0 when ADAS's letter extraction gives the gold letter: "D" or "(D) 600" count, "d" does not.

    >>> score("(D) 600", {"answer": "D", "num_options": 10})
    1.0
    """
    index = adas_letter(as_text(prediction), example["num_options"])
    return 1.0 if index is not None and LETTERS[index] == example["answer"] else 0.0

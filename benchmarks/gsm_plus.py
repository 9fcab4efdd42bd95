"""GSM-Plus (GSM8K questions under 8 kinds of perturbation), split and scored the ADAS way.

Source: gsmplus_testmini.jsonl (2,400 rows: 300 per perturbation type). Split: shuffled with seed 0,
128 validation / next 800 test, as ADAS does for its math benchmarks (no peer ships GSM-Plus code).
Id: gsm_plus/<row>. Score: ADAS's exact numeric string match (SVAMP's score_fn); golds are strings such
as "4.33", "1/10" or "None" (the "critical thinking" questions have no numeric answer).
"""
from __future__ import annotations

from benchmarks.common import adas_number_match, adas_split, as_text, bounded_scorer, data_file, read_jsonl

NAME = "gsm_plus"
KIND = "math"
FILES = ("gsmplus_testmini.jsonl",)
DESCRIPTION = """
GSM-Plus Benchmark.
**Type**: Mathematical problem solving
**Answer Type**: The answer must be a number written with digits only (an integer, a decimal without trailing zeros, or a fraction such as 1/4 when the question asks for one). If the question does not give enough information to compute an answer, the answer is the string None.
**Description**: GSM-Plus perturbs grade-school math problems from GSM8K in eight ways (numerical substitution, digit expansion, integer-decimal-fraction conversion, adding an operation, reversing the operation, problem understanding, distractor insertion, critical thinking) to test how robust a solver's multi-step reasoning is.

Example Question:
Solve this math problem:
A farmer packs 1,250 apples into boxes of 25 and sells each box for $8.50. How much money does he make?

Example Answer: 425
""".strip()


def load(data_dir, verify=True) -> dict[str, list[dict]]:
    rows = read_jsonl(data_file(data_dir, FILES[0], verify))
    examples = [{"id": f"gsm_plus/{i}", "task": "Solve this math problem:\n" + row["question"],
                 "answer": row["answer"], "perturbation_type": row["perturbation_type"]}
                for i, row in enumerate(rows)]
    valid, test = adas_split(examples, 128, 800)
    return {"valid": valid, "test": test}


@bounded_scorer(linear=True)
def score(prediction, example) -> float:
    """1.0 when the prediction is the gold answer as a string (commas and trailing ".0" ignored).

    >>> score("4.330", {"answer": "4.33"})
    1.0
    """
    return float(adas_number_match(example["answer"], as_text(prediction)))

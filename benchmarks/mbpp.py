"""MBPP (sanitized; short Python functions from a one-line description), AFlow's split, pass@1.

Source: mbpp_validate.jsonl (86) and mbpp_test.jsonl (341), AFlow's split as shipped in fannie1208/W4S
datasets/ (task_id, prompt, code, test_imports, test_list, entry_point, test); public tests from
mbpp_public_test.jsonl, matched by entry point (and by test content where two problems share one).
Id: mbpp/<task_id>. Score: 1.0 when the program passes the hidden tests in the sandbox, after AFlow's
preparation (geekan/MetaGPT metagpt/ext/aflow/benchmark/mbpp.py @27e942c check_solution).
"""
from __future__ import annotations

from collections import defaultdict

from benchmarks.common import (CODE_PRELUDE, as_text, bounded, data_file, extract_program, public_test_source, read_jsonl,
                               run_tests, sanitize)

NAME = "mbpp"
KIND = "code"
FILES = ("mbpp_validate.jsonl", "mbpp_test.jsonl", "mbpp_public_test.jsonl")
DESCRIPTION = '''
MBPP (Mostly Basic Python Problems) Benchmark.
**Type**: Code generation (Python)
**Answer Type**: The answer must be the complete Python source of the requested function (imports, the def line with the given name and parameters, and the body), under the key "answer". Helper functions may be included; code outside functions is ignored.
**Description**: Each task is a short natural-language description of a basic programming problem followed by the function signature to implement. The function is run against hidden assert-based tests; a task counts as solved only if every test passes (pass@1). Public tests are available through `agent.run_public_tests(program)`.

Example Task (entry point: second_largest):
Write a function to find the second largest distinct number in a list.

def second_largest(nums):

Example Answer:
def second_largest(nums):
    distinct = sorted(set(nums))
    return distinct[-2] if len(distinct) > 1 else None
'''.strip()


def _match_public(row: dict, candidates: list[list[str]]) -> list[str]:
    """The public cases of this problem. Where two problems share an entry point, keep the candidate whose
    asserts (candidate -> entry point) all occur in this problem's test_list; if that is not unique, none
    (W4S blanks all such problems: fannie1208/W4S src/utils/helper.py @6ebcbe5 hardcoded_cases)."""
    if len(candidates) == 1:
        return candidates[0]
    squash = lambda s: s.replace(" ", "")  # noqa: E731
    known = {squash(t) for t in row["test_list"]}
    fits = [c for c in candidates if all(squash(t.replace("candidate", row["entry_point"])) in known for t in c)]
    return fits[0] if len(fits) == 1 else []


def load(data_dir, verify=True) -> dict[str, list[dict]]:
    public = defaultdict(list)
    for row in read_jsonl(data_file(data_dir, FILES[2], verify)):
        public[row["entry_point"]].append(row["test"])
    splits = {}
    for split, name in zip(("valid", "test"), FILES[:2]):
        splits[split] = [{
            "id": f"mbpp/{row['task_id']}", "task": row["prompt"], "answer": row["code"],
            "entry_point": row["entry_point"],
            "public_tests": public_test_source(_match_public(row, public[row["entry_point"]]), row["entry_point"]),
            "test": "".join(f"{line}\n" for line in row["test_imports"]) + row["test"] + "\n\ncheck()\n",
        } for row in read_jsonl(data_file(data_dir, name, verify))]
    return splits


def prepare_program(prediction, entry_point: str) -> str:
    """The program AFlow would run: fenced code extracted, sanitized, AFlow's globals put first."""
    return CODE_PRELUDE + sanitize(extract_program(as_text(prediction), entry_point), entry_point)


def score(prediction, example) -> float:
    """pass@1: 1.0 when the hidden tests pass. score(example["answer"], example) == 1.0 for the reference."""
    # extraction and sanitising are bounded (a pathological answer scores 0), the tests run in the sandbox
    program = bounded(__name__, "prepare_program", [as_text(prediction), example["entry_point"]], None)
    return 0.0 if program is None else run_tests(program, example["test"], entry_point=example["entry_point"])

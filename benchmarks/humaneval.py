"""HumanEval (function synthesis from a signature and docstring), AFlow's split, scored by pass@1.

Source: humaneval_validate.jsonl (33) and humaneval_test.jsonl (131), AFlow's split as shipped in
fannie1208/W4S datasets/ (rows of HumanEval.jsonl.gz: task_id, prompt, entry_point,
canonical_solution, test); public tests from humaneval_public_test.jsonl (159 of the 164 problems),
matched by task id. Id: the task id (HumanEval/12). Score: 1.0 when the program passes the hidden tests
in the sandbox, after AFlow's preparation (geekan/MetaGPT metagpt/ext/aflow/benchmark/humaneval.py
@27e942c check_solution): sanitize, helper functions for three problems, AFlow's globals, 15 s.
"""
from __future__ import annotations

from benchmarks.common import (CODE_PRELUDE, as_text, bounded, data_file, extract_program, public_test_source, read_jsonl,
                               run_tests, sanitize)

NAME = "humaneval"
KIND = "code"
FILES = ("humaneval_validate.jsonl", "humaneval_test.jsonl", "humaneval_public_test.jsonl")
DESCRIPTION = '''
HumanEval Benchmark.
**Type**: Code generation (Python)
**Answer Type**: The answer must be the complete Python source of the requested function (its imports, the def line with the given signature, and the body), under the key "answer". Helper functions may be included; code outside functions is ignored.
**Description**: Each task is a Python function signature with a docstring describing its behaviour and a few examples. The function is run against hidden unit tests; a task counts as solved only if every test passes (pass@1). A few public tests per task are available through `agent.run_public_tests(program)`.

Example Task (entry point: count_vowels):
def count_vowels(word: str) -> int:
    """Return how many vowels (a, e, i, o, u, either case) the word contains.
    >>> count_vowels("Banana")
    3
    """

Example Answer:
def count_vowels(word: str) -> int:
    return sum(1 for ch in word.lower() if ch in "aeiou")
'''.strip()

# Helpers the prompts of three problems define and a model's answer often omits; AFlow prepends them
# to the program (same behaviour as its hard-coded copies, written here from the HumanEval prompts).
# Their hidden tests call them too: there the tests' own copy is used, never the program's.
HELPERS = {
    "decode_cyclic": (
        "def encode_cyclic(s: str):\n"
        "    groups = [s[(3 * i):min((3 * i + 3), len(s))] for i in range((len(s) + 2) // 3)]\n"
        "    groups = [(group[1:] + group[0]) if len(group) == 3 else group for group in groups]\n"
        "    return \"\".join(groups)\n\n"),
    "decode_shift": (
        "def encode_shift(s: str):\n"
        "    return \"\".join([chr(((ord(ch) + 5 - ord(\"a\")) % 26) + ord(\"a\")) for ch in s])\n\n"),
    "find_zero": (
        "def poly(xs: list, x: float):\n"
        "    return sum(coeff * (x ** i) for i, coeff in enumerate(xs))\n\n"),
}


def load(data_dir, verify=True) -> dict[str, list[dict]]:
    public = {row["problem_id"]: row["test"] for row in read_jsonl(data_file(data_dir, FILES[2], verify))}
    splits = {}
    for split, name in zip(("valid", "test"), FILES[:2]):
        splits[split] = [{
            "id": row["task_id"], "task": row["prompt"], "answer": row["canonical_solution"],
            "entry_point": row["entry_point"],
            "public_tests": public_test_source(public.get(row["task_id"], []), row["entry_point"]),
            # the trusted helper opens the tests too: the tests call it, and a program's own copy (a `poly`
            # that returns 0 passes find_zero's test) must not stand in for it
            "test": HELPERS.get(row["entry_point"], "") + row["test"] + f"\n\ncheck({row['entry_point']})\n",
        } for row in read_jsonl(data_file(data_dir, name, verify))]
    return splits


def prepare_program(prediction, entry_point: str) -> str:
    """The program AFlow would run for this answer: fenced code extracted, sanitized, helpers and
    AFlow's globals (math, hashlib, re, typing names) put first."""
    program = sanitize(extract_program(as_text(prediction), entry_point), entry_point)
    return CODE_PRELUDE + HELPERS.get(entry_point, "") + program


def score(prediction, example) -> float:
    """pass@1: 1.0 when the hidden tests pass.

    Example: score(example["task"] + example["answer"], example) == 1.0 for the canonical solution.
    """
    # extraction and sanitising are bounded (a pathological answer scores 0), the tests run in the sandbox
    program = bounded(__name__, "prepare_program", [as_text(prediction), example["entry_point"]], None)
    return 0.0 if program is None else run_tests(program, example["test"], entry_point=example["entry_point"])

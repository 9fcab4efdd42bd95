"""Helpers shared by the benchmark modules: file reading, ADAS-style splits, answer normalisation.

Each helper follows one official scorer, cited at the function. Nothing here touches the network;
downloading lives in benchmarks/download.py.
"""
from __future__ import annotations

import ast
import functools
import gzip
import hashlib
import json
import os
import random
import re
import warnings
from pathlib import Path

from benchmarks.sums import SHA256

FETCH_HINT = "make data  (or: python -m benchmarks.download --data-dir DIR)"


class DataError(FileNotFoundError):
    """A benchmark file is missing or does not match its sha256 sum."""


# Files already checked in this process: (path, size, mtime_ns) -> True. Hashing 30 MB once per process is cheap.
_VERIFIED: set[tuple[str, int, int]] = set()


def data_file(data_dir: Path, name: str, verify: bool = True) -> Path:
    """The path of a benchmark file, after checking that it exists and (verify=True) matches its sha256
    sum. verify=False is for the tests' synthetic rows, which share the real files' names."""
    path = Path(data_dir) / name
    if not path.is_file():
        raise DataError(f"benchmark file {name} is missing from {data_dir}; fetch it with: {FETCH_HINT}")
    want = SHA256.get(name)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if verify and want is not None and key not in _VERIFIED:
        got = sha256_of(path)
        if got != want:
            raise DataError(f"benchmark file {name} in {data_dir} is corrupt (sha256 {got[:12]}..., expected "
                            f"{want[:12]}...); delete it and fetch it again with: {FETCH_HINT}")
        _VERIFIED.add(key)
    return path


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a .jsonl or .jsonl.gz file. Split on "\\n" only: some rows hold U+2028 inside strings."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f.read().split("\n") if line.strip()]


def adas_split(rows: list, num_valid: int, num_test: int, seed: int = 0) -> tuple[list, list]:
    """ADAS's split: shuffle with `random.seed(seed); random.shuffle(rows)`, first num_valid rows are
    validation, the next num_test are test (ShengranHu/ADAS _mgsm/search.py, _drop/search.py,
    _mmlu/search.py @03dd85b). A private Random(seed) gives the same permutation without global state."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows[:num_valid], rows[num_valid:num_valid + num_test]


# ---------------------------------------------------------------- bounded scoring

# A scorer runs on model output, which can be built to make it slow: sympy on factorial(factorial(30)),
# the sanitiser's longest-parsable search on hundreds of unparsable lines. So the expensive parts run in
# a sandbox process with a time and memory limit (sandbox.bounded_call), and an answer that runs past
# it scores 0. Scorers that are linear in their input run in-process on short answers.
FAST_SCORE_CHARS = 2_000
SCORE_TIMEOUT_S = 5.0
SCORE_MEMORY_MB = 2048


def bounded(module: str, function: str, args: list, default):
    """`module.function(*args)` in a limited sandbox process; `default` if it times out, crashes, runs out
    of memory or raises. Already inside such a process, a plain call."""
    if os.environ.get("W4S_BOUNDED_CALL") == "1":
        import importlib
        try:
            return getattr(importlib.import_module(module), function)(*args)
        except Exception:  # noqa: BLE001 -- the same outcome as in its own process
            return default
    from sandbox import BoundedCallError, bounded_call  # the repo's process sandbox; imported late

    try:
        return bounded_call(module, function, args, timeout_s=SCORE_TIMEOUT_S, max_memory_mb=SCORE_MEMORY_MB)
    except BoundedCallError:
        return default


def bounded_scorer(linear: bool):
    """Decorator for a benchmark's `score(prediction, example)`: in-process when `linear` and the answer
    is short, else in a limited sandbox process (0.0 when it runs past the limit). The undecorated
    function is `score.__wrapped__`."""
    def wrap(fn):
        @functools.wraps(fn)
        def score(prediction, example) -> float:
            if linear and isinstance(prediction, (str, int, float, type(None))) and \
                    len(as_text(prediction)) <= FAST_SCORE_CHARS:
                return fn(prediction, example)
            return float(bounded(fn.__module__, "score.__wrapped__", [_jsonable(prediction), example], 0.0))
        return score
    return wrap


def _jsonable(value):
    """Predictions travel to the scoring process as JSON: anything else goes as the text it scores as."""
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError, RecursionError):
        return as_text(value)


def as_text(prediction) -> str:
    """The prediction as a string, as W4S's evaluation does before scoring
    (fannie1208/W4S src/tasks/gsmhard/task_gsmhard.py @d4b0788: `str(res["answer"])`)."""
    return prediction if isinstance(prediction, str) else str(prediction)


# ---------------------------------------------------------------- numeric answers

def adas_number_match(target: str, prediction: str) -> bool:
    """ADAS's exact-string numeric match (ShengranHu/ADAS _mgsm/utils.py score_mgsm and
    _transfer_math/SVAMP_utils.py score_fn @d0acd49): strip trailing zeros after a ".", drop
    commas, compare strings. No extraction: "The answer is 42." or "$42" do not match "42"."""
    if "." in prediction:
        prediction = prediction.rstrip("0").rstrip(".")
    return target.replace(",", "") == prediction.replace(",", "")


def adas_target(answer) -> str:
    """ADAS's gold normalisation for float answers: `str(x).rstrip("0").rstrip(".")`
    (ShengranHu/ADAS _transfer_math/SVAMP_utils.py @d0acd49). Only applied where a "." is present."""
    s = str(answer)
    return s.rstrip("0").rstrip(".") if "." in s else s


_LAST_NUMBER = re.compile(r"[-+]?\d+(?:,\d{3})*(?:\.\d+)?|\d+\.\d+")


def last_number(text) -> float | None:
    """AFlow's GSM8K extraction: the last number in the text, commas removed
    (geekan/MetaGPT metagpt/ext/aflow/benchmark/gsm8k.py @27e942c extract_number)."""
    matches = _LAST_NUMBER.findall(str(text))
    if not matches:
        return None
    try:
        return float(matches[-1].replace(",", ""))
    except ValueError:
        return None


# ---------------------------------------------------------------- multiple choice

LETTERS = "ABCDEFGHIJ"


def format_choices(question: str, options: list[str], lead: str = "") -> str:
    """Question and lettered options, "(A) ..." one per line, as ADAS's multiple-choice tasks."""
    lines = [f"({LETTERS[i]}) {opt}" for i, opt in enumerate(options)]
    return f"{lead}{question}\n\nChoices:\n" + "\n".join(lines)


def adas_letter(prediction: str, num_options: int) -> int | None:
    """ADAS's letter extraction (ShengranHu/ADAS _gpqa/search.py and _mmlu/search.py @03dd85b):
    the prediction is exactly one option letter, else the first letter X (in A, B, C, ... order) with
    "X)" somewhere in it. Case-sensitive: "b" and "The answer is B" give no letter. Extended from
    A-D to as many letters as the question has options (MMLU-Pro has up to ten)."""
    letters = LETTERS[:num_options]
    if prediction in letters and len(prediction) == 1:
        return letters.index(prediction)
    for i, letter in enumerate(letters):
        if f"{letter})" in prediction:
            return i
    return None


# ---------------------------------------------------------------- code tasks

# What AFlow's code scorers put in the globals before running a program (geekan/MetaGPT
# metagpt/ext/aflow/benchmark/humaneval.py and mbpp.py @27e942c check_solution), as source.
CODE_PRELUDE = "import math\nimport hashlib\nimport re\nfrom typing import Any, Dict, List, Optional, Tuple\n\n"

_FENCED = (re.compile(r"```python\n(.*?)\n```", re.DOTALL), re.compile(r"```\n(.*?)\n```", re.DOTALL))


def extract_program(text: str, entry_point: str) -> str:
    """The program in a model's answer: the first ```python block (else ``` block) that defines the entry
    point, else the first such block, else the whole text (fannie1208/W4S src/agent/executor_agent.py
    @39b5c99 extract_code_block, which returns "" when no block defines the entry point)."""
    for fence in _FENCED:
        blocks = fence.findall(text)
        if blocks:
            return next((b for b in blocks if f"def {entry_point}" in b), blocks[0])
    return text


def _parse_quietly(code: str) -> ast.Module:
    # Model code often has invalid escapes ("\\d" in a plain string); their SyntaxWarnings are noise here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ast.parse(code)


def _parses(code: str) -> bool:
    try:
        _parse_quietly(code)
        return True
    except Exception:  # SyntaxError, ValueError (null bytes), RecursionError, MemoryError
        return False


def longest_parsable(text: str, max_lines: int = 400) -> str:
    """evalplus's code_extract as W4S and AFlow use it: the contiguous run of lines that parses and has
    the most non-blank lines (fannie1208/W4S src/utils/sanitize.py @6ebcbe5)."""
    if _parses(text):
        return text
    lines = text.split("\n")[:max_lines]
    nonblank = [0]
    for line in lines:
        nonblank.append(nonblank[-1] + bool(line.strip()))
    best, best_pair = 0, (0, 0)
    for i in range(len(lines)):
        for j in range(i + 1, len(lines)):
            count = nonblank[j + 1] - nonblank[i]
            # Skip spans that could not beat the best, before paying for a parse.
            if count > best and _parses("\n".join(lines[i:j + 1])):
                best, best_pair = count, (i, j)
    return "\n".join(lines[best_pair[0]:best_pair[1] + 1])


def _definition_name(node: ast.stmt) -> str | None:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return node.name
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.target.id
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
        # tree-sitter's first identifier child of the assignment: the target, else a bare-name value.
        if isinstance(node.targets[0], ast.Name):
            return node.targets[0].id
        if isinstance(node.value, ast.Name):
            return node.value.id
    return None


def _names_used(node: ast.AST) -> set[str]:
    names = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            names.add(sub.id)
        elif isinstance(sub, ast.Attribute):
            names.add(sub.attr)
    return names


def sanitize(code: str, entry_point: str | None = None) -> str:
    """evalplus's sanitize, which AFlow and W4S run on every program before testing it
    (fannie1208/W4S src/utils/sanitize.py @6ebcbe5; geekan/MetaGPT metagpt/actions/code_sanitize.py),
    written over `ast` instead of tree-sitter. Keeps top-level imports, then, in source order, the first
    class, function (only if it has a return statement) or assignment of each name, and with an entry
    point only those reachable from it by name. Everything else is dropped: top-level statements,
    decorated definitions, functions without `return`, later redefinitions.
    """
    code = longest_parsable(code)
    try:
        tree = _parse_quietly(code)
    except Exception:
        return code
    imports, definitions, seen = [], [], set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imports.append(node)
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.decorator_list:
            continue  # tree-sitter calls these decorated_definition, which evalplus does not keep
        is_def = isinstance(node, (ast.ClassDef, ast.Assign, ast.AnnAssign))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            is_def = any(isinstance(sub, ast.Return) for sub in ast.walk(node))
        if not is_def:
            continue
        name = _definition_name(node)
        if name in seen:
            continue
        seen.add(name)
        definitions.append((name, node))
    if entry_point:
        deps = {name: _names_used(node) for name, node in definitions}
        reachable, queue = {entry_point}, [entry_point]
        while queue:
            for dep in deps.get(queue.pop(0), ()):
                if dep not in reachable:
                    reachable.add(dep)
                    queue.append(dep)
        definitions = [(name, node) for name, node in definitions if name in reachable]
    parts = [ast.get_source_segment(code, node) for node in imports]
    parts += [ast.get_source_segment(code, node) for _, node in definitions]
    return "\n".join(p for p in parts if p is not None)


def public_test_source(asserts: list[str], entry_point: str) -> str | None:
    """Public test cases (assert lines calling `candidate`) as self-contained test source that raises
    on failure when appended after the program, in W4S's shape (fannie1208/W4S src/utils/helper.py
    @6ebcbe5 test_case_2_test_function). None when there are no cases."""
    if not asserts:
        return None
    body = "\n".join(f"    {line}" for line in asserts)
    return f"def check(candidate):\n{body}\n\n\ncheck({entry_point})\n"


def run_tests(program: str, test: str, timeout_s: float = 15.0, entry_point: str | None = None) -> float:
    """1.0 when the test source passes against the program, run in the sandbox (AFlow allows 15 s); the
    program's values reach the tests as plain data only (sandbox.check_program)."""
    from sandbox import check_program  # the repo's process sandbox; imported late to keep this module light

    return 1.0 if check_program(program, test, timeout_s, entry_point=entry_point).passed else 0.0

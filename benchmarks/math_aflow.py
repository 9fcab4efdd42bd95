"""MATH (competition mathematics), AFlow's level-5 subset, scored as AFlow does.

Source: math_aflow_validate.jsonl (119 rows) and math_aflow_test.jsonl (486 rows): AFlow's own split
of level-5 problems (keys problem, level, type, solution). Id: math/validate/<row> or math/test/<row>.
Score: AFlow's MATHBenchmark.calculate_score (geekan/MetaGPT metagpt/ext/aflow/benchmark/math.py
@27e942c; same code at FoundationAgents/MetaGPT @e10bd19): take the last \\boxed{...} (one level of
nested braces) or else the last sentence from both the gold solution and the prediction, then
math_equal: string equality, numbers within 1e-3, else sympy equality of the parsed expressions.
"""
from __future__ import annotations

import re
from math import isclose

from benchmarks.common import as_text, bounded, bounded_scorer, data_file, read_jsonl

NAME = "math"
KIND = "math"
FILES = ("math_aflow_validate.jsonl", "math_aflow_test.jsonl")
DESCRIPTION = r"""
MATH Benchmark (competition mathematics, level 5).
**Type**: Mathematical problem solving
**Answer Type**: The final answer must be written in LaTeX inside \boxed{}, e.g. \boxed{\frac{3}{4}}; it is compared with the reference answer exactly, as a number, or as a simplified expression.
**Description**: MATH holds problems from American high-school competitions (AMC 10, AMC 12, AIME) in algebra, counting and probability, geometry, intermediate algebra, number theory, prealgebra and precalculus. These are the hardest (level 5) problems and need several nontrivial steps.

Example Question:
How many positive divisors does 3600 have that are multiples of 12?

Example Answer: Since 3600 = 2^4 * 3^2 * 5^2 and 12 = 2^2 * 3, a multiple of 12 that divides 3600 is 12k with k dividing 2^2 * 3 * 5^2, which has 3 * 2 * 3 = 18 divisors. The answer is \boxed{18}.
""".strip()


def load(data_dir, verify=True) -> dict[str, list[dict]]:
    splits = {}
    for split, name in zip(("valid", "test"), FILES):
        rows = read_jsonl(data_file(data_dir, name, verify))
        tag = "validate" if split == "valid" else "test"
        splits[split] = [{"id": f"math/{tag}/{i}", "task": row["problem"], "answer": row["solution"],
                          "type": row["type"]} for i, row in enumerate(rows)]
    return splits


@bounded_scorer(linear=True)
def score(prediction, example) -> float:
    """1.0 when the boxed (else last-sentence) answers are equal as AFlow's math_equal decides.

    >>> score(r"so \\boxed{18}", {"answer": r"... The answer is $\\boxed{18}$."})
    1.0
    """
    expected = extract_answer(example["answer"])
    predicted = extract_answer(as_text(prediction))
    return 1.0 if math_equal(predicted, expected) else 0.0


_BOXED = re.compile(r"\\boxed{((?:[^{}]|{[^{}]*})*)}", re.DOTALL)
_SENTENCE_END = re.compile(r"(?<!\d)[.!?]\s+")


def extract_answer(text: str) -> str:
    """AFlow's extract_model_answer: the last \\boxed{...} holding at most one level of nested braces,
    else the last sentence. A deeper boxed answer such as \\boxed{\\frac{\\sqrt{3}}{2}} is not matched
    (quirk kept), so both sides fall back to their last sentence."""
    boxed = _BOXED.findall(text)
    if boxed:
        return boxed[-1].strip()
    sentences = [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]
    return sentences[-1] if sentences else ""


def math_equal(prediction: str, reference: str) -> bool:
    """AFlow's math_equal: same string; else both numbers (commas dropped, "%" means /100) within 1e-3;
    else sympy: simplify(a - b) == 0 or numeric values within 1e-3."""
    if str(prediction) == str(reference):
        return True
    a, b = _parse_number(prediction), _parse_number(reference)
    if a is not None and b is not None:
        return isclose(a, b, abs_tol=1e-3)
    return _symbolic_equal(prediction, reference)


def _parse_number(text) -> float | None:
    s = str(text).replace(",", "")
    try:
        return float(s)
    except ValueError:
        pass
    if s.endswith("%"):
        s = s[:-1]
        if s.endswith("\\"):
            s = s[:-1]
        try:
            return float(s) / 100
        except ValueError:
            pass
    return None


# AFlow tries sympy's parse_latex first, but its pinned environment (FoundationAgents/AFlow
# requirements.txt @2211969: sympy 1.14.0, no antlr4-python3-runtime) cannot load it, so parse_latex
# always fails there and only parse_expr runs. We skip parse_latex for the same result on any machine:
# "0.5" vs "\frac{1}{2}" is not equal (quirk kept).
#
# parse_expr evaluates its input with Python's eval. AFlow calls it on model output in-process; we only
# let through short strings made of digits, letters, operators and brackets, and resolve names against
# a small table of sympy objects (no builtins), so model output cannot reach eval, chr, open or imports.
_SAFE_EXPR = re.compile(r"[0-9A-Za-z\s+\-*/^().,!]{1,80}")
_BIG_LITERAL = re.compile(r"\d{4,}")


def _sympy_namespace() -> dict:
    import sympy

    names = ("sqrt", "pi", "E", "I", "oo", "exp", "log", "ln", "sin", "cos", "tan", "Abs", "factorial",
             "binomial", "Rational", "Integer", "Float", "Symbol", "Function")
    namespace = {name: getattr(sympy, name) for name in names}
    namespace.update({"__builtins__": {}, "max": sympy.Max, "min": sympy.Min, "abs": sympy.Abs})
    return namespace


def _parseable(text) -> bool:
    """Whether _parse would hand the text to sympy at all (a cheap check, no sympy)."""
    text = str(text)
    if not _SAFE_EXPR.fullmatch(text) or "__" in text:
        return False
    # Chained powers or factorials, or ones of long literals, take unbounded time: refuse, do not hang.
    num_heavy = text.count("**") + text.count("!")
    return not (num_heavy > 1 or (num_heavy == 1 and _BIG_LITERAL.search(text)))


def _parse(text: str):
    """A sympy expression, or None where AFlow's _parse would have returned the raw string."""
    text = str(text)
    if not _parseable(text):
        return None
    from sympy.parsing.sympy_parser import parse_expr

    try:
        return parse_expr(text, global_dict=_sympy_namespace())
    except Exception:
        return None


def _symbolic_equal(prediction: str, reference: str) -> bool:
    # sympy can be made to run for ever (factorial(factorial(30))): it runs in a limited process
    if not (_parseable(prediction) and _parseable(reference)):
        return False
    return bool(bounded(__name__, "_sympy_equal", [str(prediction), str(reference)], False))


def _sympy_equal(prediction: str, reference: str) -> bool:
    a, b = _parse(prediction), _parse(reference)
    # AFlow would go on with an unparsed string, where a - b and N(string) raise: not equal.
    if a is None or b is None:
        return False
    from sympy import N, simplify

    try:
        if simplify(a - b) == 0:
            return True
    except Exception:
        pass
    try:
        if isclose(N(a), N(b), abs_tol=1e-3):
            return True
    except Exception:
        pass
    return False

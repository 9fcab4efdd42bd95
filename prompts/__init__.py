"""Meta-agent prompts and the seed/baseline workflows (W4S, arXiv 2504.04785, Sec. 3 and App. prompts).

What is here:
- `SYSTEM_PROMPT`, `build_user_prompt`, `build_repair_prompt`, `format_feedback`: the text the weak
  meta-agent reads at each turn of the workflow-design MDP. Written in our own words after the
  structure of the official prompts (fannie1208/W4S, src/tasks/*/prompt.py, src/agent/meta_agent.py):
  interface, guiding principles, task description, archive, output format.
- `seed_workflows(kind)` and `baseline_workflows(kind)`: hand-written workflows, kept as plain files
  in `prompts/workflows/`. We return each file's source text, so the code the meta-agent sees in the
  archive is exactly the code that runs in the sandbox.

What is not here: extracting code from the meta-agent's reply, running workflows, scoring, choosing
failure cases (meta_agent.py, sandbox.py and benchmarks/ do that). Importing this package has no side
effects beyond defining strings and functions.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

WORKFLOW_DIR = Path(__file__).resolve().parent / "workflows"
KINDS = ("math", "multiple_choice", "drop", "code")

# ----------------------------------------------------------------------------------------------------
# System prompt

# The meta-agent's system prompt: its role (improve workflows from feedback) and how to work.
SYSTEM_PROMPT = """You design agentic workflows: short Python programs that orchestrate calls to a strong \
language model (and a code sandbox) to solve the problems of one benchmark. You know prompting \
techniques and agent architectures well.

You work in rounds. Each round you see the workflows tried so far and how they scored on a validation \
set, and you write one new workflow that should score higher. To do that well:
1. Study the evaluation feedback first: what worked, what failed, and why. Look closely at the failure \
cases and find the pattern behind them rather than the detail of one example.
2. Build on what scored well, and change direction when small edits stop helping. Borrow freely from \
LLM agent research and related fields.
3. Keep the workflow correct and runnable: a workflow that crashes scores nothing.

The final workflow is judged on held-out test problems you never see, so aim for methods that \
generalise, not for the validation examples shown to you."""

# ----------------------------------------------------------------------------------------------------
# User prompt: interface, principles, task, archive, output format

# The `agent` API as workflows see it (all kinds); the code-task method is appended for "code".
_AGENT_API = """- The `agent` object is the only way to reach the strong model and the tools. Its methods:
  + `agent.call_json_format_llm(messages, temperature=0.5, num_of_response=1, agent_role="task solver", \
return_dict_keys=("reasoning", "answer"), instructions="")`: asks the model for a JSON object and \
returns a list of `num_of_response` dicts, each holding the keys in `return_dict_keys` (a key the \
model leaves out comes back as the string "NO <key> IN DICTIONARY"; values may be numbers or lists, so \
convert them with `str(...)` before using them as text).
  + `agent.call_llm(messages, temperature=0.5, num_of_response=1, agent_role="task solver", \
instructions="", max_tokens=None)`: the same call returning a list of plain-text replies.
  + `agent.execute_code(code)`: runs Python source that defines a function `solution()` (no arguments) \
in a separate sandbox and returns the value `solution()` returns. It raises an exception carrying the \
error text when the code fails or runs too long."""

# Extra API line for code benchmarks.
_CODE_API = """
  + `agent.run_public_tests(program)`: runs a complete program against the public example tests of the \
current task and returns `{"passed": bool, "feedback": str}` (the feedback lists failing tests and \
errors). The score comes from hidden tests, so passing the public ones is necessary, not sufficient."""

# Workflow signature and return contract for text-answer kinds.
_INTERFACE_TEXT = """### Workflow interface
Write the function `solver(agent, task: str) -> dict`.
- Input: `task`, the full text of one problem exactly as the benchmark states it.
- Output: a dict with the final answer as a string under the key "answer", in the format the task \
description asks for. Other keys are ignored.
"""

# Workflow signature and return contract for code-generation kinds.
_INTERFACE_CODE = """### Workflow interface
Write the function `solver(agent, task: str, entry_point: str) -> dict`.
- Input: `task`, the problem statement exactly as the benchmark states it, and `entry_point`, the name of \
the function the hidden tests will call.
- Output: a dict with the complete Python program (source text, with its imports, defining \
`entry_point`) under the key "answer". Other keys are ignored.
"""

# How to write a good workflow: the official "guiding principles", restated.
_PRINCIPLES = """### Guiding principles
+ **Analyse before you change anything.** Start your reply with an analysis: what the latest feedback \
says, case studies of the failed validation examples, why they failed, and a concrete plan.
+ **Do not overfit.** The workflow is finally scored on a held-out test set. Never hard-code answers, \
keywords or special cases taken from the validation examples you are shown.
+ **Writing the solver:**
  + Keep the signature and the return format of `solver`; avoid changes that do not serve your plan.
  + In `messages`, use only the roles "user" and "assistant". Do not add a system message: the agent \
builds the system prompt from `agent_role` and `instructions`.
  + Give every call a fitting `agent_role` and precise `instructions`; when a key needs a format \
(a number, one letter, a list, a program), say so in the instructions.
  + For several samples of the same prompt, set `num_of_response` instead of looping: it is one call.
  + You may call the model many times and in several rounds, but every call costs time and money on \
every validation problem: stay within about 15 calls per problem.
  + The code block must be self-contained, since the whole block is run as is: define every import \
(standard library only), constant and helper function in it, preferably inside `solver`.
  + Code written by the model may fail: catching the error of `agent.execute_code` (or of parsing a \
model reply) and falling back to another method is good practice. Do not wrap your own logic in \
try/except to hide bugs.
  + If the score stops improving, try a different technique rather than rewording prompts.
+ **Techniques to explore and combine:**
  + Chain-of-Thought: ask for step-by-step `reasoning` before the `answer`.
  + Self-consistency: sample several solutions (raise `num_of_response`) and take a majority vote.
  + LLM debate: several solvers see each other's solutions and revise them over rounds; a judge decides.
  + Dynamic assignment of roles: pick expert roles suited to each problem and let them collaborate.
  + Task decomposition: split the problem into sub-questions, solve them, and combine the results.
  + Reflective evaluation: have a critic check a solution and point out its errors.
  + Iterative refinement: revise an answer with the critic's feedback until it holds up.
  + Code generation: let the model write a program for precise calculation or search and run it with \
`agent.execute_code`.{code_extra}
"""

# Extra technique for code benchmarks.
_CODE_TECHNIQUE = """
  + Test-driven repair: run a candidate program with `agent.run_public_tests` and repair it using the \
feedback; generate several candidates and keep one that passes."""

# Reply format the environment parses: analysis, then exactly one python block with `solver`.
_OUTPUT_FORMAT = """### Output format
Reply with:
1. Your analysis (plain text).
2. Exactly one Python code block with the complete new workflow, in this form:
```python
{signature}
    # Use the `agent` methods above. Put imports and helpers inside this function.
    ...
    return {{"answer": answer}}
```"""

_SIGNATURES = {
    "math": "def solver(agent, task: str):",
    "multiple_choice": "def solver(agent, task: str):",
    "drop": "def solver(agent, task: str):",
    "code": "def solver(agent, task: str, entry_point: str):",
}


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown benchmark kind {kind!r}; expected one of {KINDS}")


def _summary_line(feedback: str) -> str:
    """The first non-empty line of a feedback text: the score line that `format_feedback` writes first."""
    for line in str(feedback).splitlines():
        if line.strip():
            return _clip(line.strip(), 300)
    return "(no feedback)"


def _format_archive(archive: list[dict]) -> str:
    """Earlier workflows with code and score only; the most recent one with its full feedback.

    This follows the official get_prompt, which drops the feedback of all but the last archive entry
    to keep the prompt short; we keep the first line of each older feedback (the accuracy and its
    change), which is what the official code shows as "score".
    """
    if not archive:
        return "(no workflows yet)"
    parts = []
    for i, item in enumerate(archive, 1):
        latest = i == len(archive)
        header = f"#### Workflow {i}: {item.get('name', 'unnamed')}" + (" (most recent)" if latest else "")
        code = str(item.get("code", "")).strip()
        if latest:
            feedback = f"Evaluation feedback:\n{str(item.get('feedback', '')).strip() or '(no feedback)'}"
        else:
            feedback = f"Evaluation (summary): {_summary_line(item.get('feedback', ''))}"
        parts.append(f"{header}\n```python\n{code}\n```\n{feedback}")
    return "\n\n".join(parts)


def build_user_prompt(description: str, archive: list[dict], kind: str) -> str:
    """The meta-agent's user message for one turn.

    Args:
        description: the benchmark's task description (benchmarks' `b.description`).
        archive: earlier workflows, oldest first, each {"name", "code", "feedback"}; the last one is
            shown with its full feedback, the others with code and the first feedback line only.
        kind: "math", "multiple_choice", "drop" or "code"; picks the solver signature and the API shown.
    """
    _check_kind(kind)
    code_kind = kind == "code"
    interface = (_INTERFACE_CODE if code_kind else _INTERFACE_TEXT) + _AGENT_API + (_CODE_API if code_kind else "")
    principles = _PRINCIPLES.format(code_extra=_CODE_TECHNIQUE if code_kind else "")
    return "\n\n".join([
        interface.strip(),
        principles.strip(),
        "### Task description\nThe workflow you design must solve this task:\n\n" + description.strip(),
        "### Earlier workflows\nThe workflows tried so far, oldest first, with their evaluation on the "
        "validation set. The most recent one is shown with its full feedback: accuracy, change from the "
        "previous round and a few failed validation examples.\n\n" + _format_archive(archive),
        _OUTPUT_FORMAT.format(signature=_SIGNATURES[kind]),
    ])


# ----------------------------------------------------------------------------------------------------
# Repair prompt

# Frames of the workflow's own code: names like "<string>" or "<solver>" from exec/compile.
_FRAME_RE = re.compile(r'File "([^"]+)", line (\d+)')


def _failing_line(code: str, traceback: str) -> tuple[int, str] | None:
    """(line number, source line) in `code` where the traceback's innermost workflow frame points."""
    lines = code.splitlines()
    tb_lines = traceback.splitlines()
    found = None
    for i, tb_line in enumerate(tb_lines):
        m = _FRAME_RE.search(tb_line)
        if not m:
            continue
        filename, lineno = m.group(1), int(m.group(2))
        if not 1 <= lineno <= len(lines):
            continue
        # A synthetic filename is the workflow's code; a real file counts only if the quoted source matches.
        quoted = tb_lines[i + 1].strip() if i + 1 < len(tb_lines) else ""
        if filename.startswith("<") or (quoted and quoted == lines[lineno - 1].strip()):
            found = (lineno, lines[lineno - 1])
    if found is None:
        # SyntaxError tracebacks carry `line N` without a frame line.
        m = re.search(r"line (\d+)", traceback)
        if m and 1 <= int(m.group(1)) <= len(lines):
            found = (int(m.group(1)), lines[int(m.group(1)) - 1])
    return found


def build_repair_prompt(code: str, error: str, traceback: str) -> str:
    """Ask the meta-agent to fix a workflow that failed its self-check (shows traceback and failing line)."""
    located = _failing_line(code, traceback or "")
    where = (f"The error was raised at line {located[0]} of your code:\n    {located[1].strip()}\n"
             if located else "")
    return f"""Your workflow failed when it was run on one validation problem.

Your code:
```python
{code.strip()}
```

Error: {_clip(str(error).strip(), 1000)}

Traceback:
```
{_clip((traceback or "(none)").strip(), 3000)}
```
{where}
Fix the root cause of this error:
1. Explain in a few sentences what went wrong and what you will change.
2. Do not wrap the failing logic in try/except (or otherwise swallow the error) to hide it; make the \
code correct instead.
3. Keep the signature of `solver` and its return format unchanged.

Then give the complete fixed workflow in exactly one Python code block:
```python
def solver(...):
    ...
```"""


# ----------------------------------------------------------------------------------------------------
# Feedback

# Per-case limits, in characters: DROP passages and generated programs can be long.
_TASK_CHARS, _PREDICTION_CHARS, _ANSWER_CHARS, _ERROR_CHARS = 1500, 600, 600, 800


def _clip(text: str, max_chars: int) -> str:
    """Shorten to about max_chars, keeping the head and the tail (questions often come last)."""
    text = str(text)
    if len(text) <= max_chars:
        return text
    head, tail = (2 * max_chars) // 3, max_chars // 3
    return f"{text[:head]} [... {len(text) - head - tail} characters cut ...] {text[-tail:]}"


def format_feedback(valid_acc: float, prev_acc: float | None, failures: list[dict]) -> str:
    """Evaluation feedback for one workflow: accuracy, its change from the previous turn, failure cases.

    The first line is the score summary (the archive shows only that line for older workflows).

    Args:
        valid_acc: validation accuracy in [0, 1].
        prev_acc: the previous turn's accuracy in [0, 1], or None on the first evaluation.
        failures: cases already chosen by the environment, each {"task", "prediction", "answer"} or
            {"task", "error"} (a "prediction" may come with the error).
    """
    line = f"Validation accuracy: {100 * valid_acc:.1f}%"
    if prev_acc is None:
        line += " (no previous workflow to compare with)"
    else:
        delta = 100 * (valid_acc - prev_acc)
        trend = "improved" if delta > 0 else "worse" if delta < 0 else "unchanged"
        line += f" (previous: {100 * prev_acc:.1f}%, change: {delta:+.1f} points, {trend})"
    if not failures:
        return line + "\nNo failed validation examples to show."
    cases = []
    for i, case in enumerate(failures, 1):
        rows = [f"Failure {i}:", f"Task: {_clip(case.get('task', ''), _TASK_CHARS)}"]
        if case.get("prediction") is not None or not case.get("error"):
            prediction = case.get("prediction")
            rows.append(f"Workflow answer: {'(none)' if prediction is None else _clip(prediction, _PREDICTION_CHARS)}")
        if case.get("error"):
            rows.append(f"Error: {_clip(case['error'], _ERROR_CHARS)}")
        if case.get("answer") is not None:
            rows.append(f"Correct answer: {_clip(case['answer'], _ANSWER_CHARS)}")
        cases.append("\n".join(rows))
    header = f"{len(failures)} failed validation example(s), chosen at random:"
    return "\n".join([line, header, ""]) + "\n\n".join(cases)


# ----------------------------------------------------------------------------------------------------
# Seed and baseline workflows

# What the kind-generic workflows (vanilla, self_refine, llm_debate) are told about each kind. Their
# files hold the math values; `_specialise` rewrites these module-level lines for the other kinds.
KIND_SETTINGS = {
    "math": {
        "ROLE": "math expert",
        "ANSWER_RULE": "The answer must be the final result only: a number (or a simplified expression if "
                       "the problem asks for one), with no units and no words.",
        "ANSWER_PATTERN": None,
    },
    "multiple_choice": {
        "ROLE": "expert in the subject of the question",
        "ANSWER_RULE": "The answer must be the letter of the correct option only, for example: B",
        "ANSWER_PATTERN": r"\b([A-Z])\b",
    },
    "drop": {
        "ROLE": "reading comprehension expert",
        "ANSWER_RULE": "The answer must be as short as possible: a number, a date, or the exact words of the "
                       "passage that answer the question (several items separated by commas), not a sentence.",
        "ANSWER_PATTERN": None,
    },
}

# Seed workflows per kind: (name shown in the archive, file in prompts/workflows/).
_SEEDS = {
    "math": [("Chain-of-Thought", "math_cot.py"),
             ("Chain-of-Thought with Self-Consistency", "math_cot_sc.py"),
             ("Code Generation", "math_code.py")],
    "multiple_choice": [("Chain-of-Thought", "mc_cot.py"),
                        ("Chain-of-Thought with Self-Consistency", "mc_cot_sc.py"),
                        ("Self-Refine", "self_refine.py")],
    "drop": [("Chain-of-Thought", "drop_cot.py"),
             ("Chain-of-Thought with Self-Consistency", "drop_cot_sc.py"),
             ("Self-Refine", "self_refine.py")],
    "code": [("Chain-of-Thought Code Generation", "code_generate.py"),
             ("Code Generation with Self-Consistency", "code_cot_sc.py"),
             ("Generate and Test", "code_generate_and_test.py")],
}

# Baselines per kind (issue 8): name -> file; cot and cot_sc reuse the seed files.
_BASELINES = {
    "math": {"vanilla": "vanilla.py", "cot": "math_cot.py", "cot_sc": "math_cot_sc.py",
             "self_refine": "self_refine.py", "llm_debate": "llm_debate.py"},
    "multiple_choice": {"vanilla": "vanilla.py", "cot": "mc_cot.py", "cot_sc": "mc_cot_sc.py",
                        "self_refine": "self_refine.py", "llm_debate": "llm_debate.py"},
    "drop": {"vanilla": "vanilla.py", "cot": "drop_cot.py", "cot_sc": "drop_cot_sc.py",
             "self_refine": "self_refine.py", "llm_debate": "llm_debate.py"},
    "code": {"vanilla": "code_vanilla.py", "cot": "code_generate.py", "cot_sc": "code_cot_sc.py",
             "self_refine": "code_self_refine.py", "llm_debate": "code_llm_debate.py"},
}


def _specialise(source: str, kind: str) -> str:
    """Set the kind's ROLE / ANSWER_RULE / ANSWER_PATTERN lines in a kind-generic workflow's source."""
    for name, value in KIND_SETTINGS[kind].items():
        pattern = re.compile(rf"^{name} = .*$", re.MULTILINE)
        if len(pattern.findall(source)) != 1:
            raise ValueError(f"workflow source must set {name} on exactly one line")
        # Double-quoted literal (json.dumps of a str is a valid Python literal), matching the files' style.
        literal = "None" if value is None else json.dumps(value)
        source = pattern.sub(lambda _m, n=name, lit=literal: f"{n} = {lit}", source)
    return source


def _workflow_source(filename: str, kind: str) -> str:
    """A workflow file's source text, specialised to `kind` when the file is kind-generic."""
    source = (WORKFLOW_DIR / filename).read_text()
    if kind != "code" and re.search(r"^ANSWER_RULE = ", source, re.MULTILINE):
        source = _specialise(source, kind)
    return source


def seed_workflows(kind: str) -> list[tuple[str, str]]:
    """The seed workflows the environment evaluates at reset: [(name, source code), ...]."""
    _check_kind(kind)
    return [(name, _workflow_source(f, kind)) for name, f in _SEEDS[kind]]


def baseline_workflows(kind: str) -> dict[str, str]:
    """Baselines for evaluate.py: {"vanilla", "cot", "cot_sc", "self_refine", "llm_debate"} -> source."""
    _check_kind(kind)
    return {name: _workflow_source(f, kind) for name, f in _BASELINES[kind].items()}


__all__ = ["SYSTEM_PROMPT", "KINDS", "KIND_SETTINGS", "WORKFLOW_DIR", "build_user_prompt", "build_repair_prompt",
           "format_feedback", "seed_workflows", "baseline_workflows"]

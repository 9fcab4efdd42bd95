"""The weak side of W4S: the meta-agent policy and the workflow-design MDP (paper, Sections 3-4).

State   the meta-agent's chat messages: system prompt + one user prompt holding the task description
        and the archive of earlier workflows with their validation feedback.
Action  the meta-agent's reply: an analysis, then one ```python block defining `solver`.
Step    extract the code; self-check it on one validation sample; on an error show the traceback and
        ask the policy for a fix, up to 3 repairs, each checked again; score a working candidate on the
        whole validation split in the sandbox; build feedback and a reward.
Reward  1 if validation accuracy beats the best so far in this trajectory, 0.5 if it beats the previous
        turn, else 0 (optionally -0.1 below 30% accuracy, as the official code).

What it does not do: it never sees a test split. `WorkflowEnv` is built from the validation examples
alone, and nothing here reads a test split. The stage scripts (collect.py, evaluate.py) are thin
loops over `WorkflowEnv` and `run_episode`.

Differences from the official code, on purpose:
1. No test accuracy is shown to the meta-agent and the final workflow is chosen on validation alone.
2. Failure cases in the feedback come from a generator seeded by (seed, episode, turn, candidate), so a
   rerun gives the same text.
3. All 3 repairs are evaluated; a turn whose candidates all fail leaves the state as it was (no recursion).

Run one optimisation by hand:
    python meta_agent.py --benchmark gsm8k --meta-model gpt-4o --executor-model gpt-4o-mini --turns 10
    python meta_agent.py --benchmark gsm8k --turns 2 --num-candidates 2 --limit 16   # embedded default, no key
"""
from __future__ import annotations

import ast
import json
import os
import random
import re
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, SupportsInt

from tqdm import tqdm

import prompts
import sandbox
from executor import (EMBEDDED, LLM, Agent, BudgetExceeded, CacheError, Ledger, LLMError, ResponseCache, Usage,
                      parse_args, read_jsonl, redact_url)

FAILURE_REASONS = ("no_code_block", "syntax_error", "no_solver", "runtime_error", "timeout", "bad_return",
                   "bad_request", "protocol_error", "zero_accuracy")
# Fences count only at the start of a line (Markdown allows 3 spaces): a workflow may hold "```" in a string.
_OPEN_FENCE = re.compile(r"^ {0,3}```[ \t]*(?:python3?|py)?[ \t]*\r?\n", re.MULTILINE | re.IGNORECASE)
_CLOSE_FENCE = re.compile(r"^ {0,3}```[ \t]*\r?$", re.MULTILINE)
USAGE_KEYS = ("calls", "prompt_tokens", "completion_tokens", "cost_usd")
DEFAULT_STATE_MAX_TOKENS = 6144  # state + a ~2k-token action fit --max-len 8192 and a 32k context


# ----------------------------------------------------------------------------------------------------
# The policy: any executor.LLM (an OpenAI-compatible endpoint, a checkpoint folder, the embedded model)

@dataclass
class Policy:
    """The meta-agent: an LLM plus the sampling parameters used everywhere (paper defaults)."""
    llm: LLM
    temperature: float = 0.5
    top_p: float = 1.0
    max_new_tokens: int = 4096

    def sample(self, messages: list[dict], n: int, seed: int, usage: Usage | None = None) -> list[str]:
        """n actions for one state; `seed` makes a later identical state draw fresh samples. `usage`
        (optional) adds up what these calls cost, so a turn can record its own meta-agent spend."""
        return self.llm._chat(messages, temperature=self.temperature, top_p=self.top_p, n=n,
                              max_tokens=self.max_new_tokens, seed=seed, tag="meta",
                              on_record=None if usage is None else usage.add)


# ----------------------------------------------------------------------------------------------------
# Pure pieces: code extraction, rewards, seeds

def _code_blocks(text: str) -> list[str]:
    """Fenced code blocks, fences at line starts only. A block ends at the first closing fence after which
    its text parses as Python (a fence inside a string literal does not end it), else at the first one."""
    blocks, pos = [], 0
    while (start := _OPEN_FENCE.search(text, pos)) is not None:
        ends = list(_CLOSE_FENCE.finditer(text, start.end()))
        if not ends:
            blocks.append(text[start.end():])
            break
        end = next((e for e in ends if _parses(text[start.end():e.start()])), ends[0])
        blocks.append(text[start.end():end.start()])
        pos = end.end()
    return blocks


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
        return True
    except (SyntaxError, ValueError):
        return False


def extract_solver_code(action: str) -> str | None:
    """The last ```python block of `action` that defines `solver`, else the last block, else None; the
    block's text exactly (a workflow resubmitted unchanged extracts to itself, byte for byte)."""
    blocks = [b for b in _code_blocks(action) if b.strip()]
    with_solver = [b for b in blocks if "def solver" in b]
    chosen = (with_solver or blocks or [None])[-1]
    if chosen is None:
        return None
    chosen = chosen.lstrip("\n").rstrip()
    return chosen + "\n"


def static_check(code: str) -> tuple[str, str] | None:
    """(reason, error) when `code` cannot be a workflow without running it, else None."""
    try:
        tree = ast.parse(code)
    except SyntaxError as e:
        return "syntax_error", f"SyntaxError: {e.msg} (line {e.lineno}): {(e.text or '').strip()}"
    if not any(isinstance(n, ast.FunctionDef) and n.name == "solver" for n in tree.body):
        return "no_solver", "The code does not define a top-level function `solver`."
    return None


def compute_reward(acc: float, best_so_far: float, prev_acc: float, low_acc_penalty: bool) -> float:
    """1 if acc beats the best so far, 0.5 if it beats the previous turn, else 0; -0.1 below 0.3 if asked."""
    reward = 1.0 if acc > best_so_far else 0.5 if acc > prev_acc else 0.0
    if low_acc_penalty and acc < 0.3:
        reward -= 0.1
    return reward


def derive_seed(*parts: Any) -> int:
    """A stable 31-bit seed from (seed, episode, turn, ...); independent of PYTHONHASHSEED."""
    return random.Random("-".join(map(str, parts))).getrandbits(31)


def solver_inputs(example: dict) -> dict:
    """What a workflow may see of an example: the task (and the entry point and public tests of code)."""
    return {k: example[k] for k in ("task", "entry_point", "public_tests") if k in example}


# ----------------------------------------------------------------------------------------------------
# The environment

@dataclass
class Candidate:
    """One action and what became of it; a dict of it is one entry of a trajectory's `candidates`."""
    action: str
    code: str | None = None
    status: str = "failed"            # "ok" | "failed"
    reason: str | None = None         # one of FAILURE_REASONS when failed
    error: str | None = None
    repairs: int = 0
    attempts: list[str] = field(default_factory=list)  # every action text tried, the first one included
    messages: list[dict] = field(default_factory=list)  # the exact chat that produced the final `action`
    valid_acc: float | None = None
    reward: float = 0.0
    feedback: str = ""
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


def _account(cand: Candidate, runs: list[sandbox.WorkflowRun | None]) -> Candidate:
    """Sum the executor calls, tokens and dollars of every run made for this candidate."""
    samples = [s for r in runs if r is not None for s in r.samples]
    cand.calls = sum(s.calls for s in samples)
    cand.prompt_tokens = sum(s.prompt_tokens for s in samples)
    cand.completion_tokens = sum(s.completion_tokens for s in samples)
    cand.cost_usd = sum(s.cost_usd for s in samples)
    return cand


# ----------------------------------------------------------------------------------------------------
# Scoring: the one function that turns a workflow and examples into a score (WorkflowEnv, evaluate.py)

@dataclass
class Scored:
    """A workflow scored on a list of examples: per-example scores, what the executor spent, the run."""
    accuracy: float
    scores: list[float]
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    failures: dict[str, int]
    wall_s: float
    run: sandbox.WorkflowRun


def score_workflow(code: str, examples: list[dict], score: Callable[[Any, dict], float], agent: Agent, *,
                   sample_timeout_s: float = 300.0, max_concurrency: int = 32) -> Scored:
    """Run `code` on `examples` in the sandbox (it sees only solver_inputs) and score every sample.

    A spent budget (BudgetExceeded) or an endpoint failure is raised, never turned into a score: a sample
    with a call that failed for an endpoint reason (after the client's retries) runs once more, and if
    it fails so again the run raises LLMError (rerun the stage: the cache answers the calls already
    made). A sample that failed for its own reasons scores 0 (a bad request, the caller's fault, is one)."""
    t0 = time.time()
    run = sandbox.run_workflow(code, [solver_inputs(e) for e in examples], agent,
                               sample_timeout_s=sample_timeout_s, max_concurrency=max_concurrency)
    spent = list(run.samples)  # every attempt's usage counts
    again = [i for i, s in enumerate(run.samples) if s.failed_calls]
    if again:  # a transient endpoint failure (a dropped connection on a long run): those samples once more
        rerun = sandbox.run_workflow(code, [solver_inputs(examples[i]) for i in again], agent,
                                     sample_timeout_s=sample_timeout_s, max_concurrency=max_concurrency)
        for i, s in zip(again, rerun.samples):
            run.samples[i] = s
        spent += rerun.samples
    if agent.llm.ledger is not None:
        agent.llm.ledger.check_budget()
    calls, failed = sum(s.calls for s in spent), sum(s.failed_calls for s in run.samples)
    if failed:
        first = next((s.error for s in run.samples if s.failed_calls and s.error), "")
        raise LLMError(f"{failed} executor calls of this workflow run failed for an endpoint reason twice "
                       f"(5xx/429 after retries, timeout, connection); no score is recorded. {first[-300:]}")
    # no answer is never right: str(None) == "None" would match GSM-Plus's 107 "None" test golds (W4S's scorer does)
    scores = [0.0 if s.error is not None or s.answer is None else float(score(s.answer, e))
              for s, e in zip(run.samples, examples)]
    failures = Counter(_sample_reason(s, run) for s in run.samples if s.error is not None)
    return Scored(accuracy=sum(scores) / len(scores) if scores else 0.0, scores=scores, calls=calls,
                  prompt_tokens=sum(s.prompt_tokens for s in spent),
                  completion_tokens=sum(s.completion_tokens for s in spent),
                  cost_usd=sum(s.cost_usd for s in spent), failures=dict(failures),
                  wall_s=time.time() - t0, run=run)


def _sample_reason(sample: sandbox.SampleResult, run: sandbox.WorkflowRun) -> str:
    """One of FAILURE_REASONS for a failed sample; a request the endpoint rejected is `bad_request`."""
    if getattr(sample, "bad_requests", 0):
        return "bad_request"
    reason = sample.reason or run.reason
    return reason if reason in FAILURE_REASONS else "runtime_error"


@dataclass
class ArchiveEntry:
    name: str
    code: str
    valid_acc: float
    feedback: str


class WorkflowEnv:
    """The workflow-design MDP on one benchmark's validation examples (never its test split)."""

    def __init__(self, *, description: str, kind: str, valid_examples: list[dict],
                 score: Callable[[Any, dict], float], agent: Agent, seed: int = 0, episode: int = 0,
                 history_window: int = 0, state_max_tokens: int = DEFAULT_STATE_MAX_TOKENS,
                 num_failure_cases: int = 3, low_acc_penalty: bool = False, max_repairs: int = 3,
                 sample_timeout_s: float = 300.0, max_concurrency: "int | SupportsInt" = 32, progress: bool = True):
        """max_concurrency: samples run at once, read as int() at each run (evaluate passes a share that
        follows how many jobs run side by side)."""
        if not valid_examples:
            raise ValueError("WorkflowEnv needs at least one validation example")
        self.description, self.kind, self.score = description, kind, score
        self.valid, self.agent = valid_examples, agent
        self.seed, self.episode = seed, episode
        self.history_window = history_window  # 0: every advanced workflow; k: seeds + the k latest
        self.state_max_tokens = state_max_tokens  # older advanced workflows leave the state past this
        self.num_failure_cases, self.low_acc_penalty = num_failure_cases, low_acc_penalty
        self.max_repairs, self.sample_timeout_s = max_repairs, sample_timeout_s
        self.max_concurrency, self.progress = max_concurrency, progress
        self.seeds: list[ArchiveEntry] = []
        self.history: list[ArchiveEntry] = []   # workflows that advanced the state, oldest first
        self.best_acc = 0.0
        self.prev_acc = 0.0

    # --- running and scoring workflows -----------------------------------------------------------

    def _run(self, code: str, examples: list[dict]) -> Scored:
        return score_workflow(code, examples, self.score, self.agent, sample_timeout_s=self.sample_timeout_s,
                              max_concurrency=self.max_concurrency)

    def _self_check(self, code: str) -> tuple[tuple[str, str] | None, sandbox.WorkflowRun | None]:
        """((reason, error text with traceback) or None when it works, the run) for one validation sample."""
        bad = static_check(code)
        if bad:
            return bad, None
        run = self._run(code, self.valid[:1]).run
        if run.reason is not None:
            reason = run.reason if run.reason in FAILURE_REASONS else "runtime_error"
            return (reason, f"{run.reason}: {run.error or ''}"), run
        sample = run.samples[0]
        if sample.error is not None:
            return (_sample_reason(sample, run), sample.traceback or sample.error), run
        return None, run

    def _feedback(self, acc: float, prev_acc: float | None, run: sandbox.WorkflowRun, scores: list[float],
                  rng: random.Random) -> str:
        failed = [i for i, s in enumerate(scores) if s < 1.0]
        cases = []
        for i in sorted(rng.sample(failed, min(self.num_failure_cases, len(failed)))):
            sample, ex = run.samples[i], self.valid[i]
            case = {"task": ex["task"], "prediction": sample.answer}
            if sample.error is not None:
                case["error"] = sample.error
            if self.kind != "code":
                case["answer"] = ex["answer"]
            cases.append(case)
        return prompts.format_feedback(acc, prev_acc, cases)

    # --- the MDP ------------------------------------------------------------------------------------

    def reset(self) -> list[dict]:
        """Evaluate the seed workflows on validation and return the initial state."""
        self.seeds, self.history, self.seed_usage = [], [], Counter()
        for name, code in prompts.seed_workflows(self.kind):
            s = self._run(code, self.valid)
            self.seed_usage.update({k: getattr(s, k) for k in USAGE_KEYS})
            rng = random.Random(derive_seed(self.seed, self.episode, "seed", name))
            self.seeds.append(ArchiveEntry(name, code, s.accuracy, self._feedback(s.accuracy, None, s.run,
                                                                                  s.scores, rng)))
        self.best_acc = max(e.valid_acc for e in self.seeds)
        self.prev_acc = self.seeds[-1].valid_acc
        return self.state()

    def restore(self, record: dict) -> list[dict]:
        """Start from the seeds as a recorded turn holds them: a resumed episode goes on from the scores
        its recorded turns were rewarded against, not from a second scoring (with another cache,
        --no-cache or another endpoint it could differ), and pays nothing for them again."""
        self.seeds, self.history = [ArchiveEntry(**e) for e in record["seeds"]], []
        self.seed_usage = Counter(record.get("seed_usage", {}))
        self.best_acc = max(e.valid_acc for e in self.seeds)
        self.prev_acc = self.seeds[-1].valid_acc
        return self.state()

    def archive(self) -> list[ArchiveEntry]:
        """Seeds + advanced workflows shown in the state: the newest that fit --history-window and
        state_max_tokens, the oldest non-seed ones dropped first (they stay in `history` and the records).
        The newest one always stays, past the budget if it must: rewards are measured against it."""
        recent = self.history[-self.history_window:] if self.history_window else list(self.history)
        while len(recent) > 1 and self.state_tokens(self._messages(self.seeds + recent)) > self.state_max_tokens:
            recent.pop(0)
        return self.seeds + recent

    def state(self) -> list[dict]:
        return self._messages(self.archive())

    def _messages(self, entries: list[ArchiveEntry]) -> list[dict]:
        archive = [{"name": e.name, "code": e.code, "feedback": e.feedback} for e in entries]
        return [{"role": "system", "content": prompts.SYSTEM_PROMPT},
                {"role": "user", "content": prompts.build_user_prompt(self.description, archive, self.kind)}]

    @staticmethod
    def state_tokens(messages: list[dict]) -> int:
        """A conservative token count without the meta-agent's tokenizer: 1 token per 3 characters (code
        and English run 3.5-4.5 characters a token on Qwen2.5 and SmolLM2), plus 8 per message."""
        return sum(len(m["content"]) // 3 + 8 for m in messages)

    def evaluate(self, action: str, repair: Callable[[list[dict]], str], turn: int, index: int) -> Candidate:
        """Check, repair (up to max_repairs, each checked) and score one action. Rewards come later."""
        state, runs = self.state(), []
        cand = Candidate(action=action, attempts=[action], messages=state)
        for attempt in range(self.max_repairs + 1):
            code = extract_solver_code(cand.action)
            if code is None:
                failure, run = ("no_code_block", "Your reply has no ```python block defining `solver`."), None
            else:
                failure, run = self._self_check(code)
            cand.code = code
            runs.append(run)
            if failure is None:
                break
            cand.reason, cand.error = failure
            if attempt == self.max_repairs:
                return _account(cand, runs)
            fix_request = prompts.build_repair_prompt(code or "", failure[1].strip().splitlines()[-1], failure[1])
            # The final action is trained against exactly this chat (the failed attempt and its traceback).
            cand.messages = state + [{"role": "assistant", "content": cand.action},
                                     {"role": "user", "content": fix_request}]
            cand.action = repair(cand.messages)
            cand.attempts.append(cand.action)
            cand.repairs += 1
        s = self._run(cand.code, self.valid)
        runs.append(s.run)
        rng = random.Random(derive_seed(self.seed, self.episode, turn, index))
        cand.valid_acc, cand.feedback = s.accuracy, self._feedback(s.accuracy, self.prev_acc, s.run, s.scores, rng)
        if s.accuracy > 0:
            cand.status, cand.reason, cand.error = "ok", None, None
        elif s.failures.get("bad_request"):
            bad = next(x for x in s.run.samples if _sample_reason(x, s.run) == "bad_request")
            cand.reason, cand.error = "bad_request", (bad.error or "")[-2000:]
        else:
            cand.reason, cand.error = "zero_accuracy", "0 correct on validation"
        return _account(cand, runs)

    def reward_and_advance(self, candidates: list[Candidate], turn: int) -> int | None:
        """Reward every candidate against the same references, then advance with the best ok one."""
        for c in candidates:
            c.reward = compute_reward(c.valid_acc, self.best_acc, self.prev_acc, self.low_acc_penalty) \
                if c.valid_acc is not None else 0.0
        ok = [i for i, c in enumerate(candidates) if c.status == "ok"]
        if not ok:
            return None  # nothing worked: state, best and previous accuracy stay; the next turn samples again
        best = max(ok, key=lambda i: (candidates[i].valid_acc, -i))
        self.advance(ArchiveEntry(f"turn {turn}", candidates[best].code, candidates[best].valid_acc,
                                  candidates[best].feedback))
        return best

    def advance(self, entry: ArchiveEntry) -> None:
        self.history.append(entry)
        self.best_acc = max(self.best_acc, entry.valid_acc)
        self.prev_acc = entry.valid_acc

    def replay(self, record: dict) -> None:
        """Apply a recorded turn (a trajectories.jsonl line) so a resumed episode has the same state."""
        if record["best"] is not None:
            c = record["candidates"][record["best"]]
            self.advance(ArchiveEntry(f"turn {record['turn']}", c["code"], c["valid_acc"], c["feedback"]))


# ----------------------------------------------------------------------------------------------------
# Rollout: m candidates per turn, all evaluated, the best advances, every one kept

@dataclass
class EpisodeResult:
    best_code: str
    best_acc: float
    best_name: str
    records: list[dict]


def run_turn(env: WorkflowEnv, policy: Policy, *, turn: int, num_candidates: int,
             max_parallel_candidates: int = 4) -> tuple[list[dict], list[Candidate], int | None, dict]:
    """Sample m actions for the current state, evaluate all of them, reward them and advance.
    Returns (state, candidates, index of the advanced candidate or None, the turn's meta-agent usage)."""
    state, usage, lock = env.state(), Usage(), threading.Lock()

    def sample(messages: list[dict], n: int, seed: int) -> list[str]:
        mine = Usage()
        try:
            return policy.sample(messages, n, seed=seed, usage=mine)
        finally:
            with lock:
                for k in USAGE_KEYS:
                    setattr(usage, k, getattr(usage, k) + getattr(mine, k))

    actions = sample(state, num_candidates, derive_seed(env.seed, env.episode, turn))

    def evaluate(i: int) -> Candidate:
        repair_seeds = iter(range(1, env.max_repairs + 1))
        repair = lambda msgs: sample(msgs, 1, derive_seed(env.seed, env.episode, turn, i, next(repair_seeds)))[0]
        return env.evaluate(actions[i], repair, turn, i)

    pool = ThreadPoolExecutor(max_workers=max(1, min(max_parallel_candidates, num_candidates)))
    try:
        candidates = list(pool.map(evaluate, range(len(actions))))
    finally:  # on Ctrl-C, do not wait for candidates still scoring (the stage exits with exit_now)
        pool.shutdown(wait=False, cancel_futures=True)
    best = env.reward_and_advance(candidates, turn)
    meta_usage = {k: getattr(usage, k) for k in USAGE_KEYS}
    return state, candidates, best, meta_usage


def turn_record(*, run: str, benchmark: str, episode: int, turn: int, seed: int, meta_model: str,
                executor_model: str, state: list[dict], candidates: list[Candidate], best: int | None,
                meta_usage: dict | None = None, seeds: list[ArchiveEntry] = (),
                seed_usage: dict | None = None) -> dict:
    """One trajectories.jsonl line (format in the README); each candidate's `messages` is the exact chat
    that produced its final action, `meta_usage` what the turn's meta-agent calls used, `seeds` the seed
    workflows with the scores and feedback the episode started from (a resume restores them) and
    `seed_usage` what scoring them spent (counted once per episode, at turn 0)."""
    return {"run": run, "benchmark": benchmark, "episode": episode, "turn": turn, "seed": seed,
            "meta_model": meta_model, "executor_model": executor_model, "state": state,
            "candidates": [asdict(c) for c in candidates], "best": best, "meta_usage": meta_usage or {},
            "seeds": [asdict(e) for e in seeds], "seed_usage": dict(seed_usage or {})}


def record_usage(records: list[dict]) -> dict:
    """Executor and meta-agent calls, tokens and recorded dollars of finished turns (for resumed runs)."""
    total = Counter()
    for r in records:
        if r["turn"] == 0:  # the seeds are scored once per episode
            total.update({k: v for k, v in r.get("seed_usage", {}).items() if k != "cost_usd"})
        for c in r["candidates"]:
            for k in ("calls", "prompt_tokens", "completion_tokens"):
                total[k] += c.get(k, 0)
        for k in ("calls", "prompt_tokens", "completion_tokens"):
            total[f"meta_{k}"] += r.get("meta_usage", {}).get(k, 0)
    return dict(total)


def public_config(config: dict) -> dict:
    """A run's config as written and printed: credentials in any *_base_url are masked."""
    return {k: redact_url(v) if k.endswith("base_url") and isinstance(v, str) else v for k, v in config.items()}


def open_cache(enabled: bool, path: str = "cache/llm.sqlite") -> ResponseCache | None:
    """The response cache of a stage; a corrupt file stops the stage with one line saying what to do."""
    try:
        return ResponseCache(path) if enabled else None
    except CacheError as e:
        sys.exit(f"error: {e}")


def open_ledger(path: Path, **kwargs) -> Ledger:
    """A stage's Ledger on its audit log; a bad line in the middle of the log stops the stage with one line
    naming it (a torn last line is cut: see Ledger)."""
    try:
        return Ledger(path, **kwargs)
    except ValueError as e:
        sys.exit(f"error: {e}")


def check_run_config(path: Path, config: dict, may_change: set[str]) -> None:
    """Write a run's config.json, or refuse to resume a run whose recorded config differs in a flag that
    changes what is computed (flags in `may_change`, such as budget or concurrency, may differ)."""
    config = public_config(config)
    if path.exists():
        old = json.loads(path.read_text())
        diff = {k: (old.get(k), v) for k, v in config.items() if k not in may_change and old.get(k) != v}
        if diff:
            lines = "\n".join(f"  --{k.replace('_', '-')}: recorded {a!r}, now {b!r}" for k, (a, b) in diff.items())
            sys.exit(f"error: {path.parent} was made with a different config; refusing to resume.\n{lines}\n"
                     f"Use the recorded values, or a new --run name.")
    path.write_text(json.dumps(config, indent=2))


def exit_now(status: int) -> None:
    """Exit with `status` at once. After Ctrl-C, threads still waiting on a model call (a candidate being
    scored, a job's samples) would otherwise keep the interpreter alive until their calls end. Everything
    recorded is already flushed: trajectory and results lines are written whole as they finish."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def read_jsonl_or_exit(path: Path) -> list[dict]:
    """read_jsonl for a stage's setup: a corrupt file stops the stage with one clear line."""
    try:
        return read_jsonl(path)
    except ValueError as e:
        sys.exit(f"error: {e}")


def turn_writer(log, workflows: Path | None = None) -> Callable[[dict], None]:
    """The `on_record` of run_episode: append each turn to the open trajectories log and flush it (a killed
    run loses at most the turn in flight); with `workflows`, also write every candidate that produced code
    there as `<benchmark>_ep<episode>_turn<TT>_cand<i>.py`, its outcome in a header comment."""
    def write(record: dict) -> None:
        log.write(json.dumps(record) + "\n")
        log.flush()
        for i, c in enumerate(record["candidates"] if workflows else []):
            if c["code"]:
                name = f"{record['benchmark']}_ep{record['episode']}_turn{record['turn']:02d}_cand{i}.py"
                (workflows / name).write_text(f"# valid_acc={c['valid_acc']} reward={c['reward']} "
                                              f"status={c['status']} reason={c['reason']}\n{c['code']}")
    return write


def load_benchmarks(names: list[str], data_dir: str | None) -> list:
    """Benchmarks by name for a stage's setup: an unknown name or missing data stops with one clear line,
    before the stage writes anything."""
    from benchmarks import BENCHMARKS, load_benchmark
    from benchmarks.common import DataError
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        sys.exit(f"error: unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    try:
        return [load_benchmark(n, data_dir) for n in names]
    except DataError as e:
        sys.exit(f"error: {e}")


def run_episode(env: WorkflowEnv, policy: Policy, *, num_turns: int, num_candidates: int,
                record_fields: dict, done: list[dict] | None = None,
                on_record: Callable[[dict], None] = lambda r: None,
                max_parallel_candidates: int = 4) -> EpisodeResult:
    """Start (score the seeds, or on resume restore them from the first recorded turn), replay the turns
    already `done`, then play the remaining turns.

    `on_record` receives each new turn's record as soon as the turn ends (collect.py appends it to
    trajectories.jsonl and flushes), so a killed run loses at most the turn in flight.
    """
    records = list(done or [])
    if records and "seeds" in records[0]:
        env.restore(records[0])
    else:
        env.reset()  # a fresh episode (or one recorded before turns held their seeds): score the seeds
    for record in records:
        env.replay(record)
    bar = tqdm(range(len(records), num_turns), desc=f"turns ({record_fields.get('benchmark', '')})",
               disable=not env.progress, leave=False)
    for turn in bar:
        state, candidates, best, meta_usage = run_turn(env, policy, turn=turn, num_candidates=num_candidates,
                                                       max_parallel_candidates=max_parallel_candidates)
        record = turn_record(turn=turn, state=state, candidates=candidates, best=best, meta_usage=meta_usage,
                             seeds=env.seeds, seed_usage=env.seed_usage, episode=env.episode, seed=env.seed,
                             **record_fields)
        on_record(record)
        records.append(record)
        bar.set_postfix(best=f"{env.best_acc:.3f}")
    best = max(env.seeds + env.history, key=lambda e: e.valid_acc)
    return EpisodeResult(best.code, best.valid_acc, best.name, records)


# ----------------------------------------------------------------------------------------------------
# One optimisation by hand

@dataclass
class Args:
    benchmark: str = field(default="gsm8k", metadata={"help": "benchmark to optimise a workflow for"})
    data_dir: str | None = field(default=None, metadata={"help": "benchmark data folder ($W4S_DATA_DIR, else ./data)"})
    limit: int = field(default=0, metadata={"help": "use only the first N validation examples (0: all)"})
    turns: int = field(default=10, metadata={"help": "MDP turns (optimisation iterations)"})
    num_candidates: int = field(default=1, metadata={"help": "actions sampled per turn (m)"})
    meta_model: str = field(default=EMBEDDED, metadata={"help": "meta-agent: API model name, checkpoint folder or 'embedded'"})
    meta_base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible URL of the meta-agent"})
    executor_model: str = field(default=EMBEDDED, metadata={"help": "executor: API model name, local folder or 'embedded'"})
    executor_base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible URL of the executor"})
    temperature: float = field(default=0.5, metadata={"help": "meta-agent sampling temperature"})
    max_new_tokens: int = field(default=4096, metadata={"help": "meta-agent max new tokens per action"})
    executor_max_tokens: int = field(default=4096, metadata={"help": "executor max tokens per call"})
    executor_json_schema: bool = field(default=False, metadata={"help": "JSON mode on an endpoint: send the "
                                       "requested keys as a json_schema (vLLM, llama.cpp, SGLang) instead of json_object"})
    history_window: int = field(default=0, metadata={"help": "advanced workflows kept in the state (0: all)"})
    state_max_tokens: int = field(default=DEFAULT_STATE_MAX_TOKENS,
                                  metadata={"help": "token budget of the state: the oldest advanced workflows leave it first"})
    low_acc_penalty: bool = field(default=False, metadata={"help": "reward -0.1 below 30%% accuracy (official code)"})
    max_repairs: int = field(default=3, metadata={"help": "repairs asked for a failing candidate (paper: 3)"})
    seed: int = field(default=0, metadata={"help": "seed for sampling and feedback"})
    budget_usd: float | None = field(default=None, metadata={"help": "stop before executor spend passes this"})
    max_concurrency: int = field(default=32, metadata={"help": "concurrent executor requests / samples"})
    out_dir: str = field(default="runs/optimize", metadata={"help": "where workflows and the log go"})
    cache: bool = field(default=True, metadata={"help": "use the on-disk response cache"})


def main() -> None:
    args = parse_args(Args)

    # --- setup: the one resume rule of every stage (same command resumes; a changed one is refused) ---
    out = Path(args.out_dir)
    traj_path = out / "trajectories.jsonl"
    bench = load_benchmarks([args.benchmark], args.data_dir)[0]  # fails before anything is written
    valid = bench.examples("valid")[: args.limit or None]
    out.mkdir(parents=True, exist_ok=True)
    check_run_config(out / "config.json", asdict(args), {"turns", "budget_usd", "max_concurrency"})
    (out / "workflows").mkdir(exist_ok=True)
    done = read_jsonl_or_exit(traj_path)
    random.seed(args.seed)
    cache = open_cache(args.cache)
    executor_ledger = open_ledger(out / "calls.jsonl", budget_usd=args.budget_usd)
    meta_ledger = open_ledger(out / "meta_calls.jsonl")
    executor = LLM(args.executor_model, args.executor_base_url, cache=cache, ledger=executor_ledger,
                   max_concurrency=args.max_concurrency, max_tokens=args.executor_max_tokens,
                   json_schema=args.executor_json_schema)
    policy = Policy(LLM(args.meta_model, args.meta_base_url, cache=cache, ledger=meta_ledger),
                    temperature=args.temperature, max_new_tokens=args.max_new_tokens)
    env = WorkflowEnv(description=bench.description, kind=bench.kind, valid_examples=valid, score=bench.score,
                      agent=Agent(executor), seed=args.seed, history_window=args.history_window,
                      state_max_tokens=args.state_max_tokens, low_acc_penalty=args.low_acc_penalty, max_repairs=args.max_repairs,
                      max_concurrency=args.max_concurrency)

    # --- optimise ---------------------------------------------------------------------------------
    t0 = time.time()
    log = open(traj_path, "a")
    try:
        result = run_episode(env, policy, num_turns=args.turns, num_candidates=args.num_candidates,
                             record_fields={"run": out.name, "benchmark": bench.name, "meta_model": args.meta_model,
                                            "executor_model": args.executor_model}, done=done,
                             on_record=turn_writer(log, out / "workflows"))
    except (BudgetExceeded, LLMError, KeyboardInterrupt) as e:
        log.close()
        print(f"stopped: {type(e).__name__}: {e}. Finished turns are kept in {traj_path}; "
              f"rerun the same command to resume.", file=sys.stderr)
        exit_now(3 if isinstance(e, BudgetExceeded) else 4 if isinstance(e, LLMError) else 130)  # as the stages
    log.close()
    (out / "best_workflow.py").write_text(f"# {result.best_name}: valid_acc={result.best_acc:.4f}\n{result.best_code}")
    ex, meta = executor_ledger.summary(), meta_ledger.summary()
    print(f"best: {result.best_name} | valid_acc {result.best_acc:.4f} | executor ${ex['cost_usd']:.4f} "
          f"({ex['calls']} calls) | meta-agent ${meta['cost_usd']:.4f} ({meta['calls']} calls) | "
          f"{time.time() - t0:.0f}s | {out / 'best_workflow.py'}")


if __name__ == "__main__":
    main()

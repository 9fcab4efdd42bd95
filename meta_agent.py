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
import random
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

import prompts
import sandbox
from executor import EMBEDDED, LLM, Agent, BudgetExceeded, Ledger, LLMError, ResponseCache, parse_args

FAILURE_REASONS = ("no_code_block", "syntax_error", "no_solver", "runtime_error", "timeout", "bad_return",
                   "zero_accuracy")
_CODE_BLOCK = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)


# ----------------------------------------------------------------------------------------------------
# The policy: any executor.LLM (an OpenAI-compatible endpoint, a checkpoint folder, the embedded model)

@dataclass
class Policy:
    """The meta-agent: an LLM plus the sampling parameters used everywhere (paper defaults)."""
    llm: LLM
    temperature: float = 0.5
    top_p: float = 1.0
    max_new_tokens: int = 4096

    def sample(self, messages: list[dict], n: int, seed: int) -> list[str]:
        """n actions for one state; `seed` makes a later identical state draw fresh samples."""
        return self.llm.chat(messages, temperature=self.temperature, top_p=self.top_p, n=n,
                             max_tokens=self.max_new_tokens, seed=seed, tag="meta")


# ----------------------------------------------------------------------------------------------------
# Pure pieces: code extraction, rewards, seeds

def extract_solver_code(action: str) -> str | None:
    """The last ```python block of `action` that defines `solver`, else the last block, else None."""
    blocks = _CODE_BLOCK.findall(action)
    with_solver = [b for b in blocks if "def solver" in b]
    chosen = (with_solver or blocks or [None])[-1]
    return chosen.strip() + "\n" if chosen is not None and chosen.strip() else None


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
    valid_acc: float | None = None
    reward: float = 0.0
    feedback: str = ""
    calls: int = 0
    cost_usd: float = 0.0


def _account(cand: Candidate, runs: list[sandbox.WorkflowRun | None]) -> Candidate:
    """Sum the executor calls and dollars of every run made for this candidate."""
    samples = [s for r in runs if r is not None for s in r.samples]
    cand.calls = sum(s.calls for s in samples)
    cand.cost_usd = sum(s.cost_usd for s in samples)
    return cand


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
                 history_window: int = 0, num_failure_cases: int = 3, low_acc_penalty: bool = False,
                 max_repairs: int = 3, sample_timeout_s: float = 300.0, max_concurrency: int = 32,
                 progress: bool = True):
        if not valid_examples:
            raise ValueError("WorkflowEnv needs at least one validation example")
        self.description, self.kind, self.score = description, kind, score
        self.valid, self.agent = valid_examples, agent
        self.seed, self.episode = seed, episode
        self.history_window = history_window  # 0: every advanced workflow; k: seeds + the k latest
        self.num_failure_cases, self.low_acc_penalty = num_failure_cases, low_acc_penalty
        self.max_repairs, self.sample_timeout_s = max_repairs, sample_timeout_s
        self.max_concurrency, self.progress = max_concurrency, progress
        self.seeds: list[ArchiveEntry] = []
        self.history: list[ArchiveEntry] = []   # workflows that advanced the state, oldest first
        self.best_acc = 0.0
        self.prev_acc = 0.0

    # --- running and scoring workflows -----------------------------------------------------------

    def _run(self, code: str, examples: list[dict], agent: Agent) -> tuple[sandbox.WorkflowRun, float, list[float]]:
        run = sandbox.run_workflow(code, [solver_inputs(e) for e in examples], agent,
                                   sample_timeout_s=self.sample_timeout_s, max_concurrency=self.max_concurrency)
        self._raise_if_executor_down(run)
        scores = [0.0 if s.error is not None else self.score(s.answer, e) for s, e in zip(run.samples, examples)]
        return run, (sum(scores) / len(scores) if scores else 0.0), scores

    def _raise_if_executor_down(self, run: sandbox.WorkflowRun) -> None:
        # A budget stop or a dead endpoint must abort the turn, not be recorded as a bad workflow.
        if self.agent.llm.ledger is not None:
            self.agent.llm.ledger.check_budget()
        calls = sum(s.calls for s in run.samples)
        if calls and sum(s.failed_calls for s in run.samples) == calls:
            first = next((s.error for s in run.samples if s.error), "")
            raise LLMError(f"every executor call of this workflow run failed (endpoint down?); {first[-300:]}")

    def _self_check(self, code: str, agent: Agent) -> tuple[tuple[str, str] | None, sandbox.WorkflowRun | None]:
        """((reason, error text with traceback) or None when it works, the run) for one validation sample."""
        bad = static_check(code)
        if bad:
            return bad, None
        run, _, _ = self._run(code, self.valid[:1], agent)
        if run.reason is not None:
            reason = run.reason if run.reason in FAILURE_REASONS else "runtime_error"
            return (reason, f"{run.reason}: {run.error or ''}"), run
        sample = run.samples[0]
        if sample.error is not None:
            reason = sample.reason if sample.reason in FAILURE_REASONS else "runtime_error"
            return (reason, sample.traceback or sample.error), run
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
        self.seeds, self.history = [], []
        for name, code in prompts.seed_workflows(self.kind):
            run, acc, scores = self._run(code, self.valid, self.agent)
            rng = random.Random(derive_seed(self.seed, self.episode, "seed", name))
            self.seeds.append(ArchiveEntry(name, code, acc, self._feedback(acc, None, run, scores, rng)))
        self.best_acc = max(e.valid_acc for e in self.seeds)
        self.prev_acc = self.seeds[-1].valid_acc
        return self.state()

    def archive(self) -> list[ArchiveEntry]:
        recent = self.history[-self.history_window:] if self.history_window else self.history
        return self.seeds + recent

    def state(self) -> list[dict]:
        archive = [{"name": e.name, "code": e.code, "feedback": e.feedback} for e in self.archive()]
        return [{"role": "system", "content": prompts.SYSTEM_PROMPT},
                {"role": "user", "content": prompts.build_user_prompt(self.description, archive, self.kind)}]

    def evaluate(self, action: str, repair: Callable[[list[dict]], str], turn: int, index: int) -> Candidate:
        """Check, repair (up to max_repairs, each checked) and score one action. Rewards come later."""
        cand = Candidate(action=action, attempts=[action])
        state, runs = self.state(), []
        for attempt in range(self.max_repairs + 1):
            code = extract_solver_code(cand.action)
            if code is None:
                failure, run = ("no_code_block", "Your reply has no ```python block defining `solver`."), None
            else:
                failure, run = self._self_check(code, self.agent)
            cand.code = code
            runs.append(run)
            if failure is None:
                break
            cand.reason, cand.error = failure
            if attempt == self.max_repairs:
                return _account(cand, runs)
            fix_request = prompts.build_repair_prompt(code or "", failure[1].strip().splitlines()[-1], failure[1])
            cand.action = repair(state + [{"role": "assistant", "content": cand.action},
                                          {"role": "user", "content": fix_request}])
            cand.attempts.append(cand.action)
            cand.repairs += 1
        run, acc, scores = self._run(cand.code, self.valid, self.agent)
        runs.append(run)
        rng = random.Random(derive_seed(self.seed, self.episode, turn, index))
        cand.valid_acc, cand.feedback = acc, self._feedback(acc, self.prev_acc, run, scores, rng)
        cand.status, cand.reason, cand.error = ("failed", "zero_accuracy", "0 correct on validation") \
            if acc == 0 else ("ok", None, None)
        return _account(cand, runs)

    def reward_and_advance(self, candidates: list[Candidate], turn: int) -> int | None:
        """Reward every candidate against the same references, then advance with the best ok one."""
        for c in candidates:
            c.reward = compute_reward(c.valid_acc, self.best_acc, self.prev_acc, self.low_acc_penalty) \
                if c.valid_acc is not None else 0.0
        ok = [i for i, c in enumerate(candidates) if c.valid_acc is not None]
        if not ok:
            return None  # nothing ran: the state stays as it was and the next turn samples again
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
             max_parallel_candidates: int = 4) -> tuple[list[dict], list[Candidate], int | None]:
    """Sample m actions for the current state, evaluate all of them, reward them and advance."""
    state = env.state()
    actions = policy.sample(state, num_candidates, seed=derive_seed(env.seed, env.episode, turn))

    def evaluate(i: int) -> Candidate:
        repair_seeds = iter(range(1, env.max_repairs + 1))
        repair = lambda msgs: policy.sample(msgs, 1, seed=derive_seed(env.seed, env.episode, turn, i,
                                                                       next(repair_seeds)))[0]
        return env.evaluate(actions[i], repair, turn, i)

    with ThreadPoolExecutor(max_workers=max(1, min(max_parallel_candidates, num_candidates))) as pool:
        candidates = list(pool.map(evaluate, range(len(actions))))
    best = env.reward_and_advance(candidates, turn)
    return state, candidates, best


def turn_record(*, run: str, benchmark: str, episode: int, turn: int, seed: int, meta_model: str,
                executor_model: str, state: list[dict], candidates: list[Candidate], best: int | None) -> dict:
    """One trajectories.jsonl line (format in DESIGN.md)."""
    return {"run": run, "benchmark": benchmark, "episode": episode, "turn": turn, "seed": seed,
            "meta_model": meta_model, "executor_model": executor_model, "state": state,
            "candidates": [asdict(c) for c in candidates], "best": best}


def check_run_config(path: Path, config: dict, may_change: set[str]) -> None:
    """Write a run's config.json, or refuse to resume a run whose recorded config differs in a flag that
    changes what is computed (flags in `may_change`, such as budget or concurrency, may differ)."""
    if path.exists():
        old = json.loads(path.read_text())
        diff = {k: (old.get(k), v) for k, v in config.items() if k not in may_change and old.get(k) != v}
        if diff:
            lines = "\n".join(f"  --{k.replace('_', '-')}: recorded {a!r}, now {b!r}" for k, (a, b) in diff.items())
            sys.exit(f"error: {path.parent} was made with a different config; refusing to resume.\n{lines}\n"
                     f"Use the recorded values, or a new --run name.")
    path.write_text(json.dumps(config, indent=2))


def read_jsonl(path: Path) -> list[dict]:
    """Complete lines of an append-only jsonl log; a torn last line (killed mid-write) is cut off the file,
    so the resumed run appends after the last complete record."""
    if not path.exists():
        return []
    records, good_bytes = [], 0
    with open(path, "rb") as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
            good_bytes += len(line)
    if good_bytes < path.stat().st_size:
        with open(path, "r+b") as f:
            f.truncate(good_bytes)
    return records


def run_episode(env: WorkflowEnv, policy: Policy, *, num_turns: int, num_candidates: int,
                record_fields: dict, done: list[dict] | None = None,
                on_record: Callable[[dict], None] = lambda r: None,
                max_parallel_candidates: int = 4) -> EpisodeResult:
    """Reset, replay the turns already `done` (resume), then play the remaining turns.

    `on_record` receives each new turn's record as soon as the turn ends (collect.py appends it to
    trajectories.jsonl and flushes), so a killed run loses at most the turn in flight.
    """
    env.reset()
    records = list(done or [])
    for record in records:
        env.replay(record)
    bar = tqdm(range(len(records), num_turns), desc=f"turns ({record_fields.get('benchmark', '')})",
               disable=not env.progress, leave=False)
    for turn in bar:
        state, candidates, best = run_turn(env, policy, turn=turn, num_candidates=num_candidates,
                                           max_parallel_candidates=max_parallel_candidates)
        record = turn_record(turn=turn, state=state, candidates=candidates, best=best,
                             episode=env.episode, seed=env.seed, **record_fields)
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
    low_acc_penalty: bool = field(default=False, metadata={"help": "reward -0.1 below 30%% accuracy (official code)"})
    max_repairs: int = field(default=3, metadata={"help": "repairs asked for a failing candidate (paper: 3)"})
    seed: int = field(default=0, metadata={"help": "seed for sampling and feedback"})
    budget_usd: float | None = field(default=None, metadata={"help": "stop before executor spend passes this"})
    max_concurrency: int = field(default=32, metadata={"help": "concurrent executor requests / samples"})
    out_dir: str = field(default="runs/optimize", metadata={"help": "where workflows and the log go"})
    cache: bool = field(default=True, metadata={"help": "use the on-disk response cache"})


def main() -> None:
    args = parse_args(Args)
    from benchmarks import load_benchmark

    # --- setup ------------------------------------------------------------------------------------
    out = Path(args.out_dir)
    (out / "workflows").mkdir(parents=True, exist_ok=True)
    config, traj_path = asdict(args), out / "trajectories.jsonl"
    same_run = (out / "config.json").exists() and json.loads((out / "config.json").read_text()) == config
    done = read_jsonl(traj_path) if same_run else []  # the same command resumes; another one starts over
    if not same_run:
        traj_path.unlink(missing_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    random.seed(args.seed)
    bench = load_benchmark(args.benchmark, args.data_dir)
    valid = bench.examples("valid")[: args.limit or None]
    cache = ResponseCache("cache/llm.sqlite") if args.cache else None
    executor_ledger = Ledger(out / "calls.jsonl", budget_usd=args.budget_usd)
    meta_ledger = Ledger(out / "meta_calls.jsonl")
    executor = LLM(args.executor_model, args.executor_base_url, cache=cache, ledger=executor_ledger,
                   max_concurrency=args.max_concurrency, max_tokens=args.executor_max_tokens,
                   json_schema=args.executor_json_schema)
    policy = Policy(LLM(args.meta_model, args.meta_base_url, cache=cache, ledger=meta_ledger),
                    temperature=args.temperature, max_new_tokens=args.max_new_tokens)
    env = WorkflowEnv(description=bench.description, kind=bench.kind, valid_examples=valid, score=bench.score,
                      agent=Agent(executor), seed=args.seed, history_window=args.history_window,
                      low_acc_penalty=args.low_acc_penalty, max_repairs=args.max_repairs,
                      max_concurrency=args.max_concurrency)

    # --- optimise ---------------------------------------------------------------------------------
    t0 = time.time()
    log = open(traj_path, "a")

    def save(record: dict) -> None:
        log.write(json.dumps(record) + "\n")
        log.flush()
        for i, c in enumerate(record["candidates"]):
            if c["code"]:
                (out / "workflows" / f"turn{record['turn']:02d}_cand{i}.py").write_text(
                    f"# valid_acc={c['valid_acc']} status={c['status']} reason={c['reason']}\n{c['code']}")

    try:
        result = run_episode(env, policy, num_turns=args.turns, num_candidates=args.num_candidates,
                             record_fields={"run": out.name, "benchmark": bench.name, "meta_model": args.meta_model,
                                            "executor_model": args.executor_model}, done=done, on_record=save)
    except (BudgetExceeded, LLMError, KeyboardInterrupt) as e:
        sys.exit(f"stopped: {type(e).__name__}: {e}. Finished turns are kept in {traj_path}; "
                 f"rerun the same command to resume.")
    finally:
        log.close()
    (out / "best_workflow.py").write_text(f"# {result.best_name}: valid_acc={result.best_acc:.4f}\n{result.best_code}")
    ex, meta = executor_ledger.summary(), meta_ledger.summary()
    print(f"best: {result.best_name} | valid_acc {result.best_acc:.4f} | executor ${ex['cost_usd']:.4f} "
          f"({ex['calls']} calls) | meta-agent ${meta['cost_usd']:.4f} ({meta['calls']} calls) | "
          f"{time.time() - t0:.0f}s | {out / 'best_workflow.py'}")


if __name__ == "__main__":
    main()

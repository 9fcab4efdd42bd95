"""Stage 1 of RLAO: roll out the meta-agent on training benchmarks and record every candidate.

Reads   benchmark validation splits (benchmarks/), the meta-agent and executor (any OpenAI-compatible
        endpoint, a checkpoint folder, or the embedded SmolLM2 default).
Writes  runs/<run>/config.json        everything needed to rerun (a changed config refuses to resume)
        runs/<run>/trajectories.jsonl one line per turn (format in the README), appended and flushed per turn
        runs/<run>/calls.jsonl        executor audit log; meta_calls.jsonl for the meta-agent
        runs/<run>/workflows/         every scored workflow as a .py file, validation accuracy on top
        runs/<run>/summary.json       turns, candidates ok/failed by reason, rewards, best accuracy, cost

Paper, Section 4 (RLAO): at every turn m candidate actions are sampled and scored, the best advances the
state, all are kept and rewarded (1: beats the best so far, 0.5: beats the previous turn, else 0).

Simplifications, on purpose:
1. The paper's exact training benchmarks are not public; the default is MGSM and GSM-Plus (validation
   splits only), a choice in the spirit of the paper. They are NOT disjoint from the evaluation tests:
   MGSM translates GSM8K test questions and GSM-Plus perturbs them. The overlap with every test split is
   printed at start, and evaluate.py labels each benchmark seen / unseen / overlapping.
2. Episodes run one after another; the m candidates of a turn are evaluated concurrently.

Estimate: the same command with --estimate prints the calls, tokens, dollars and hours it will take
(estimate.py, from call_profile.json) and exits, with no call made and nothing written.

Resume: rerun the same command. Finished turns are skipped, a half-written last line is dropped, and the
on-disk response cache replays every executor and meta-agent call already made, so no call is paid twice.

    python collect.py --run smoke --benchmarks gsm8k --num-episodes 1 --num-turns 2 --num-candidates 2 \
        --limit-valid 16 --max-new-tokens 512 --executor-max-tokens 256     # CPU, embedded default
    python collect.py --run rlao --meta-model gpt-4o --executor-model gpt-4o-mini --num-episodes 4 \
        --num-turns 10 --budget-usd 50                                    # paper-scale collection
"""
from __future__ import annotations

import json
import random
import sys
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

import estimate
from benchmarks import load_benchmark
from benchmarks.overlap import overlap_report
from executor import EMBEDDED, LLM, Agent, BudgetExceeded, LLMError, parse_args, read_jsonl
from meta_agent import (DEFAULT_STATE_MAX_TOKENS, Policy, WorkflowEnv, check_run_config, load_benchmarks,
                        exit_now, open_cache, open_ledger, public_config, read_jsonl_or_exit, run_episode,
                        turn_writer)


@dataclass
class Args:
    run: str = field(default="rlao", metadata={"help": "run name: outputs go to runs/<run>/"})
    benchmarks: list[str] = field(default_factory=lambda: ["mgsm", "gsm_plus"],
                                  metadata={"help": "training benchmarks (validation splits only)"})
    num_episodes: int = field(default=1, metadata={"help": "episodes (trajectories) per benchmark"})
    num_turns: int = field(default=10, metadata={"help": "turns per episode"})
    num_candidates: int = field(default=5, metadata={"help": "candidate actions sampled per turn (m)"})
    meta_model: str = field(default=EMBEDDED, metadata={"help": "meta-agent: API model, checkpoint folder or 'embedded'"})
    meta_base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible URL of the meta-agent"})
    executor_model: str = field(default=EMBEDDED, metadata={"help": "executor: API model, local folder or 'embedded'"})
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
    limit_valid: int = field(default=0, metadata={"help": "use the first N validation examples (0: all)"})
    data_dir: str | None = field(default=None, metadata={"help": "benchmark data ($W4S_DATA_DIR, else ./data)"})
    seed: int = field(default=0, metadata={"help": "seed for sampling and feedback"})
    budget_usd: float | None = field(default=None, metadata={"help": "stop cleanly before executor spend passes this"})
    max_concurrency: int = field(default=32, metadata={"help": "concurrent executor requests"})
    max_parallel_candidates: int = field(default=4, metadata={"help": "candidates of a turn evaluated at once"})
    sample_timeout_s: float = field(default=300.0, metadata={"help": "time limit per validation sample"})
    cache: bool = field(default=True, metadata={"help": "use the on-disk response cache (cache/llm.sqlite)"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})
    # --estimate: print what the run will take and exit, no call made (estimate.py).
    estimate: bool = field(default=False, metadata={"help": "print calls, tokens, dollars and hours of this run and exit (no call)"})
    latency_s: float = field(default=3.0, metadata={"help": "--estimate: mean seconds per executor call"})
    meta_latency_s: float = field(default=50.0, metadata={"help": "--estimate: mean seconds per meta-agent call"})
    call_profile: str | None = field(default=None, metadata={"help": "--estimate: per-sample call counts (default call_profile.json)"})


# Flags that may change between a run and its resume: they do not change what is computed.
RESUMABLE_CHANGES = {"budget_usd", "max_concurrency", "max_parallel_candidates", "progress", "num_episodes",
                     "num_turns", "estimate", "latency_s", "meta_latency_s", "call_profile"}


def ledger_totals(path: Path) -> dict:
    """Totals of an audit log (all sessions of the run, resumes included)."""
    rows = read_jsonl(path, cut_torn_tail=False)  # as the Ledger reads it; a missing log has no rows
    return {"calls": len(rows), "cached_calls": sum(bool(r.get("cached")) for r in rows),
            "prompt_tokens": sum(r.get("prompt_tokens", 0) for r in rows),
            "completion_tokens": sum(r.get("completion_tokens", 0) for r in rows),
            "cost_usd": round(sum(r.get("cost_usd", 0.0) for r in rows), 6),
            "latency_s": round(sum(r.get("latency_s", 0.0) for r in rows), 2)}


def summarize(out: Path, records: list[dict], wall_s: float) -> dict:
    candidates = [(r["benchmark"], c) for r in records for c in r["candidates"]]
    best = defaultdict(float)
    ok_rewards: dict[str, Counter] = defaultdict(Counter)
    for bench, c in candidates:
        if c["valid_acc"] is not None:
            best[bench] = max(best[bench], c["valid_acc"])
        if c["status"] == "ok":
            ok_rewards[bench][str(c["reward"])] += 1
    return {
        "turns": len(records),
        "candidates": len(candidates),
        "ok": sum(c["status"] == "ok" for _, c in candidates),
        "failed_by_reason": dict(Counter(c["reason"] for _, c in candidates if c["status"] != "ok")),
        "reward_histogram": dict(Counter(str(c["reward"]) for _, c in candidates)),
        "training_samples_by_benchmark_and_reward": {b: dict(v) for b, v in ok_rewards.items()},
        "best_valid_acc": dict(best),
        "meta_agent": ledger_totals(out / "meta_calls.jsonl"),
        "executor": ledger_totals(out / "calls.jsonl"),
        "wall_s": round(wall_s, 1),
    }


def print_estimate(args: Args) -> None:
    """--estimate: the run's calls, tokens, dollars and hours from its plan and the call profile."""
    profile = estimate.load_profile(args.call_profile)
    sizes = {name: len(load_benchmark(name, args.data_dir).examples("valid")[: args.limit_valid or None])
             for name in args.benchmarks}
    est = estimate.estimate_collect(
        sizes=sizes, executor_model=args.executor_model, meta_model=args.meta_model, num_episodes=args.num_episodes,
        num_turns=args.num_turns, num_candidates=args.num_candidates, max_concurrency=args.max_concurrency,
        latency_s=args.latency_s, meta_latency_s=args.meta_latency_s, profile=profile)
    print(estimate.format_estimate("collect", est, profile.get("source", "the call profile")))


def main() -> None:
    args = parse_args(Args)
    if args.estimate:
        print_estimate(args)
        return

    # --- setup: benchmarks (checked before anything is written), run dir, config, seed ----------------
    benches = load_benchmarks(args.benchmarks, args.data_dir)
    out = Path("runs") / args.run
    out.mkdir(parents=True, exist_ok=True)
    check_run_config(out / "config.json", asdict(args), RESUMABLE_CHANGES)
    (out / "workflows").mkdir(exist_ok=True)
    random.seed(args.seed)
    np.random.seed(args.seed)
    traj_path = out / "trajectories.jsonl"
    done = read_jsonl_or_exit(traj_path)
    print(f"collect: run {out} | {len(done)} turns already recorded | config {json.dumps(public_config(asdict(args)))}")
    # Training items that share a question with an evaluation test split (MGSM translates GSM8K test items,
    # GSM-Plus perturbs them): their gold answers reach the meta-agent through the feedback.
    train_items = [e for b in benches for e in b.examples("valid")[: args.limit_valid or None]]
    print(overlap_report(train_items, args.data_dir))

    # --- build the executor, the meta-agent and the benchmarks --------------------------------------
    cache = open_cache(args.cache)
    executor_ledger = open_ledger(out / "calls.jsonl", budget_usd=args.budget_usd)
    meta_ledger = open_ledger(out / "meta_calls.jsonl")
    executor = LLM(args.executor_model, args.executor_base_url, cache=cache, ledger=executor_ledger,
                   max_concurrency=args.max_concurrency, max_tokens=args.executor_max_tokens,
                   json_schema=args.executor_json_schema)
    policy = Policy(LLM(args.meta_model, args.meta_base_url, cache=cache, ledger=meta_ledger),
                    temperature=args.temperature, max_new_tokens=args.max_new_tokens)

    # --- rollout: benchmarks x episodes, one record per turn -----------------------------------------
    t0, status = time.time(), 0
    records = list(done)
    jobs = [(b, e) for b in benches for e in range(args.num_episodes)]
    try:
        with open(traj_path, "a") as log:
            write = turn_writer(log, out / "workflows")

            def on_record(record: dict) -> None:
                write(record)
                records.append(record)

            for bench, episode in tqdm(jobs, desc="episodes", disable=not args.progress):
                mine = sorted((r for r in done if r["benchmark"] == bench.name and r["episode"] == episode),
                              key=lambda r: r["turn"])
                if len(mine) >= args.num_turns:
                    continue
                env = WorkflowEnv(description=bench.description, kind=bench.kind, score=bench.score,
                                  valid_examples=bench.examples("valid")[: args.limit_valid or None],
                                  agent=Agent(executor), seed=args.seed, episode=episode,
                                  history_window=args.history_window, state_max_tokens=args.state_max_tokens,
                                  low_acc_penalty=args.low_acc_penalty,
                                  max_repairs=args.max_repairs,
                                  sample_timeout_s=args.sample_timeout_s, max_concurrency=args.max_concurrency,
                                  progress=args.progress)
                run_episode(env, policy, num_turns=args.num_turns, num_candidates=args.num_candidates,
                            done=mine, on_record=on_record, max_parallel_candidates=args.max_parallel_candidates,
                            record_fields={"run": args.run, "benchmark": bench.name, "meta_model": args.meta_model,
                                           "executor_model": args.executor_model})
    except BudgetExceeded as e:
        print(f"\nstopped cleanly: {e}\nEverything recorded so far is kept; raise --budget-usd and rerun to go on.")
        status = 3
    except LLMError as e:
        print(f"\nstopped: the executor endpoint failed: {e}\nRecorded turns are kept; rerun to resume.")
        status = 4
    except KeyboardInterrupt:
        print("\ninterrupted: recorded turns are kept; rerun the same command to resume.")
        status = 130

    # --- summary -----------------------------------------------------------------------------------
    summary = summarize(out, records, time.time() - t0)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"trajectories: {traj_path}")
    if status:  # candidates may still be scoring in worker threads: do not wait for their calls
        exit_now(status)


if __name__ == "__main__":
    main()

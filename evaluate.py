"""Stage 3 of W4S: optimise a workflow with the meta-agent on every benchmark, run the baselines, and score
every chosen workflow ONCE on the test split (paper, Section 5 and Table 1).

Reads   benchmarks/ (validation and test splits), prompts/ (baseline and seed workflows), a meta-agent (a
        checkpoint folder from train_rlao.py, the base model, an API model such as gpt-4o, or 'embedded').
Writes  results/<run>/config.json     the resolved flags (a rerun with different computing flags refuses)
        results/<run>/results.jsonl   one line per (benchmark, executor, method, seed): accuracy, n, 95% CI,
                                      executor calls/tokens/dollars, meta-agent dollars, failures by reason
        results/<run>/scores/*.json   per-example test scores of every line (the CIs are computed from them)
        results/<run>/workflows/*.py  every workflow that was scored on test, validation accuracy on top
        results/<run>/trajectories/   the W4S optimisation of each (benchmark, executor, seed), one turn a line
        results/<run>/table.md, results.csv, valid_curves.png, cost_accuracy.png

Protocol (clean by construction):
1. Baselines (vanilla, CoT, CoT-SC, Self-Refine, LLM-Debate from prompts/) need no selection: scored on test.
2. best_seed: every seed workflow is scored on validation; the best (first on ties) is scored on test.
3. w4s: the meta-agent optimises for --iterations turns (default 30, as the official code) through
   meta_agent.WorkflowEnv, which only ever receives the validation examples; the workflow with the best
   validation accuracy (seeds included) is scored once on test. Test examples are read here, once per
   benchmark, only to score the chosen workflows.
4. Uncertainty: bootstrap 95% percentile interval, 1000 resamples, numpy RNG seeded with 0. A resample
   draws the seeds with replacement, then the test examples with replacement (the same examples for every
   drawn seed, as all seeds share the test set); with one seed this is the plain per-example bootstrap.
   It covers test-set sampling and, given several --seeds, run-to-run variation.
5. Dollars: `cost_usd` prices every token behind a number at prices.json list price (executor, plus
   meta-agent for w4s; search on validation included), whether or not the response came from the cache,
   so a rerun reports the same figure; `paid_usd` is what the process that wrote the line actually paid.

Deliberate simplifications and limits:
1. One W4S episode per (benchmark, executor, seed), m = --num-candidates actions per turn (default 1).
2. Jobs run side by side (--max-parallel-jobs, W4S searches first: they are the longest chains) under one
   cap of --max-concurrency executor requests in flight, shared by every job and executor model; a
   waiting W4S request goes before the others, and with --tokens-per-minute waits while the last minute's
   paid executor tokens reach it. Each job counts its own calls (JobLedger).
3. --seeds vary everything sampled: the meta-agent's actions, the feedback's failure cases and the
   executor's samples (the seed is part of every executor call's cache key), so the CI over seeds covers
   run-to-run variation of baselines and W4S alike. Seed 0 is the default stream, shared with
   collect.py and every run that sets no seed, so what was computed there is served from the cache.

Resume: rerun the same command. Finished lines are skipped, a W4S episode continues from its trajectory
file, and the response cache replays every call already made. Ctrl-C or --budget-usd stops cleanly and the
table is written from the lines finished so far (lines are written whole, one at a time).
--estimate prints the run's calls, tokens, dollars and hours (estimate.py) and exits, with no call made.

    python evaluate.py --run smoke --benchmarks gsm8k --iterations 2 --limit-valid 16 --limit-test 32 \
        --max-new-tokens 512 --executor-max-tokens 256        # CPU, embedded SmolLM2 (not paper numbers)
    python evaluate.py --run w4s --meta-model checkpoints/w4s --executor-models gpt-4o-mini \
        --seeds 0 1 2 --budget-usd 300                        # paper scale, all eleven benchmarks
    python evaluate.py --workflow my_solver.py --benchmark gsm8k --split valid --limit 50 --json
"""
from __future__ import annotations

import contextlib
import copy
import csv
import heapq
import itertools
import json
import os
import random
import re
import sys
import threading
import time
from collections import Counter, defaultdict, deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
from tqdm import tqdm

import estimate
import prompts
import sandbox
from benchmarks import BENCHMARKS
from benchmarks.overlap import overlap_counts
from executor import (EMBEDDED, LLM, Agent, Budget, BudgetExceeded, Ledger, LLMError, cost_usd as list_price,
                      is_local_model, model_weights, parse_args)
from meta_agent import (DEFAULT_STATE_MAX_TOKENS, Policy, Scored, WorkflowEnv, check_run_config, load_benchmarks,
                        exit_now, open_cache, open_ledger, public_config, read_jsonl, read_jsonl_or_exit, record_usage,
                        run_episode, score_workflow as score_on, turn_writer)

BASELINES = ("vanilla", "cot", "cot_sc", "self_refine", "llm_debate")
METHODS = BASELINES + ("best_seed", "w4s")
LABELS = {"vanilla": "Vanilla", "cot": "CoT", "cot_sc": "CoT-SC (5)", "self_refine": "Self-Refine",
          "llm_debate": "LLM-Debate", "best_seed": "Best seed (valid)", "w4s": "W4S"}
# W4S as reported in the paper (Table 1, GPT-4o-mini executor), only numbers confirmed in public text:
# MATH 63.0 (quoted from Table 1 in the OpenReview review of the paper), HumanEval 95.4 (the paper's
# headline code-generation result). Unknown cells stay blank; never fill them from memory.
PAPER_W4S_GPT4O_MINI = {"math": 63.0, "humaneval": 95.4}


@dataclass
class Args:
    """Baselines and W4S on every benchmark, chosen on validation, scored once on test (see the docstring)."""
    run: str = field(default="eval", metadata={"help": "run name: outputs go to results/<run>/"})
    out_dir: str | None = field(default=None, metadata={"help": "output folder (overrides results/<run>)"})
    benchmarks: list[str] = field(default_factory=lambda: list(BENCHMARKS), metadata={"help": "benchmarks to evaluate"})
    executor_models: list[str] = field(default_factory=lambda: [EMBEDDED], metadata={"help": "executor models (API names, local folders or 'embedded')"})
    executor_base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible URL of the executor"})
    meta_model: str = field(default=EMBEDDED, metadata={"help": "meta-agent: checkpoint folder, base model, API model or 'embedded'"})
    meta_base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible URL of the meta-agent"})
    methods: list[str] = field(default_factory=lambda: list(METHODS), metadata={"help": f"subset of {', '.join(METHODS)}"})
    iterations: int = field(default=30, metadata={"help": "W4S optimisation turns on validation (official code: 30)"})
    num_candidates: int = field(default=1, metadata={"help": "W4S actions sampled per turn (m)"})
    seeds: list[int] = field(default_factory=lambda: [0], metadata={"help": "repeated runs: each seed samples the meta-agent, feedback and executor anew"})
    limit_valid: int = field(default=0, metadata={"help": "use the first N validation examples (0: all)"})
    limit_test: int = field(default=0, metadata={"help": "use the first N test examples (0: all)"})
    temperature: float = field(default=0.5, metadata={"help": "meta-agent sampling temperature"})
    max_new_tokens: int = field(default=4096, metadata={"help": "meta-agent max new tokens per action"})
    executor_max_tokens: int = field(default=4096, metadata={"help": "executor max tokens per call"})
    executor_json_schema: bool = field(default=False, metadata={"help": "JSON mode on an endpoint: send the "
                                       "requested keys as a json_schema (vLLM, llama.cpp, SGLang) instead of json_object"})
    history_window: int = field(default=0, metadata={"help": "advanced workflows kept in the meta-agent's state (0: all)"})
    state_max_tokens: int = field(default=DEFAULT_STATE_MAX_TOKENS,
                                  metadata={"help": "token budget of the meta-agent's state: the oldest advanced workflows leave it first"})
    train_benchmarks: list[str] = field(default_factory=lambda: ["mgsm", "gsm_plus"],
                                        metadata={"help": "what the meta-agent was trained on (validation splits), for the seen/unseen/overlap label; 'none' for an untrained or API meta-agent"})
    max_repairs: int = field(default=3, metadata={"help": "repairs asked for a failing W4S candidate (paper: 3)"})
    sample_timeout_s: float = field(default=300.0, metadata={"help": "time limit per sample of a workflow"})
    max_concurrency: int = field(default=32, metadata={"help": "concurrent executor requests / samples"})
    max_parallel_candidates: int = field(default=4, metadata={"help": "W4S candidates of a turn evaluated at once"})
    max_parallel_jobs: int = field(default=16, metadata={"help": "jobs (benchmark x executor x seed x method) run side by side under the one request cap"})
    tokens_per_minute: int = field(default=0, metadata={"help": "executor tokens (prompt + completion) per minute across all jobs, as an API tier limits them (0: no limit)"})
    budget_usd: float | None = field(default=None, metadata={"help": "stop cleanly before executor + meta-agent spend passes this"})
    num_bootstrap: int = field(default=1000, metadata={"help": "bootstrap resamples for the 95%% CI"})
    data_dir: str | None = field(default=None, metadata={"help": "benchmark data ($W4S_DATA_DIR, else ./data)"})
    cache: bool = field(default=True, metadata={"help": "use the on-disk response cache (cache/llm.sqlite)"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})
    # Single-workflow mode: score one file on one split and exit (no run folder).
    workflow: str | None = field(default=None, metadata={"help": "single mode: a workflow .py file defining solver"})
    benchmark: str | None = field(default=None, metadata={"help": "single mode: the benchmark to score it on"})
    split: Literal["valid", "test"] = field(default="valid", metadata={"help": "single mode: the split to score"})
    limit: int = field(default=0, metadata={"help": "single mode: use the first N examples (0: all)"})
    json: bool = field(default=False, metadata={"help": "single mode: print one JSON object"})
    # --estimate: print what the run will take and exit, no call made (estimate.py).
    estimate: bool = field(default=False, metadata={"help": "print calls, tokens, dollars and hours of this run and exit (no call)"})
    latency_s: float = field(default=3.0, metadata={"help": "--estimate: mean seconds per executor call"})
    meta_latency_s: float = field(default=50.0, metadata={"help": "--estimate: mean seconds per meta-agent call"})
    call_profile: str | None = field(default=None, metadata={"help": "--estimate: per-sample call counts (default call_profile.json)"})


# Flags that may change between a run and its resume: they do not change what a finished line means.
RESUMABLE_CHANGES = {"benchmarks", "executor_models", "methods", "seeds", "budget_usd", "max_concurrency",
                     "max_parallel_candidates", "progress", "num_bootstrap", "executor_base_url", "meta_base_url",
                     "train_benchmarks", "estimate", "latency_s", "meta_latency_s", "call_profile", "max_parallel_jobs", "tokens_per_minute"}
SINGLE_MODE = {"workflow", "benchmark", "split", "limit", "json"}


def check_args(args: Args) -> None:
    """Fail before any model loads on unknown names and incompatible flags."""
    names = [args.benchmark] if args.workflow else args.benchmarks
    bad = [b for b in names if b not in BENCHMARKS]
    if args.workflow and not args.benchmark:
        sys.exit("error: --workflow needs --benchmark NAME")
    bad += [b for b in args.train_benchmarks if b not in BENCHMARKS and b != "none"]
    if bad:
        sys.exit(f"error: unknown benchmark(s) {bad}; choose from {list(BENCHMARKS)}")
    if unknown := [m for m in args.methods if m not in METHODS]:
        sys.exit(f"error: unknown method(s) {unknown} in --methods; choose from {list(METHODS)}")
    if args.iterations < 0 or args.num_candidates < 1 or not args.seeds or not args.executor_models:
        sys.exit("error: --iterations >= 0, --num-candidates >= 1, and at least one --seeds and --executor-models")
    if (Path(args.meta_model).expanduser() / "final").is_dir():
        sys.exit(f"error: the export of {args.meta_model} was cut off (its final/ is still there): rerun "
                 f"train_rlao.py with --resume (make train) to finish it")


def slug(text: str) -> str:
    """A file-name-safe form of a model name or path ('checkpoints/w4s' -> 'checkpoints_w4s')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


def score_workflow(code: str, examples: list[dict], bench, agent: Agent, args: Args,
                   samples: "int | SampleShare | None" = None) -> Scored:
    """meta_agent.score_workflow with this run's limits: the one scoring path of W4S and evaluation.
    `samples`: how many run at once (default --max-concurrency)."""
    return score_on(code, examples, bench.score, agent, sample_timeout_s=args.sample_timeout_s,
                    max_concurrency=samples or args.max_concurrency)


def bootstrap_ci(scores: np.ndarray, num_resamples: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, lo, hi): 95% percentile bootstrap of a (num_seeds, num_examples) score matrix, resampling
    seeds, then examples (shared by the drawn seeds). bootstrap_ci(np.ones((1, 5))) == (1.0, 1.0, 1.0)."""
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    num_seeds, n = scores.shape
    if n == 0:
        return 0.0, 0.0, 0.0
    rng = np.random.default_rng(seed)
    means = np.empty(num_resamples)
    for b in range(num_resamples):
        rows = rng.integers(0, num_seeds, num_seeds) if num_seeds > 1 else np.zeros(1, dtype=int)
        cols = rng.integers(0, n, n)
        means[b] = scores[np.ix_(rows, cols)].mean()
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(scores.mean()), float(lo), float(hi)


EMPTY_USAGE = {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}


def usage_since(ledger: Ledger, before: dict, model: str, extra: dict | None = None) -> dict:
    """Calls, tokens, list-price and paid dollars a ledger recorded since `before` (a summary()), plus
    `extra` calls and tokens recorded by an earlier process (the W4S turns replayed on a resume)."""
    now, extra = ledger.summary(), extra or {}
    d = {k: now[k] - before[k] + extra.get(k, 0) for k in ("calls", "prompt_tokens", "completion_tokens")}
    return {**d, "cost_usd": price(model, d["prompt_tokens"], d["completion_tokens"]),
            "paid_usd": now["cost_usd"] - before["cost_usd"]}


def price(model: str, prompt_tokens: int, completion_tokens: int) -> float:
    """List-price dollars of these tokens (in-process models cost 0)."""
    return 0.0 if is_local_model(model) else list_price(model, prompt_tokens, completion_tokens)


def save_workflow(out: Path, name: str, code: str, header: str) -> str:
    path = out / "workflows" / f"{name}.py"
    path.write_text(f"# {header}\n{code}")
    return str(path.relative_to(out))


def aggregate(out: Path, rows: list[dict], num_bootstrap: int) -> list[dict]:
    """One entry per (benchmark, executor, method): mean over seeds, bootstrap CI, cost per seed run. A seed
    recorded twice (two processes on one run folder) counts once: its first line."""
    groups, seen = defaultdict(list), set()
    for r in rows:
        if (key := (r["benchmark"], r["executor_model"], r["method"], r["seed"])) not in seen:
            seen.add(key)
            groups[key[:3]].append(r)
    table = []
    for (bench, executor, method), rs in groups.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        matrix = [json.loads((out / r["scores_path"]).read_text())["scores"] for r in rs]
        if len({len(m) for m in matrix}) != 1:  # cannot pair examples across seeds: CI of the first seed
            matrix = matrix[:1]
        mean, lo, hi = bootstrap_ci(np.array(matrix), num_bootstrap)
        total = {k: sum(r[k] for r in rs) for k in ("calls", "prompt_tokens", "completion_tokens", "cost_usd",
                                                    "meta_cost_usd", "test_cost_usd", "paid_usd")}
        table.append({"benchmark": bench, "executor_model": executor, "method": method, "num_seeds": len(rs),
                      "n": rs[0]["n"], "accuracy": mean, "ci_lo": lo, "ci_hi": hi, **total,
                      "cost_usd_per_run": (total["cost_usd"] + total["meta_cost_usd"]) / len(rs)})
    return table


def train_test_labels(args: Args, benchmarks: list[str]) -> dict[str, str]:
    """Per benchmark: 'seen' (trained on its validation split), 'overlap k/N' (k of its N test items share a
    question with a training item, e.g. MGSM translates GSM8K test items), or 'unseen'."""
    train = [b for b in args.train_benchmarks if b != "none"]
    if not train:
        return {name: "unseen" for name in benchmarks}
    items = [e for b in load_benchmarks(train, args.data_dir) for e in b.examples("valid")]
    labels = {}
    for name, (k, n, _) in overlap_counts(items, args.data_dir, benchmarks, args.limit_test).items():
        label = "seen" if name in train else "overlap" if k else "unseen"
        labels[name] = f"{label} ({k}/{n} test items overlap)" if k else label
    return labels


def render_table(agg: list[dict], benchmarks: list[str], meta_model: str, args_summary: str,
                 labels: dict[str, str] | None = None) -> str:
    """table.md: one table per executor, methods x benchmarks, cells 'acc ± CI ($cost)' in percent, and a
    row saying which benchmarks the meta-agent's training items had seen or overlapped."""
    lines = ["# W4S evaluation", ""]
    executors = sorted({a["executor_model"] for a in agg})
    if EMBEDDED in executors or meta_model == EMBEDDED:
        lines += ["**embedded SmolLM2-135M: NOT paper-scale numbers.** The embedded model stands in for the "
                  "executor and/or the meta-agent so that the pipeline runs offline on a CPU.", ""]
    if (Path(meta_model) / "NOT_TRAINED.txt").exists():
        lines += [f"**The meta-agent {meta_model} is the untrained base model**: its trajectories held no working "
                  f"candidate to learn from (train_rlao.py --allow-no-samples).", ""]
    lines += [f"Test accuracy (%) ± half-width of the bootstrap 95% CI, and (executor + meta-agent dollars per "
              f"run at list price, validation search included). {args_summary}", ""]
    cell = {(a["benchmark"], a["executor_model"], a["method"]): a for a in agg}
    for executor in executors:
        benches = [b for b in benchmarks if any((b, executor, m) in cell for m in METHODS)]
        lines += [f"## Executor: {executor} | meta-agent: {meta_model}", "",
                  "| method | " + " | ".join(benches) + " |", "|---" * (len(benches) + 1) + "|"]
        for method in METHODS:
            if not any((b, executor, method) in cell for b in benches):
                continue
            cells = []
            for b in benches:
                a = cell.get((b, executor, method))
                if a is None:
                    cells.append("")
                    continue
                cost = a["cost_usd_per_run"]
                dollars = f"${cost:.2f}" if cost >= 1 else f"${cost:.4f}"
                cells.append(f"{100 * a['accuracy']:.1f} ± {50 * (a['ci_hi'] - a['ci_lo']):.1f} ({dollars})")
            lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
        paper = [f"{PAPER_W4S_GPT4O_MINI[b]:.1f}" if b in PAPER_W4S_GPT4O_MINI else "" for b in benches]
        lines += ["| *paper, W4S with GPT-4o-mini (reported)* | " + " | ".join(paper) + " |"]
        if labels:
            lines += ["| *meta-agent's training vs this test split* | " + " | ".join(labels.get(b, "") for b in benches) + " |"]
        lines += [""]
        ns = ", ".join(f"{b}: {next(cell[k]['n'] for k in cell if k[0] == b and k[1] == executor)}" for b in benches)
        lines += [f"Test examples: {ns}.", ""]
    return "\n".join(lines)


def plot_results(out: Path, rows: list[dict], agg: list[dict]) -> None:
    """valid_curves.png (best-so-far validation accuracy per W4S turn) and cost_accuracy.png (test accuracy
    against dollars per run, or against executor tokens per run where every dollar figure is 0: local models).
    Accuracy axes always span 0-100 %, so small or equal numbers read as what they are."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    curves = defaultdict(list)  # benchmark -> [(label, [valid acc per turn], best-seed acc or None)]
    seed_best = {(r["benchmark"], r["executor_model"], r["seed"]): r.get("seed_valid_best") for r in rows if r["method"] == "w4s"}
    for path in sorted((out / "trajectories").glob("*.jsonl")):
        records = sorted(read_jsonl(path), key=lambda r: r["turn"])
        if records:
            r0 = records[0]
            accs = [r["candidates"][r["best"]]["valid_acc"] if r["best"] is not None else None for r in records]
            key = (r0["benchmark"], r0["executor_model"], r0["seed"])
            curves[r0["benchmark"]].append((f"{r0['executor_model']} s{r0['seed']}", accs, seed_best.get(key)))
    names = sorted(curves) or ["(no W4S episodes)"]
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        for label, accs, start in curves.get(name, []):
            best, ys = start, []  # None until a first accuracy is known: no line drawn at a made-up 0
            for acc in accs:
                if acc is not None:
                    best = acc if best is None else max(best, acc)
                ys.append(float("nan") if best is None else 100 * best)
            xs = list(range(1, len(accs) + 1))
            line, = ax.plot(([0] if start is not None else []) + xs, ([100 * start] if start is not None else []) + ys,
                            marker="o", markersize=3, label=label)
            ax.scatter([x for x, a in zip(xs, accs) if a is not None], [100 * a for a in accs if a is not None],
                       s=25, facecolors="none", edgecolors=line.get_color(), alpha=0.7)
        ax.set(title=name, xlabel="iteration (0: best seed)", ylabel="validation accuracy (%)", ylim=(-2, 102))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if curves.get(name):
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "valid_curves.png", dpi=120)
    plt.close(fig)

    benches = sorted({a["benchmark"] for a in agg}) or ["(no results)"]
    fig, axes = plt.subplots(1, len(benches), figsize=(4.5 * len(benches), 3.6), squeeze=False)
    markers = dict(zip(METHODS, "os^vDP*"))
    for ax, name in zip(axes[0], benches):
        points = [a for a in agg if a["benchmark"] == name]
        free = all(a["cost_usd_per_run"] == 0 for a in points)  # local models cost $0: plot tokens instead
        for i, a in enumerate(points):
            x = (a["prompt_tokens"] + a["completion_tokens"]) / max(1, a["num_seeds"]) if free else a["cost_usd_per_run"]
            # hollow markers of different shapes and sizes: methods on the same point stay visible
            ax.scatter(x, 100 * a["accuracy"], marker=markers[a["method"]], s=90 - 9 * i, facecolors="none",
                       edgecolors=f"C{i % 10}", linewidths=1.3, label=f"{LABELS[a['method']]} ({a['executor_model']})")
        ax.set(title=name, ylabel="test accuracy (%)", ylim=(-2, 102),
               xlabel="executor tokens per run ($0: local model)" if free else "dollars per run")
        ax.set_xlim(left=0)
        if points:
            ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "cost_accuracy.png", dpi=120)
    plt.close(fig)


def write_reports(out: Path, args: Args) -> list[dict]:
    """table.md, results.csv and the plots, from whatever lines results.jsonl holds now."""
    rows = read_jsonl(out / "results.jsonl")
    agg = aggregate(out, rows, args.num_bootstrap)
    seeds = sorted({r["seed"] for r in rows}) or args.seeds  # the table holds every line, earlier --seeds too
    summary = (f"Seeds {seeds}; W4S: {args.iterations} turns x {args.num_candidates} candidates; "
               f"validation limit {args.limit_valid or 'all'}, test limit {args.limit_test or 'all'}.")
    benchmarks = list(dict.fromkeys(args.benchmarks + [a["benchmark"] for a in agg]))
    labels = train_test_labels(args, benchmarks)
    summary += (f" Training benchmarks of the meta-agent (--train-benchmarks): {' '.join(args.train_benchmarks)}; "
                f"'overlap' counts test items whose question (or its GSM8K origin) a training item shares.")
    (out / "table.md").write_text(render_table(agg, benchmarks, args.meta_model, summary, labels))
    fields = ["benchmark", "executor_model", "method", "num_seeds", "n", "accuracy", "ci_lo", "ci_hi", "calls",
              "prompt_tokens", "completion_tokens", "cost_usd", "meta_cost_usd", "test_cost_usd", "cost_usd_per_run",
              "paid_usd"]
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(agg)
    plot_results(out, rows, agg)
    return agg


# ----------------------------------------------------------------------------------------------------
# Concurrent jobs: one request cap for all of them, each job accounting for itself

class RequestCap:
    """At most `limit` executor requests in flight across every job; a waiting request with a lower
    priority number goes first (W4S searches: the run's longest sequential chains), FIFO within one.
    With `tokens_per_minute`, a request first waits until the paid tokens of the last minute (`spend`, fed
    by every job's ledger), those of the requests in flight and its own fit under it (a request in flight
    counts as the mean paid call so far), so a run stays under its API tier instead of living on 429s.

    `slot(priority)` stands in for an LLM's endpoint slots (`with llm._slots.hold(cap)` around each
    request), so every job's requests share this one cap and its order."""

    def __init__(self, limit: int, tokens_per_minute: int = 0, clock=time.monotonic, sleep=time.sleep):
        self.limit, self.busy = limit, 0
        self.tokens_per_minute, self._clock, self._sleep = tokens_per_minute, clock, sleep
        self._lock = threading.Lock()
        self._waiting: list = []  # heap of (priority, ticket, event)
        self._tickets = itertools.count()
        self._spent: deque = deque()  # (time, tokens) of the paid calls of the last minute
        self._window = self._reserved = 0.0
        self._paid = [0, 0]  # paid calls and their tokens, for the mean a request in flight reserves

    def spend(self, rec) -> None:
        """A finished call (a ledger record): its tokens count against the minute unless the cache answered."""
        if self.tokens_per_minute and not rec.cached:
            tokens = rec.prompt_tokens + rec.completion_tokens
            with self._lock:
                self._spent.append((self._clock(), tokens))
                self._window += tokens
                self._paid = [self._paid[0] + 1, self._paid[1] + tokens]

    def take_tokens(self) -> float:
        """Wait until this request fits in the minute; reserve (and return) its expected tokens."""
        while self.tokens_per_minute:
            with self._lock:
                now = self._clock()
                while self._spent and self._spent[0][0] <= now - 60:
                    self._window -= self._spent.popleft()[1]
                expected = self._paid[1] / self._paid[0] if self._paid[0] else 1000.0
                # a request alone may pass even if it is larger than the limit: otherwise it would wait forever
                if self._window + self._reserved + expected <= self.tokens_per_minute or not (self._window or self._reserved):
                    self._reserved += expected
                    return expected
                wait = self._spent[0][0] + 60 - now if self._spent else 0.05  # the oldest call leaves the minute
            self._sleep(min(max(wait, 0.05), 1.0))
        return 0.0

    def return_tokens(self, reserved: float) -> None:
        with self._lock:
            self._reserved = max(0.0, self._reserved - reserved)

    def acquire(self, priority: int) -> None:
        with self._lock:
            if self.busy < self.limit and not self._waiting:
                self.busy += 1
                return
            event = threading.Event()
            heapq.heappush(self._waiting, (priority, next(self._tickets), event))
        event.wait()  # release() hands its slot over: busy stays as it is

    def release(self) -> None:
        with self._lock:
            if self._waiting:
                heapq.heappop(self._waiting)[2].set()
            else:
                self.busy -= 1

    def slot(self, priority: int) -> "_Slot":
        return _Slot(self, priority)


@dataclass
class _Slot:
    cap: RequestCap
    priority: int

    @contextlib.contextmanager
    def hold(self, _llm_cap: int):
        reserved = self.cap.take_tokens()
        self.cap.acquire(self.priority)
        try:
            yield
        finally:
            self.cap.release()
            self.cap.return_tokens(reserved)  # the call's own tokens arrive through spend()


class SampleShare:
    """How many samples one job's workflow runs at once: an equal share of twice the request cap among the
    jobs running now (read as an int at the start of each run).

    A sample's timeout is wall time, and that includes the time its calls wait for a request slot. With
    16 jobs of 32 samples each (512 samples) against 32 slots, each call would wait about 15 latencies, and
    a sample of 5 calls at 4 s would pass the 300 s timeout and score 0: the table would be the queue's, not
    the workflows'. With about 2 samples per slot a call waits about one latency, while the jobs keep the
    same share of the cap (the cap, not the samples in flight, bounds their throughput)."""

    def __init__(self, cap: int):
        self.cap, self.running = cap, 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def job(self):
        with self._lock:
            self.running += 1
        try:
            yield
        finally:
            with self._lock:
                self.running -= 1

    def __int__(self) -> int:
        return max(1, min(self.cap, -(-2 * self.cap // max(1, self.running))))


class JobLedger(Ledger):
    """One job's own totals (its results line), while every call still goes to the run's ledger (the
    audit log and the budget): with jobs running side by side, differences of the run's ledger would
    mix their calls."""

    def __init__(self, run_ledger: Ledger, on_record: Callable | None = None):
        super().__init__()
        self.run_ledger, self.on_record = run_ledger, on_record

    def record(self, rec) -> None:
        super().record(rec)
        self.run_ledger.record(rec)
        if self.on_record is not None:
            self.on_record(rec)

    # The run's budget is the one that counts (a hard one: calls reserve their worst case before sending).
    def check_budget(self) -> None:
        self.run_ledger.check_budget()

    def reserve(self, usd: float) -> None:
        self.run_ledger.reserve(usd)

    def release(self, usd: float) -> None:
        self.run_ledger.release(usd)


def job_llm(llm: LLM, ledger: Ledger, cap: "_Slot | None" = None) -> LLM:
    """The same model, clients, cache and flags as `llm`, accounting into `ledger`, its requests under `cap`."""
    view = copy.copy(llm)  # shallow: the client pool, the cache and an in-process model are shared
    view.ledger = ledger
    if cap is not None and not llm.local:
        view._slots = cap  # LLM._request takes `with self._slots.hold(...)` around each request
    return view


def parallel_jobs(args: Args) -> int:
    """Jobs side by side: up to --max-parallel-jobs against endpoints, but one at a time when an executor
    runs in this process. Its jobs would all queue on one model, and each sample's wall time, which the
    sample timeout bounds, would grow with their number (measured: 7 of 8 LLM-Debate samples timed out)."""
    if any(is_local_model(m, args.executor_base_url) for m in args.executor_models):
        return 1
    return args.max_parallel_jobs


def job_order(jobs: list[tuple]) -> list[tuple]:
    """Longest first (W4S, then best_seed, then the costlier baselines), so the last jobs to finish are short."""
    rank = {m: i for i, m in enumerate(("w4s", "best_seed", "llm_debate", "self_refine", "cot_sc", "cot", "vanilla"))}
    return sorted(jobs, key=lambda j: rank[j[3]])


def run_jobs(jobs: list, run_one: Callable, *, max_parallel: int, progress: bool = True) -> int:
    """Run independent jobs side by side, at most `max_parallel` at once, starting them in list order.

    The first BudgetExceeded (status 3) or LLMError (4) stops new jobs from starting; the running ones
    end on their own (finished lines are written, the others hit the same stop). Ctrl-C returns 130 at
    once. Any other error stops new jobs and is raised once the running ones have ended."""
    status, crash, pending, running = 0, None, list(jobs), {}
    bar = tqdm(total=len(jobs), desc="jobs", disable=not progress)
    pool = ThreadPoolExecutor(max_workers=max(1, max_parallel))
    try:
        while pending or running:
            while pending and len(running) < max_parallel and status == 0 and crash is None:
                job = pending.pop(0)
                running[pool.submit(run_one, job)] = job
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                running.pop(future)
                bar.update()
                try:
                    future.result()
                except BudgetExceeded as e:
                    if status == 0:
                        print(f"\nstopped cleanly: {e}\nFinished lines are kept; raise --budget-usd and rerun to go on.")
                    status = status or 3
                except LLMError as e:
                    if status == 0:
                        print(f"\nstopped: an endpoint failed: {e}\nFinished lines are kept; rerun to resume.")
                    status = status or 4
                except Exception as e:  # a bug: let the others end, then raise it
                    crash = crash or e
    except KeyboardInterrupt:
        print("\ninterrupted: finished lines are kept; rerun the same command to resume.")
        pool.shutdown(wait=False, cancel_futures=True)
        return 130
    pool.shutdown(wait=True)
    bar.close()
    if crash is not None:
        raise crash
    return status


def score_single(args: Args) -> int:
    """Single-workflow mode: score --workflow on --benchmark's --split; print a line or one JSON object."""
    bench = load_benchmarks([args.benchmark], args.data_dir)[0]
    examples = bench.examples(args.split)[: args.limit or None]
    llm = LLM(args.executor_models[0], args.executor_base_url, cache=open_cache(args.cache),
              ledger=Ledger(budget_usd=args.budget_usd), max_concurrency=args.max_concurrency,
              max_tokens=args.executor_max_tokens, json_schema=args.executor_json_schema)
    try:
        s = score_workflow(Path(args.workflow).read_text(), examples, bench, Agent(llm), args)
    except BudgetExceeded as e:
        print(f"stopped: {e}; no score was computed", file=sys.stderr)
        return 3
    except LLMError as e:
        print(f"stopped: the executor endpoint failed, so no score was computed: {e}", file=sys.stderr)
        return 4
    result = {"benchmark": bench.name, "split": args.split, "n": len(examples), "accuracy": s.accuracy,
              "calls": s.calls, "prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens,
              "cost_usd": price(llm.model, s.prompt_tokens, s.completion_tokens), "failures": s.failures}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{bench.name} {args.split} | n {len(examples)} | accuracy {s.accuracy:.4f} | calls {s.calls} | "
              f"tokens {s.prompt_tokens}+{s.completion_tokens} | ${result['cost_usd']:.4f} | failures {s.failures or 'none'} "
              f"| {s.wall_s:.0f}s")
    return 0


def print_estimate(args: Args) -> int:
    """--estimate: the run's calls, tokens, dollars and hours from its plan and the call profile."""
    profile = estimate.load_profile(args.call_profile)
    benches = dict(zip(args.benchmarks, load_benchmarks(args.benchmarks, args.data_dir)))
    sizes = {name: (len(b.examples("valid")[: args.limit_valid or None]), len(b.examples("test")[: args.limit_test or None]))
             for name, b in benches.items()}
    est = estimate.estimate_evaluate(
        sizes=sizes,
        executor_models=args.executor_models, meta_model=args.meta_model, seeds=args.seeds, methods=args.methods,
        iterations=args.iterations, num_candidates=args.num_candidates, max_concurrency=args.max_concurrency,
        latency_s=args.latency_s, meta_latency_s=args.meta_latency_s, profile=profile,
        max_parallel_jobs=args.max_parallel_jobs, tokens_per_minute=args.tokens_per_minute)
    print(estimate.format_estimate("evaluate", est, profile.get("source", "the call profile")))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(Args, argv)
    check_args(args)
    if args.workflow:
        return score_single(args)
    if args.estimate:
        return print_estimate(args)

    # --- setup: run dir, config, seed, what is already done -----------------------------------------
    out = Path(args.out_dir) if args.out_dir else Path("results") / args.run
    for sub in ("workflows", "scores", "trajectories"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in asdict(args).items() if k not in SINGLE_MODE}
    check_run_config(out / "config.json", {**config, "meta_model_weights": model_weights(args.meta_model)},
                     RESUMABLE_CHANGES)  # a checkpoint retrained in the same folder is another meta-agent
    random.seed(args.seeds[0])
    np.random.seed(args.seeds[0])
    done = {(r["benchmark"], r["executor_model"], r["method"], r["seed"]) for r in read_jsonl_or_exit(out / "results.jsonl")}
    if EMBEDDED in args.executor_models or args.meta_model == EMBEDDED:
        print("NOTE: embedded SmolLM2-135M in use: these are NOT paper-scale numbers.")
    print(f"evaluate: {out} | {len(done)} lines already done | config {json.dumps(public_config(asdict(args)))}")

    # --- build the benchmarks, executors and the meta-agent (lazily: a finished run loads no model) ---
    benches = dict(zip(args.benchmarks, load_benchmarks(args.benchmarks, args.data_dir)))
    cache = open_cache(args.cache)
    # one budget for both sides: every paid call of either reserves its worst case against the sum
    budget = Budget(args.budget_usd)
    executor_ledger = open_ledger(out / "calls.jsonl", budget=budget)
    meta_ledger = open_ledger(out / "meta_calls.jsonl", budget=budget)
    cap = RequestCap(args.max_concurrency, args.tokens_per_minute)  # one cap on executor requests for every job
    share = SampleShare(args.max_concurrency)  # ... and the samples each job runs at once
    executors: dict[str, LLM] = {}
    meta: list[LLM] = []
    test_sets: dict[str, list[dict]] = {}
    build_lock, write_lock = threading.Lock(), threading.Lock()
    max_parallel = parallel_jobs(args)
    concurrent = max_parallel > 1

    def executor_for(model: str) -> LLM:
        with build_lock:
            if model not in executors:
                executors[model] = LLM(model, args.executor_base_url, cache=cache, ledger=executor_ledger,
                                       max_concurrency=args.max_concurrency, max_tokens=args.executor_max_tokens,
                                       json_schema=args.executor_json_schema)
            return executors[model]

    def meta_llm() -> LLM:
        with build_lock:
            if not meta:
                meta.append(LLM(args.meta_model, args.meta_base_url, cache=cache, ledger=meta_ledger))
            return meta[0]

    def test_split(bench) -> list[dict]:
        # The only place test examples are read: once per benchmark, to score chosen workflows.
        with build_lock:
            if bench.name not in test_sets:
                test_sets[bench.name] = bench.examples("test")[: args.limit_test or None]
            return test_sets[bench.name]

    def run_one(job: tuple) -> None:
        with share.job():
            score_job(job)

    def score_job(job: tuple) -> None:
        """One (benchmark, executor, seed, method): its workflow(s) scored, one results.jsonl line."""
        name, model, seed, method = job
        executor_ledger.check_budget()  # the shared budget: executor + meta-agent spend
        # The job's own ledgers give its line exact figures while other jobs call the same endpoints.
        exec_jobs, meta_jobs = JobLedger(executor_ledger, on_record=cap.spend), JobLedger(meta_ledger)
        llm = job_llm(executor_for(model), exec_jobs, cap.slot(0 if method == "w4s" else 1))
        bench, agent = benches[name], Agent(llm, seed=seed)  # seeds draw their own samples
        key = f"{name}__{slug(model)}__{method}__seed{seed}"
        t0 = time.time()
        extra, replayed = {}, {}
        if method in BASELINES:
            code, header = prompts.baseline_workflows(bench.kind)[method], f"baseline {method}"
        elif method == "best_seed":
            valid = bench.examples("valid")[: args.limit_valid or None]
            seed_acc = {n: score_workflow(c, valid, bench, agent, args, share).accuracy
                        for n, c in prompts.seed_workflows(bench.kind)}
            chosen = max(seed_acc, key=seed_acc.get)  # first on ties (dicts keep order)
            code = dict(prompts.seed_workflows(bench.kind))[chosen]
            header = f"best seed {chosen!r}: valid_acc={seed_acc[chosen]:.4f}"
            extra = {"chosen": chosen, "valid_acc": seed_acc[chosen], "seed_valid": seed_acc}
        else:  # w4s: optimise on validation only, then score the chosen workflow once on test
            valid = bench.examples("valid")[: args.limit_valid or None]
            env = WorkflowEnv(description=bench.description, kind=bench.kind, valid_examples=valid,
                              score=bench.score, agent=agent, seed=seed, episode=0,
                              history_window=args.history_window, state_max_tokens=args.state_max_tokens,
                              max_repairs=args.max_repairs,
                              sample_timeout_s=args.sample_timeout_s,
                              max_concurrency=share, progress=args.progress and not concurrent)
            policy = Policy(job_llm(meta_llm(), meta_jobs), temperature=args.temperature,
                            max_new_tokens=args.max_new_tokens)
            traj_path = out / "trajectories" / f"{name}__{slug(model)}__seed{seed}.jsonl"
            done_turns = sorted(read_jsonl_or_exit(traj_path), key=lambda r: r["turn"])[: args.iterations]
            replayed = record_usage(done_turns)  # search cost of turns made before a resume
            with open(traj_path, "a") as log:
                result = run_episode(env, policy, num_turns=args.iterations, num_candidates=args.num_candidates,
                                     done=done_turns, on_record=turn_writer(log),
                                     max_parallel_candidates=args.max_parallel_candidates,
                                     record_fields={"run": args.run, "benchmark": name,
                                                    "meta_model": args.meta_model, "executor_model": model})
            code, header = result.best_code, f"w4s {result.best_name!r}: valid_acc={result.best_acc:.4f}"
            turn_accs = [r["candidates"][r["best"]]["valid_acc"] if r["best"] is not None else None
                         for r in result.records]
            extra = {"chosen": result.best_name, "valid_acc": result.best_acc, "turns": len(result.records),
                     "seed_valid": {e.name: e.valid_acc for e in env.seeds},
                     "seed_valid_best": max(e.valid_acc for e in env.seeds), "turn_valid_acc": turn_accs,
                     "trajectory": str(traj_path.relative_to(out))}
        s = score_workflow(code, test_split(bench), bench, agent, args, share)
        mean, lo, hi = bootstrap_ci(np.array([s.scores]), args.num_bootstrap)
        spent = usage_since(exec_jobs, EMPTY_USAGE, model, extra=replayed)
        meta_spent = usage_since(meta_jobs, EMPTY_USAGE, args.meta_model,
                                 extra={k[5:]: v for k, v in replayed.items() if k.startswith("meta_")})
        (out / "scores" / f"{key}.json").write_text(json.dumps(
            {"ids": [str(e.get("id")) for e in test_split(bench)], "scores": s.scores}))
        row = {"benchmark": name, "executor_model": model, "method": method, "seed": seed,
               "meta_model": args.meta_model if method == "w4s" else None, "split": "test",
               "accuracy": s.accuracy, "n": len(s.scores), "ci": [lo, hi],
               "calls": spent["calls"], "prompt_tokens": spent["prompt_tokens"],
               "completion_tokens": spent["completion_tokens"], "cost_usd": spent["cost_usd"],
               "paid_usd": spent["paid_usd"] + meta_spent["paid_usd"], "meta_calls": meta_spent["calls"],
               "meta_prompt_tokens": meta_spent["prompt_tokens"], "meta_completion_tokens": meta_spent["completion_tokens"],
               "meta_cost_usd": meta_spent["cost_usd"], "test_calls": s.calls, "test_prompt_tokens": s.prompt_tokens,
               "test_completion_tokens": s.completion_tokens,
               "test_cost_usd": price(model, s.prompt_tokens, s.completion_tokens),
               "failures": s.failures, "workflow": save_workflow(out, key, code, header),
               "scores_path": f"scores/{key}.json", "wall_s": round(time.time() - t0, 1), **extra}
        with write_lock:  # one whole line at a time: jobs finish side by side
            with open(out / "results.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
        tqdm.write(f"{name} | {model} | {method} | seed {seed} | acc {s.accuracy:.4f} [{lo:.3f}, {hi:.3f}] | "
                   f"n {len(s.scores)} | calls {spent['calls']} | ${spent['cost_usd'] + meta_spent['cost_usd']:.4f} | "
                   f"failures {s.failures or 'none'} | {row['wall_s']:.0f}s")

    # --- evaluate: benchmarks x executors x seeds x methods side by side, one results.jsonl line each --
    jobs = [(b, e, s, m) for b in args.benchmarks for e in args.executor_models for s in args.seeds
            for m in METHODS if m in args.methods]
    todo = job_order([j for j in jobs if (j[0], j[1], j[3], j[2]) not in done])
    print(f"{len(jobs)} jobs, {len(jobs) - len(todo)} skipped (done); " + (
        f"up to {max_parallel} at once under one cap of {args.max_concurrency} executor requests in flight"
        if concurrent else "one at a time" + (" (an executor runs in this process)" if args.max_parallel_jobs > 1 else "")))
    status = run_jobs(todo, run_one, max_parallel=max_parallel, progress=args.progress)
    if status == 130:
        write_lock.acquire()  # no line is half-written when the process exits (the others wait forever)

    # --- write artifacts: table, csv, plots ----------------------------------------------------------
    agg = write_reports(out, args)
    for a in agg:
        print(f"{a['benchmark']} | {a['executor_model']} | {a['method']} | acc {a['accuracy']:.4f} "
              f"[{a['ci_lo']:.3f}, {a['ci_hi']:.3f}] | seeds {a['num_seeds']} | ${a['cost_usd_per_run']:.4f}/run")
    print(f"results: {out} (table.md, results.csv, results.jsonl, valid_curves.png, cost_accuracy.png)")
    return status


if __name__ == "__main__":
    code = main()
    if code == 130:
        exit_now(code)
    sys.exit(code)

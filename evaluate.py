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
2. Jobs run one after another; the samples of one workflow run concurrently (--max-concurrency).
3. --seeds vary everything sampled: the meta-agent's actions, the feedback's failure cases and the
   executor's samples (the seed is part of every executor call's cache key), so the CI over seeds covers
   run-to-run variation of baselines and W4S alike. Seed 0 is the default stream, shared with
   collect.py and every run that sets no seed, so what was computed there is served from the cache.

Resume: rerun the same command. Finished lines are skipped, a W4S episode continues from its trajectory
file, and the response cache replays every call already made. Ctrl-C or --budget-usd stops cleanly and the
table is written from the lines finished so far.

    python evaluate.py --run smoke --benchmarks gsm8k --iterations 2 --limit-valid 16 --limit-test 32 \
        --max-new-tokens 512 --executor-max-tokens 256        # CPU, embedded SmolLM2 (not paper numbers)
    python evaluate.py --run w4s --meta-model checkpoints/w4s --executor-models gpt-4o-mini \
        --seeds 0 1 2 --budget-usd 300                        # paper scale, all eleven benchmarks
    python evaluate.py --workflow my_solver.py --benchmark gsm8k --split valid --limit 50 --json
"""
from __future__ import annotations

import csv
import json
import os
import random
import re
import sys
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

import prompts
import sandbox
from benchmarks import BENCHMARKS, load_benchmark
from executor import (EMBEDDED, LLM, Agent, BudgetExceeded, Ledger, LLMError, ResponseCache, cost_usd as list_price,
                      is_local_model, parse_args)
from meta_agent import Policy, WorkflowEnv, check_run_config, read_jsonl, run_episode, solver_inputs

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
    max_repairs: int = field(default=3, metadata={"help": "repairs asked for a failing W4S candidate (paper: 3)"})
    sample_timeout_s: float = field(default=300.0, metadata={"help": "time limit per sample of a workflow"})
    max_concurrency: int = field(default=32, metadata={"help": "concurrent executor requests / samples"})
    max_parallel_candidates: int = field(default=4, metadata={"help": "W4S candidates of a turn evaluated at once"})
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


# Flags that may change between a run and its resume: they do not change what a finished line means.
RESUMABLE_CHANGES = {"benchmarks", "executor_models", "methods", "seeds", "budget_usd", "max_concurrency",
                     "max_parallel_candidates", "progress", "num_bootstrap", "executor_base_url", "meta_base_url"}
SINGLE_MODE = {"workflow", "benchmark", "split", "limit", "json"}


def check_args(args: Args) -> None:
    """Fail before any model loads on unknown names and incompatible flags."""
    names = [args.benchmark] if args.workflow else args.benchmarks
    bad = [b for b in names if b not in BENCHMARKS]
    if args.workflow and not args.benchmark:
        sys.exit("error: --workflow needs --benchmark NAME")
    if bad:
        sys.exit(f"error: unknown benchmark(s) {bad}; choose from {list(BENCHMARKS)}")
    if unknown := [m for m in args.methods if m not in METHODS]:
        sys.exit(f"error: unknown method(s) {unknown} in --methods; choose from {list(METHODS)}")
    if args.iterations < 0 or args.num_candidates < 1 or not args.seeds or not args.executor_models:
        sys.exit("error: --iterations >= 0, --num-candidates >= 1, and at least one --seeds and --executor-models")


def slug(text: str) -> str:
    """A file-name-safe form of a model name or path ('checkpoints/w4s' -> 'checkpoints_w4s')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


@dataclass
class Scored:
    """A workflow scored on a list of examples: per-example scores and what the executor spent."""
    accuracy: float
    scores: list[float]
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    failures: dict[str, int]
    wall_s: float


def score_workflow(code: str, examples: list[dict], bench, agent: Agent, args: Args) -> Scored:
    """Run `code` on `examples` in the sandbox (the workflow sees only solver_inputs) and score it."""
    t0 = time.time()
    run = sandbox.run_workflow(code, [solver_inputs(e) for e in examples], agent,
                               sample_timeout_s=args.sample_timeout_s, max_concurrency=args.max_concurrency)
    # A budget stop or a dead endpoint aborts the job; it must not be recorded as a bad workflow.
    if agent.llm.ledger is not None:
        agent.llm.ledger.check_budget()
    errors = [s.error or "" for s in run.samples]
    if errors and all("LLMError" in e or "BudgetExceeded" in e for e in errors):
        raise LLMError(f"every sample failed on an executor call; the first error: {errors[0][-500:]}")
    scores = [0.0 if s.error is not None else float(bench.score(s.answer, e)) for s, e in zip(run.samples, examples)]
    failures = Counter(s.reason or run.reason or "runtime_error" for s in run.samples if s.error is not None)
    if len(scores) < len(examples):  # the whole child failed before returning every sample
        failures[run.reason or "crash"] += len(examples) - len(scores)
        scores += [0.0] * (len(examples) - len(scores))
    return Scored(accuracy=sum(scores) / len(scores) if scores else 0.0, scores=scores,
                  calls=sum(s.calls for s in run.samples), prompt_tokens=sum(s.prompt_tokens for s in run.samples),
                  completion_tokens=sum(s.completion_tokens for s in run.samples),
                  cost_usd=sum(s.cost_usd for s in run.samples), failures=dict(failures), wall_s=time.time() - t0)


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


def usage_since(ledger: Ledger, before: dict, model: str) -> dict:
    """Calls, tokens, list-price and paid dollars a ledger recorded since `before` (a summary())."""
    now = ledger.summary()
    d = {k: now[k] - before[k] for k in ("calls", "prompt_tokens", "completion_tokens")}
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
    """One entry per (benchmark, executor, method): mean over seeds, bootstrap CI, cost per seed run."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["benchmark"], r["executor_model"], r["method"])].append(r)
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


def render_table(agg: list[dict], benchmarks: list[str], meta_model: str, args_summary: str) -> str:
    """table.md: one table per executor, methods x benchmarks, cells 'acc ± CI ($cost)' in percent."""
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
        lines += ["| *paper, W4S with GPT-4o-mini (reported)* | " + " | ".join(paper) + " |", ""]
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
    summary = (f"Seeds {args.seeds}; W4S: {args.iterations} turns x {args.num_candidates} candidates; "
               f"validation limit {args.limit_valid or 'all'}, test limit {args.limit_test or 'all'}.")
    benchmarks = list(dict.fromkeys(args.benchmarks + [a["benchmark"] for a in agg]))
    (out / "table.md").write_text(render_table(agg, benchmarks, args.meta_model, summary))
    fields = ["benchmark", "executor_model", "method", "num_seeds", "n", "accuracy", "ci_lo", "ci_hi", "calls",
              "prompt_tokens", "completion_tokens", "cost_usd", "meta_cost_usd", "test_cost_usd", "cost_usd_per_run",
              "paid_usd"]
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(agg)
    plot_results(out, rows, agg)
    return agg


def score_single(args: Args) -> int:
    """Single-workflow mode: score --workflow on --benchmark's --split; print a line or one JSON object."""
    bench = load_benchmark(args.benchmark, args.data_dir)
    examples = bench.examples(args.split)[: args.limit or None]
    llm = LLM(args.executor_models[0], args.executor_base_url, cache=ResponseCache("cache/llm.sqlite") if args.cache else None,
              ledger=Ledger(budget_usd=args.budget_usd), max_concurrency=args.max_concurrency,
              max_tokens=args.executor_max_tokens,
              json_schema=args.executor_json_schema)
    s = score_workflow(Path(args.workflow).read_text(), examples, bench, Agent(llm), args)
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(Args, argv)
    check_args(args)
    if args.workflow:
        return score_single(args)

    # --- setup: run dir, config, seed, what is already done -----------------------------------------
    out = Path(args.out_dir) if args.out_dir else Path("results") / args.run
    for sub in ("workflows", "scores", "trajectories"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    check_run_config(out / "config.json", {k: v for k, v in asdict(args).items() if k not in SINGLE_MODE},
                     RESUMABLE_CHANGES)
    random.seed(args.seeds[0])
    np.random.seed(args.seeds[0])
    done = {(r["benchmark"], r["executor_model"], r["method"], r["seed"]) for r in read_jsonl(out / "results.jsonl")}
    if EMBEDDED in args.executor_models or args.meta_model == EMBEDDED:
        print("NOTE: embedded SmolLM2-135M in use: these are NOT paper-scale numbers.")
    print(f"evaluate: {out} | {len(done)} lines already done | config {json.dumps(asdict(args))}")

    # --- build the benchmarks, executors and the meta-agent (lazily: a finished run loads no model) ---
    benches = {name: load_benchmark(name, args.data_dir) for name in args.benchmarks}
    cache = ResponseCache("cache/llm.sqlite") if args.cache else None
    executor_ledger = Ledger(out / "calls.jsonl", budget_usd=args.budget_usd)
    meta_ledger = Ledger(out / "meta_calls.jsonl", budget_usd=args.budget_usd)
    executors: dict[str, LLM] = {}
    policy: list[Policy] = []
    test_sets: dict[str, list[dict]] = {}

    def executor_for(model: str) -> LLM:
        if model not in executors:
            executors[model] = LLM(model, args.executor_base_url, cache=cache, ledger=executor_ledger,
                                   max_concurrency=args.max_concurrency, max_tokens=args.executor_max_tokens,
                                   json_schema=args.executor_json_schema)
        return executors[model]

    def meta_policy() -> Policy:
        if not policy:
            policy.append(Policy(LLM(args.meta_model, args.meta_base_url, cache=cache, ledger=meta_ledger),
                                 temperature=args.temperature, max_new_tokens=args.max_new_tokens))
        return policy[0]

    def test_split(bench) -> list[dict]:
        # The only place test examples are read: once per benchmark, to score chosen workflows.
        if bench.name not in test_sets:
            test_sets[bench.name] = bench.examples("test")[: args.limit_test or None]
        return test_sets[bench.name]

    def check_budget() -> None:
        # One budget for both sides: each ledger may spend what the other has left of it.
        if args.budget_usd is None:
            return
        exec_spent, meta_spent = executor_ledger.summary()["cost_usd"], meta_ledger.summary()["cost_usd"]
        if exec_spent + meta_spent >= args.budget_usd:
            raise BudgetExceeded(f"executor + meta-agent spend ${exec_spent + meta_spent:.4f} reached "
                                 f"--budget-usd {args.budget_usd}")
        executor_ledger.budget_usd = args.budget_usd - meta_spent
        meta_ledger.budget_usd = args.budget_usd - exec_spent

    # --- evaluate: benchmarks x executors x seeds x methods, one results.jsonl line each -------------
    jobs = [(b, e, s, m) for b in args.benchmarks for e in args.executor_models for s in args.seeds
            for m in METHODS if m in args.methods]
    todo = [j for j in jobs if (j[0], j[1], j[3], j[2]) not in done]
    print(f"{len(jobs)} jobs, {len(jobs) - len(todo)} skipped (done)")
    status = 0
    try:
        for name, model, seed, method in tqdm(todo, desc="jobs", disable=not args.progress):
            check_budget()
            bench, agent = benches[name], Agent(executor_for(model), seed=seed)  # seeds draw their own samples
            key = f"{name}__{slug(model)}__{method}__seed{seed}"
            before_exec, before_meta, t0 = executor_ledger.summary(), meta_ledger.summary(), time.time()
            extra: dict = {}
            if method in BASELINES:
                code, header = prompts.baseline_workflows(bench.kind)[method], f"baseline {method}"
            elif method == "best_seed":
                valid = bench.examples("valid")[: args.limit_valid or None]
                seed_acc = {n: score_workflow(c, valid, bench, agent, args).accuracy for n, c in prompts.seed_workflows(bench.kind)}
                chosen = max(seed_acc, key=seed_acc.get)  # first on ties (dicts keep order)
                code = dict(prompts.seed_workflows(bench.kind))[chosen]
                header = f"best seed {chosen!r}: valid_acc={seed_acc[chosen]:.4f}"
                extra = {"chosen": chosen, "valid_acc": seed_acc[chosen], "seed_valid": seed_acc}
            else:  # w4s: optimise on validation only, then score the chosen workflow once on test
                valid = bench.examples("valid")[: args.limit_valid or None]
                env = WorkflowEnv(description=bench.description, kind=bench.kind, valid_examples=valid,
                                  score=bench.score, agent=agent, seed=seed, episode=0,
                                  history_window=args.history_window, max_repairs=args.max_repairs,
                                  sample_timeout_s=args.sample_timeout_s,
                                  max_concurrency=args.max_concurrency, progress=args.progress)
                traj_path = out / "trajectories" / f"{name}__{slug(model)}__seed{seed}.jsonl"
                done_turns = sorted(read_jsonl(traj_path), key=lambda r: r["turn"])[: args.iterations]
                with open(traj_path, "a") as log:
                    def on_record(record: dict) -> None:
                        log.write(json.dumps(record) + "\n")
                        log.flush()
                    result = run_episode(env, meta_policy(), num_turns=args.iterations,
                                         num_candidates=args.num_candidates, done=done_turns, on_record=on_record,
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
            s = score_workflow(code, test_split(bench), bench, agent, args)
            mean, lo, hi = bootstrap_ci(np.array([s.scores]), args.num_bootstrap)
            spent = usage_since(executor_ledger, before_exec, model)
            meta = usage_since(meta_ledger, before_meta, args.meta_model)
            (out / "scores" / f"{key}.json").write_text(json.dumps(
                {"ids": [str(e.get("id")) for e in test_split(bench)], "scores": s.scores}))
            row = {"benchmark": name, "executor_model": model, "method": method, "seed": seed,
                   "meta_model": args.meta_model if method == "w4s" else None, "split": "test",
                   "accuracy": s.accuracy, "n": len(s.scores), "ci": [lo, hi],
                   "calls": spent["calls"], "prompt_tokens": spent["prompt_tokens"],
                   "completion_tokens": spent["completion_tokens"], "cost_usd": spent["cost_usd"],
                   "paid_usd": spent["paid_usd"] + meta["paid_usd"], "meta_calls": meta["calls"],
                   "meta_prompt_tokens": meta["prompt_tokens"], "meta_completion_tokens": meta["completion_tokens"],
                   "meta_cost_usd": meta["cost_usd"], "test_calls": s.calls, "test_prompt_tokens": s.prompt_tokens,
                   "test_completion_tokens": s.completion_tokens,
                   "test_cost_usd": price(model, s.prompt_tokens, s.completion_tokens),
                   "failures": s.failures, "workflow": save_workflow(out, key, code, header),
                   "scores_path": f"scores/{key}.json", "wall_s": round(time.time() - t0, 1), **extra}
            with open(out / "results.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            tqdm.write(f"{name} | {model} | {method} | seed {seed} | acc {s.accuracy:.4f} [{lo:.3f}, {hi:.3f}] | "
                       f"n {len(s.scores)} | calls {spent['calls']} | ${spent['cost_usd'] + meta['cost_usd']:.4f} | "
                       f"failures {s.failures or 'none'} | {row['wall_s']:.0f}s")
    except BudgetExceeded as e:
        print(f"\nstopped cleanly: {e}\nFinished lines are kept; raise --budget-usd and rerun to go on.")
        status = 3
    except LLMError as e:
        print(f"\nstopped: an endpoint failed: {e}\nFinished lines are kept; rerun to resume.")
        status = 4
    except KeyboardInterrupt:
        print("\ninterrupted: finished lines are kept; rerun the same command to resume.")
        status = 130

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
        # After Ctrl-C, workflow threads still in flight would keep the interpreter alive until they finish.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)

"""Rehearse the paper run on this machine against the SIMULATED endpoint (bench/sim_server.py).

The paper recipe unchanged but for the endpoints: collection 4 episodes x 10 turns x 5 candidates on
MGSM and GSM-Plus validation (gpt-3.5-turbo), training replaced by `train_rlao.py --dry-run`, evaluation
of all eleven benchmarks x 7 methods at full test size with W4S 30 iterations, one seed (gpt-4o-mini).
The stages run as the real scripts in subprocesses, through the real openai client; the evaluation is
killed once (SIGKILL) mid-run and resumed. Per stage it prints and writes (<out>/rehearsal.json):
executor and meta-agent calls (all / paid), prompt and completion tokens, list-price dollars, wall
time, wall time projected at real latency, peak memory, disk, the largest state in tokens, failures by
reason; then estimate vs measured (goal: within 25% on paid calls and dollars) and the evaluation wall
time against its floor max(paid calls x mean latency / cap, longest chain) (goal: within 1.5x).

    python bench/rehearse.py --data-dir ../shared/data --fraction 0.05     # a quick look (minutes)
    python bench/rehearse.py --data-dir ../shared/data                     # the full shape
    python bench/rehearse.py ... --write-profile   # also update call_profile.json (used by --estimate)
    python bench/rehearse.py --data-dir ../shared/data --recheck DIR --call-profile P.json
                                                   # P's estimate against a finished rehearsal DIR

The profile is measured from the stages' own records (trajectories, audit logs, results lines): per
benchmark and workflow the calls and tokens per sample, the self-check samples and cache hits of a
candidate, per-turn drift factors, the validation size (see estimate.py). The search's drift depends
on how many validation examples it selects on, so a profile from --fraction 0.05 (7 examples) prices a
full-shape run low; from 0.1 or more it is within ~10-17% (README, Rehearsal).

--fraction f < 1 caps every benchmark at ceil(f x 128) validation and ceil(f x 800) test examples
(the common split sizes); turns, candidates, episodes and iterations stay at the paper's values.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import estimate  # noqa: E402
from benchmarks import BENCHMARKS, load_benchmark  # noqa: E402
from evaluate import METHODS  # noqa: E402
import prompts  # noqa: E402
from estimate import KINDS  # noqa: E402
from executor import cost_usd, read_jsonl  # noqa: E402
from meta_agent import extract_solver_code, static_check  # noqa: E402
from sim_server import QuestionIndex, SimConfig, Simulator, SimServer, tokens  # noqa: E402

COLLECT_MODEL, EVAL_MODEL, META_MODEL = "gpt-3.5-turbo", "gpt-4o-mini", "sim-meta-7b"
TRAIN_BENCHMARKS = ["mgsm", "gsm_plus"]


def run_stage(cmd: list[str], cwd: Path, log: Path, kill_when=None) -> dict:
    """Run one stage script; poll the process tree's memory; SIGKILL it once kill_when() is true."""
    t0, peak, killed = time.time(), 0, None
    with open(log, "a") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        ps = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                rss = sum(p.memory_info().rss for p in [ps, *ps.children(recursive=True)])
                peak = max(peak, rss)
            except psutil.Error:
                pass
            if kill_when is not None and killed is None and kill_when():
                killed = time.time()
                os.killpg(proc.pid, signal.SIGKILL)
            time.sleep(0.5)
    return {"rc": proc.returncode, "wall_s": round(time.time() - t0, 1), "peak_rss_mb": round(peak / 2**20),
            "killed_at": killed}


def ledger(path: Path, model: str) -> dict:
    """Calls of an audit log: all, paid (not cached), errors, tokens, list-price dollars."""
    rows = read_jsonl(path, cut_torn_tail=False)  # a run killed mid-write leaves a torn last line
    paid = [r for r in rows if not r.get("cached")]
    p, c = sum(r["prompt_tokens"] for r in rows), sum(r["completion_tokens"] for r in rows)
    pp, pc = sum(r["prompt_tokens"] for r in paid), sum(r["completion_tokens"] for r in paid)
    return {"model": model, "calls": len(rows), "paid_calls": len(paid), "errors": sum(bool(r.get("error")) for r in rows),
            "prompt_tokens": p, "completion_tokens": c, "paid_prompt_tokens": pp, "paid_completion_tokens": pc,
            "cost_usd": round(cost_usd(model, p, c), 4),
            # what was paid: a call partly answered by the cache pays only its new samples (its row's cost)
            "paid_usd": round(sum(r.get("cost_usd", 0.0) for r in paid), 4)}


def du_mb(*paths: Path) -> float:
    return round(sum(f.stat().st_size for p in paths if p.exists() for f in p.rglob("*") if f.is_file()) / 2**20, 1)


def largest_state(paths: list[Path]) -> int:
    best = 0
    for path in paths:
        for line in open(path) if path.exists() else []:
            record = json.loads(line)
            best = max(best, sum(tokens(m["content"]) + 4 for m in record["state"]))
    return best


def sim_delta(after: dict, before: dict, model: str) -> dict:
    a, b = after.get(model, {}), before.get(model, {})
    return {k: a.get(k, 0) - b.get(k, 0) for k in set(a) | set(b)}


def projected(stage: dict, sim: dict, cap: int, time_scale: float, chain_real_s: float) -> dict:
    """Wall time at real latency: the measured wall scaled back, and the floor at the cap."""
    requests = sim.get("requests", 0)
    mean_latency = sim.get("sim_latency_ms", 0) / 1000 / max(requests, 1)
    api_s = requests * mean_latency / cap
    return {"scaled_back_h": round(stage["wall_s"] / time_scale / 3600, 2),
            "floor_h": round(max(api_s, chain_real_s) / 3600, 2), "api_bound_h": round(api_s / 3600, 2),
            "chain_h": round(chain_real_s / 3600, 2), "mean_real_latency_s": round(mean_latency, 2)}


# ----------------------------------------------------------------------------------------------------
# The per-sample call profile (what --estimate multiplies the plan by), measured from the stages' outputs

def checks_run(candidate: dict) -> int:
    """Self-check samples a candidate ran: one per attempt whose code got past the static check (an action
    with no code block, or code that does not parse, is turned down before any call)."""
    return sum(1 for action in candidate["attempts"]
               if (code := extract_solver_code(action)) is not None and static_check(code) is None)


def _usage(c: dict) -> list[float]:
    return [c["calls"], c.get("prompt_tokens", 0), c.get("completion_tokens", 0)]


def _samples(c: dict, n_valid: int) -> int:
    return checks_run(c) + (c["valid_acc"] is not None) * n_valid


def search_units(records: list[dict], n_valid: int, model: str) -> dict:
    """Per workflow sample the candidates of these turns ran: calls and tokens; how many candidates are
    scored on the whole split (pass_rate), how many self-check samples each runs (checks), and how many of
    its samples the cache answered besides the replayed self-check (cached: a candidate that repeats
    requests of an earlier one), from what each paid (its cost_usd) against its tokens at list price."""
    cands = [c for r in records for c in r["candidates"]]
    samples = max(sum(_samples(c, n_valid) for c in cands), 1)
    cached = 0.0
    for c in cands:
        k, listed = _samples(c, n_valid), cost_usd(model, c.get("prompt_tokens", 0), c.get("completion_tokens", 0))
        if k and listed > 0:
            cached += max(k - (c["valid_acc"] is not None) - c.get("cost_usd", 0.0) / (listed / k), 0.0)
    return {"sample": [sum(_usage(c)[i] for c in cands) / samples for i in range(3)],
            "pass_rate": sum(c["valid_acc"] is not None for c in cands) / max(len(cands), 1),
            "checks": sum(checks_run(c) for c in cands) / max(len(cands), 1),
            "cached": cached / max(len(cands), 1)}


def meta_unit(records: list[dict], num_candidates: int) -> list[float]:
    """Meta-agent calls and tokens per turn per candidate (actions and repairs)."""
    usage = [r.get("meta_usage") or {} for r in records]
    turns = max(len(records) * num_candidates, 1)
    return [sum(u.get(k, 0) for u in usage) / turns for k in ("calls", "prompt_tokens", "completion_tokens")]


def turn_scales(searches: list[tuple[list[dict], int, dict]], num_candidates: int) -> dict:
    """Per turn, what the turn's candidates used over what their benchmark's per-sample (and meta-agent)
    means predict, pooled over benchmarks: searches holds (records, n_valid, that benchmark's profile)."""
    out = {"sample": [], "meta": []}
    for turn in range(max((r["turn"] for recs, _, _ in searches for r in recs), default=-1) + 1):
        got, want, meta_got, meta_want = [0.0] * 3, [0.0] * 3, [0.0] * 3, [0.0] * 3
        for records, n_valid, p in searches:
            for r in (r for r in records if r["turn"] == turn):
                for c in r["candidates"]:
                    k = _samples(c, n_valid)
                    got = [g + u for g, u in zip(got, _usage(c))]
                    want = [w + k * u for w, u in zip(want, p["search"]["sample"])]
                meta = [r.get("meta_usage", {}).get(k, 0) for k in ("calls", "prompt_tokens", "completion_tokens")]
                meta_got = [g + u for g, u in zip(meta_got, meta)]
                meta_want = [w + num_candidates * u for w, u in zip(meta_want, p["meta"])]
        out["sample"].append([round(g / w, 4) if w else 1.0 for g, w in zip(got, want)])
        out["meta"].append([round(g / w, 4) if w else 1.0 for g, w in zip(meta_got, meta_want)])
    return out


def eval_profile(results: Path, sizes: dict[str, tuple[int, int]], iterations: int, num_candidates: int) -> tuple[dict, dict]:
    """Per benchmark the evaluation's per-example counts; and the W4S searches' per-turn factors."""
    rows = [json.loads(line) for line in open(results / "results.jsonl")]
    by = {(r["benchmark"], r["method"]): r for r in rows}
    out, searches = {}, []
    for bench, (n_valid, n_test) in sizes.items():
        if (bench, "best_seed") not in by or (bench, "w4s") not in by:
            continue
        test = {m: [r["test_calls"] / r["n"], r["test_prompt_tokens"] / r["n"], r["test_completion_tokens"] / r["n"]]
                for (b, m), r in by.items() if b == bench}
        bs, w = by[(bench, "best_seed")], by[(bench, "w4s")]
        seeds = [(bs[k] - bs["test_" + k]) / n_valid for k in ("calls", "prompt_tokens", "completion_tokens")]
        records = [json.loads(line) for line in open(results / w["trajectory"])]
        baselines = set(prompts.baseline_workflows(KINDS[bench]).values())
        code = {m: (results / r["workflow"]).read_text().split("\n", 1)[1] for m, r in (("best_seed", bs), ("w4s", w))}
        # a chosen workflow that is a baseline's code (or, for W4S, the best seed's) makes that job's test
        # requests again: cache hits
        same = {"best_seed": float(code["best_seed"] in baselines),
                "w4s": float(code["w4s"] in baselines or code["w4s"] == code["best_seed"])}
        out[bench] = {"test": test, "seeds_valid": seeds, "search": search_units(records, n_valid, EVAL_MODEL),
                      "meta": meta_unit(records, num_candidates), "test_cached": same, "n_valid": n_valid}
        searches.append((records, n_valid, out[bench]))
    return out, turn_scales(searches, num_candidates)


def collect_profile(run: Path, sizes: dict[str, int], num_candidates: int) -> tuple[dict, dict]:
    """Per benchmark the collection's per-sample counts; and the searches' per-turn factors. The seeds'
    pass is what the audit log holds beyond the candidates (every episode re-scores them, from the cache
    after the first), per validation example of every episode."""
    records = [json.loads(line) for line in open(run / "trajectories.jsonl")]
    rows = [json.loads(line) for line in open(run / "calls.jsonl")]
    logged = [len(rows), sum(r["prompt_tokens"] for r in rows), sum(r["completion_tokens"] for r in rows)]
    in_candidates = [sum(_usage(c)[i] for r in records for c in r["candidates"]) for i in range(3)]
    episodes = {(r["benchmark"], r["episode"]) for r in records}
    examples = max(sum(sizes.get(b, 0) for b, _ in episodes), 1)
    seeds = [max(a - b, 0.0) / examples for a, b in zip(logged, in_candidates)]
    out, searches = {}, []
    for bench, n_valid in sizes.items():
        mine = [r for r in records if r["benchmark"] == bench]
        if not mine:
            continue
        out[bench] = {"search": search_units(mine, n_valid, COLLECT_MODEL), "seeds_valid": seeds,
                      "meta": meta_unit(mine, num_candidates), "n_valid": n_valid}
        searches.append((mine, n_valid, out[bench]))
    return out, turn_scales(searches, num_candidates)


def build_profile(out: Path, source: str, sizes: dict[str, tuple[int, int]], stages=("collect", "evaluate")) -> dict:
    """The call profile a finished rehearsal folder measured (what --write-profile writes)."""
    table = {"version": estimate.PROFILE_VERSION, "source": source}
    if "evaluate" in stages:
        table["evaluate_num_candidates"] = 1
        table["evaluate"], table["evaluate_turns"] = eval_profile(out / "results" / "rehearse", sizes, 30, 1)
    if "collect" in stages:
        table["collect_num_candidates"] = 5
        table["collect"], table["collect_turns"] = collect_profile(
            out / "runs" / "rehearse", {b: sizes[b][0] for b in TRAIN_BENCHMARKS}, 5)
    return table


def compare(est: dict, measured: dict) -> dict:
    """Estimate / measured for paid calls and paid dollars of the executor (and meta-agent calls)."""
    out = {}
    for key in ("executor", "meta"):
        e, m = est.get(key, {}), measured[key]
        out[key] = {"est_paid_calls": round(e.get("paid_calls", 0)), "paid_calls": m["paid_calls"],
                    "calls_ratio": round(e.get("paid_calls", 0) / max(m["paid_calls"], 1), 3)}
        if key == "executor":
            out[key].update(est_paid_usd=round(e.get("paid_usd", 0), 4), paid_usd=m["paid_usd"],
                            usd_ratio=round(e.get("paid_usd", 0) / max(m["paid_usd"], 1e-9), 3))
    return out


# ----------------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None, help="an empty work folder for the stages' runs/, results/, cache/ "
                   "(default rehearsal/<date-time>)")
    p.add_argument("--fraction", type=float, default=1.0, help="share of the split sizes (1: the full shape)")
    p.add_argument("--time-scale", type=float, default=0.05, help="sleep this share of the simulated latency")
    p.add_argument("--max-concurrency", type=int, default=32, help="requests in flight (the API cap)")
    p.add_argument("--fault-429", type=float, default=0.01)
    p.add_argument("--fault-500", type=float, default=0.005)
    p.add_argument("--slow", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0, help="the simulator's seed")
    p.add_argument("--kill-after-lines", type=float, default=0.4, help="kill the evaluation once this share of its lines is written")
    p.add_argument("--skip-collect", action="store_true", help="only the evaluation")
    p.add_argument("--skip-evaluate", action="store_true", help="only the collection (no training, no evaluation)")
    p.add_argument("--write-profile", action="store_true", help="write the measured profile to call_profile.json")
    p.add_argument("--call-profile", default=str(estimate.PROFILE_PATH), help="the profile whose estimate is "
                   "compared with what the rehearsal measured (default call_profile.json)")
    p.add_argument("--recheck", default=None, help="a finished rehearsal folder: rebuild its profile and compare "
                   "call_profile.json's estimate with what it measured, nothing run")
    a = p.parse_args(argv)
    if a.recheck:
        return recheck(Path(a.recheck), a)
    if a.data_dir:  # the stages run in the work folder
        a.data_dir = str(Path(a.data_dir).resolve())

    out = Path(a.out or f"rehearsal/{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    if out.exists() and any(out.iterdir()):  # a rehearsal starts from nothing: its own runs, results, cache
        sys.exit(f"error: {out} is not empty; pass another --out (nothing is deleted)")
    out.mkdir(parents=True, exist_ok=True)
    small = a.fraction < 1
    limit_valid = math.ceil(a.fraction * 128) if small else 0
    limit_test = math.ceil(a.fraction * 800) if small else 0
    valid_n, test_n = plan_sizes(limit_valid, limit_test, a.data_dir)
    profile = None
    if Path(a.call_profile).exists():
        try:
            profile = estimate.load_profile(a.call_profile)
        except SystemExit as e:  # an older format: the rehearsal measures a new one, compared with nothing
            print(f"note: {str(e).removeprefix('error: ')}; no estimate to compare with", flush=True)
    col_est, ev_est = estimates(valid_n, test_n, profile, a.max_concurrency) if profile else (None, None)
    source = f"bench/rehearse.py --fraction {a.fraction} (simulated endpoints, seed {a.seed})"
    cfg = SimConfig(seed=a.seed, time_scale=a.time_scale, fault_429=a.fault_429, fault_500=a.fault_500, slow=a.slow)
    sim = Simulator(QuestionIndex(a.data_dir, seed=a.seed), cfg)
    py, data = sys.executable, ["--data-dir", a.data_dir] if a.data_dir else []
    report: dict = {"shape": {"fraction": a.fraction, "limit_valid": limit_valid, "limit_test": limit_test,
                              "time_scale": a.time_scale, "max_concurrency": a.max_concurrency,
                              "faults": {"429": a.fault_429, "500": a.fault_500, "slow": a.slow}}}
    print(f"rehearsal: {out} | fraction {a.fraction} (valid <= {limit_valid or 'all'}, test <= {limit_test or 'all'}) | "
          f"time scale {a.time_scale} | cap {a.max_concurrency}", flush=True)

    # Two ports of one simulator: the executor (an API) and the meta-agent (a vLLM server) are separate
    # endpoints in a real run, each with its own cap on requests in flight.
    with SimServer(sim) as srv, SimServer(sim) as meta_srv:
        common = ["--executor-base-url", srv.base_url, "--meta-base-url", meta_srv.base_url, "--meta-model", META_MODEL,
                  "--max-concurrency", str(a.max_concurrency), "--no-progress", *data,
                  # the sample timeout is scaled like latency (the CPU is not: at least 10 s), so samples that
                  # would wait past 300 s in the request queue at real latency time out here too
                  "--sample-timeout-s", f"{max(10.0, 300 * a.time_scale):g}"]
        # ---------------------------------------------------------------- collect
        if not a.skip_collect:
            cmd = [py, str(ROOT / "collect.py"), "--run", "rehearse", "--benchmarks", *TRAIN_BENCHMARKS,
                   "--num-episodes", "4", "--num-turns", "10", "--num-candidates", "5", "--executor-model", COLLECT_MODEL,
                   "--budget-usd", "150", "--limit-valid", str(limit_valid), *common]
            est = col_est
            before = sim.stats.summary()
            stage = run_stage(cmd, out, out / "collect.log")
            run = out / "runs" / "rehearse"
            report["collect"] = stage_report(stage, run / "calls.jsonl", run / "meta_calls.jsonl", COLLECT_MODEL,
                                             sim, before, a, [run / "trajectories.jsonl"], [run, out / "cache"])
            c_sim, c_meta = report["collect"]["sim_executor"], report["collect"]["sim_meta"]
            c_lat = c_sim.get("sim_latency_ms", 0) / 1000 / max(c_sim.get("requests", 1), 1)
            c_meta_lat = c_meta.get("sim_latency_ms", 0) / 1000 / max(c_meta.get("requests", 1), 1)
            measured_collect, collect_turns = collect_profile(run, {b: valid_n[b] for b in TRAIN_BENCHMARKS}, 5)
            c_chain = estimate.estimate_collect(
                sizes={b: valid_n[b] for b in TRAIN_BENCHMARKS}, executor_model=COLLECT_MODEL, meta_model=META_MODEL,
                num_episodes=4, num_turns=10, num_candidates=5, max_concurrency=a.max_concurrency, latency_s=c_lat,
                meta_latency_s=c_meta_lat, profile={"collect": measured_collect, "collect_turns": collect_turns})["chain_hours"] * 3600
            report["collect"]["projected"] = projected(stage, c_sim, a.max_concurrency, a.time_scale, c_chain)
            summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
            report["collect"]["failures"] = summary.get("failed_by_reason", {})
            if est:
                report["collect"]["estimate_vs_measured"] = compare(est, report["collect"])
            print_stage("collect", report["collect"])
            (out / "rehearsal.json").write_text(json.dumps(report, indent=2))  # each stage as it ends
            if a.skip_evaluate:  # the collection's profile alone (--estimate needs both: not written)
                table = build_profile(out, source, {b: (valid_n[b], test_n[b]) for b in BENCHMARKS}, ["collect"])
                (out / "call_profile.json").write_text(json.dumps(table, indent=1))
                (out / "rehearsal.md").write_text(markdown(report))
                print("\n" + markdown(report))
                return 0
            # ------------------------------------------------------------ train: --dry-run on the trajectories
            stage = run_stage([py, str(ROOT / "train_rlao.py"), "--run", "rehearse", "--trajectories",
                               str(run / "trajectories.jsonl"), "--model", "embedded", "--max-len", "8192", "--dry-run"],
                              out, out / "train.log")
            report["train"] = {**stage, "plan": [line for line in (out / "train.log").read_text().splitlines()
                                                 if line.startswith(("train samples", "memory plan", "samples"))]}
            print("train (--dry-run):", json.dumps(report["train"]), flush=True)

        # ---------------------------------------------------------------- evaluate, killed once and resumed
        cmd = [py, str(ROOT / "evaluate.py"), "--run", "rehearse", "--executor-models", EVAL_MODEL, "--iterations", "30",
               "--seeds", "0", "--budget-usd", "300", "--limit-valid", str(limit_valid), "--limit-test", str(limit_test),
               *common]
        results = out / "results" / "rehearse"
        num_jobs = len(BENCHMARKS) * 7
        est = ev_est
        before = sim.stats.summary()

        def lines_written() -> int:
            path = results / "results.jsonl"
            return sum(1 for _ in open(path)) if path.exists() else 0

        first = run_stage(cmd, out, out / "evaluate.log", kill_when=lambda: lines_written() >= a.kill_after_lines * num_jobs)
        kill_time = first["killed_at"] or time.time()
        with sim._lock:
            counts_at_kill, times_at_kill = Counter(sim.stats.answered_count), dict(sim.stats.answered)
        lines_at_kill = lines_written()
        second = run_stage(cmd, out, out / "evaluate.log")
        if not (results / "results.jsonl").exists():
            sys.exit(f"error: the evaluation wrote no results (rc {second['rc']}); see {out / 'evaluate.log'}")
        stage = {"rc": second["rc"], "wall_s": round(first["wall_s"] + second["wall_s"], 1),
                 "peak_rss_mb": max(first["peak_rss_mb"], second["peak_rss_mb"]),
                 "killed_after_s": first["wall_s"], "lines_at_kill": lines_at_kill, "first_rc": first["rc"],
                 "killed": first["killed_at"] is not None, "jobs": num_jobs}
        rows = [json.loads(line) for line in open(results / "results.jsonl")]
        keys = Counter((r["benchmark"], r["executor_model"], r["method"], r["seed"]) for r in rows)
        # A request answered well before the kill (2 s: its reply was cached by then) and sent again after it.
        # A workflow that repeats an identical call legitimately sends the same body for a new sample.
        again = {d: sim.stats.answered_count[d] - n for d, n in counts_at_kill.items()
                 if sim.stats.answered_count[d] > n and times_at_kill.get(d, kill_time) < kill_time - 2.0}
        stage.update(lines=len(rows), complete=second["rc"] == 0 and len(keys) == num_jobs,
                     duplicate_lines=sum(n - 1 for n in keys.values()),
                     repeated_calls=sum(again.values()),
                     repeated_examples=[sim.stats.described.get(d, "") for d in list(again)[:5]])
        trajs = sorted((results / "trajectories").glob("*.jsonl"))
        report["evaluate"] = stage_report(stage, results / "calls.jsonl", results / "meta_calls.jsonl", EVAL_MODEL,
                                          sim, before, a, trajs, [results, out / "cache"])
        failures = Counter()
        for r in rows:
            failures.update({f"sample:{k}": v for k, v in r.get("failures", {}).items()})
        for t in trajs:
            for line in open(t):
                failures.update(f"candidate:{c['reason']}" for c in json.loads(line)["candidates"] if c["status"] != "ok")
        report["evaluate"]["failures"] = dict(failures)
        sizes = {b: (valid_n[b], test_n[b]) for b in BENCHMARKS}
        measured_eval, eval_turns = eval_profile(results, sizes, 30, 1)
        # The floor of this run, in its own (compressed) time: paid requests x mean latency / cap, or the
        # longest W4S chain, from the measured per-sample counts and latencies.
        exec_sim, meta_sim = report["evaluate"]["sim_executor"], report["evaluate"]["sim_meta"]
        lat = exec_sim.get("sim_latency_ms", 0) / 1000 / max(exec_sim.get("requests", 1), 1)
        meta_lat = meta_sim.get("sim_latency_ms", 0) / 1000 / max(meta_sim.get("requests", 1), 1)
        chain = estimate.estimate_evaluate(sizes=sizes, executor_models=[EVAL_MODEL], meta_model=META_MODEL, seeds=[0],
                                           methods=["best_seed", "w4s"], iterations=30, num_candidates=1,
                                           max_concurrency=a.max_concurrency, latency_s=lat, meta_latency_s=meta_lat,
                                           profile={"evaluate": measured_eval, "evaluate_turns": eval_turns})["chain_hours"] * 3600
        proj = projected(stage, exec_sim, a.max_concurrency, a.time_scale, chain)
        report["evaluate"]["projected"] = proj
        floor_s = proj["floor_h"] * 3600 * a.time_scale
        report["evaluate"]["floor_s"] = round(floor_s, 1)
        report["evaluate"]["wall_over_floor"] = round(stage["wall_s"] / max(floor_s, 1e-9), 2)
        if est:
            report["evaluate"]["estimate_vs_measured"] = compare(est, report["evaluate"])
        print_stage("evaluate", report["evaluate"])

        table = build_profile(out, source, sizes, ["evaluate"] if a.skip_collect else ["collect", "evaluate"])
        (out / "call_profile.json").write_text(json.dumps(table, indent=1))
        report["simulator_errors"] = len(sim.stats.internal_errors)
        if sim.stats.internal_errors:  # a bug of the simulator, not of the kit: the run does not count
            print(f"SIMULATOR BUG: {len(sim.stats.internal_errors)} requests failed inside the simulator; the first:\n"
                  f"{sim.stats.internal_errors[0][1]}", file=sys.stderr)
        whole = report["evaluate"]["complete"] and report.get("collect", {}).get("rc", 0) == 0 and not sim.stats.internal_errors
        if a.write_profile and not a.skip_collect and whole:
            estimate.PROFILE_PATH.write_text(json.dumps(table, indent=1) + "\n")
            print(f"wrote {estimate.PROFILE_PATH}")
        elif a.write_profile:
            print(f"not written to {estimate.PROFILE_PATH}: the rehearsal is incomplete (its profile: {out / 'call_profile.json'})")
    (out / "rehearsal.json").write_text(json.dumps(report, indent=2))
    (out / "rehearsal.md").write_text(markdown(report))
    print("\n" + markdown(report))
    print(f"rehearsal report: {out / 'rehearsal.json'}, {out / 'rehearsal.md'}")
    return 0 if whole else 1


def plan_sizes(limit_valid: int, limit_test: int, data_dir) -> tuple[dict, dict]:
    benches = {n: load_benchmark(n, data_dir) for n in BENCHMARKS}
    return ({n: len(b.examples("valid")[: limit_valid or None]) for n, b in benches.items()},
            {n: len(b.examples("test")[: limit_test or None]) for n, b in benches.items()})


def estimates(valid_n: dict, test_n: dict, profile: dict, cap: int) -> tuple[dict | None, dict | None]:
    """The estimate of the rehearsal's two stages (paper shape at these sizes); None for a stage the
    profile does not cover."""
    col = estimate.estimate_collect(sizes={b: valid_n[b] for b in TRAIN_BENCHMARKS}, executor_model=COLLECT_MODEL,
                                    meta_model=META_MODEL, num_episodes=4, num_turns=10, num_candidates=5,
                                    max_concurrency=cap, latency_s=3.0, meta_latency_s=50.0,
                                    profile=profile) if "collect" in profile else None
    ev = estimate.estimate_evaluate(sizes={b: (valid_n[b], test_n[b]) for b in BENCHMARKS}, executor_models=[EVAL_MODEL],
                                    meta_model=META_MODEL, seeds=[0], methods=list(METHODS), iterations=30,
                                    num_candidates=1, max_concurrency=cap, latency_s=3.0, meta_latency_s=50.0,
                                    profile=profile) if "evaluate" in profile else None
    return col, ev


def recheck(out: Path, a) -> int:
    """Rebuild a finished rehearsal's profile and measurements; compare the estimate of --call-profile
    (default call_profile.json) with them. A folder with one stage only is compared on that stage."""
    report = json.loads((out / "rehearsal.json").read_text())
    shape = report["shape"]
    valid_n, test_n = plan_sizes(shape["limit_valid"], shape["limit_test"], a.data_dir)
    stages = {"collect": (out / "runs" / "rehearse", COLLECT_MODEL), "evaluate": (out / "results" / "rehearse", EVAL_MODEL)}
    for stage, (folder, model) in stages.items():
        if stage in report:  # measured again from the audit logs (the paid dollars as the rows paid them)
            report[stage]["executor"] = ledger(folder / "calls.jsonl", model)
            report[stage]["meta"] = ledger(folder / "meta_calls.jsonl", META_MODEL)
    source = f"bench/rehearse.py --fraction {shape['fraction']} (simulated endpoints, seed {a.seed})"
    table = build_profile(out, source, {b: (valid_n[b], test_n[b]) for b in BENCHMARKS}, [k for k in stages if k in report])
    (out / "call_profile.json").write_text(json.dumps(table, indent=1))
    if a.write_profile and all(k in report for k in stages):
        estimate.PROFILE_PATH.write_text(json.dumps(table, indent=1) + "\n")
        print(f"wrote {estimate.PROFILE_PATH}")
    if Path(a.call_profile).exists():
        profile = estimate.load_profile(a.call_profile)
        col, ev = estimates(valid_n, test_n, profile, shape["max_concurrency"])
        for stage, est in (("collect", col), ("evaluate", ev)):
            if stage in report and est is not None:
                report[stage]["estimate_vs_measured"] = compare(est, report[stage])
        report["estimate_profile"] = profile.get("source")
        print(json.dumps({k: report[k].get("estimate_vs_measured") for k in stages if k in report}, indent=1))
    (out / "rehearsal.json").write_text(json.dumps(report, indent=2))
    (out / "rehearsal.md").write_text(markdown(report))
    print(markdown(report))
    return 0


def markdown(report: dict) -> str:
    """The figures as a markdown table (rehearsal.md), one column per stage."""
    stages = [k for k in ("collect", "evaluate") if k in report]
    rows = [("executor calls (paid)", lambda r: f"{r['executor']['calls']:,} ({r['executor']['paid_calls']:,})"),
            ("meta-agent calls", lambda r: f"{r['meta']['calls']:,}"),
            ("executor tokens, prompt + completion", lambda r: f"{r['executor']['prompt_tokens'] / 1e6:.1f}M + "
                                                              f"{r['executor']['completion_tokens'] / 1e6:.1f}M"),
            ("meta-agent tokens", lambda r: f"{r['meta']['prompt_tokens'] / 1e6:.1f}M + {r['meta']['completion_tokens'] / 1e6:.1f}M"),
            ("list-price dollars paid (all calls)", lambda r: f"${r['executor']['paid_usd']:.2f} (${r['executor']['cost_usd']:.2f})"),
            ("wall time here", lambda r: f"{r['wall_s'] / 60:.1f} min"),
            ("projected at real latency: floor / scaled back", lambda r: f"{r['projected']['floor_h']:.2f} h / "
                                                                        f"{r['projected']['scaled_back_h']:.2f} h"),
            ("peak memory, disk", lambda r: f"{r['peak_rss_mb']} MB, {r['disk_mb']} MB"),
            ("largest state", lambda r: f"{r['largest_state_tokens']:,} tokens"),
            ("failures", lambda r: ", ".join(f"{k} {v}" for k, v in sorted(r.get("failures", {}).items())) or "none"),
            ("estimate / measured: paid calls, dollars", lambda r: (
                f"{r['estimate_vs_measured']['executor']['calls_ratio']:.2f}, {r['estimate_vs_measured']['executor']['usd_ratio']:.2f}"
                if "estimate_vs_measured" in r else "no profile"))]
    lines = ["| | " + " | ".join(stages) + " |", "|---" * (len(stages) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(f(report[s]) for s in stages) + " |" for name, f in rows]
    return "\n".join(lines + outcome(report)) + "\n"


def outcome(report: dict) -> list[str]:
    """The lines under the table: the evaluation's kill and resume, its wall time against the floor, and
    whether the run is whole (a stage that stopped, a bug of the simulator)."""
    lines, e = [], report.get("evaluate", {})
    if e:
        kill = (f"{e['repeated_calls']} calls repeated after the kill (at {e['lines_at_kill']} lines)" if e.get("killed", True)
                else f"not killed: its first run ended by itself (exit {e['first_rc']}) at {e['lines_at_kill']} lines")
        lines += ["", f"Evaluation: {e['lines']} of {e.get('jobs', '?')} lines, {e['duplicate_lines']} duplicates, {kill}; "
                      f"wall {e['wall_s']:.0f} s against a floor of {e['floor_s']:.0f} s: {e['wall_over_floor']:.2f}x."]
        if not e.get("complete", True):
            lines += ["", f"**INCOMPLETE**: the evaluation ended with exit {e['rc']} at {e['lines']} of {e.get('jobs', '?')} "
                          f"lines (see evaluate.log); the figures cover the part that ran."]
    if report.get("simulator_errors"):
        lines += ["", f"**SIMULATOR BUG**: {report['simulator_errors']} requests failed inside the simulator (500s)."]
    return lines


def stage_report(stage: dict, calls: Path, meta_calls: Path, model: str, sim: Simulator, before: dict, a,
                 trajectories: list[Path], disk: list[Path]) -> dict:
    after = sim.stats.summary()
    rep = {**stage, "executor": ledger(calls, model), "meta": ledger(meta_calls, META_MODEL),
           "sim_executor": sim_delta(after, before, model), "sim_meta": sim_delta(after, before, META_MODEL),
           "disk_mb": du_mb(*disk), "largest_state_tokens": largest_state(trajectories)}
    if "projected" not in rep:
        rep["projected"] = projected(stage, rep["sim_executor"], a.max_concurrency, a.time_scale, 0.0)
    return rep


def print_stage(name: str, r: dict) -> None:
    e, m = r["executor"], r["meta"]
    print(f"\n== {name}: rc {r['rc']} | wall {r['wall_s']:.0f} s | peak {r['peak_rss_mb']} MB | disk {r['disk_mb']} MB | "
          f"largest state {r['largest_state_tokens']:,} tokens")
    print(f"   executor {e['model']}: {e['calls']:,} calls ({e['paid_calls']:,} paid, {e['errors']} failed) | "
          f"{e['prompt_tokens']:,} + {e['completion_tokens']:,} tokens | ${e['paid_usd']:.2f} paid (${e['cost_usd']:.2f} list with cached)")
    print(f"   meta-agent: {m['calls']:,} calls ({m['paid_calls']:,} paid) | {m['prompt_tokens']:,} + {m['completion_tokens']:,} tokens")
    print(f"   simulator: executor {r['sim_executor']} | meta {r['sim_meta']}")
    print(f"   projected at real latency: {r['projected']}")
    print(f"   failures: {r.get('failures')}")
    for k in ("lines", "duplicate_lines", "repeated_calls", "repeated_examples", "lines_at_kill", "killed_after_s", "floor_s", "wall_over_floor"):
        if k in r:
            print(f"   {k}: {r[k]}")
    if "estimate_vs_measured" in r:
        print(f"   estimate vs measured: {r['estimate_vs_measured']}")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())

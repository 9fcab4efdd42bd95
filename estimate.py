"""What a collection or evaluation run will cost before it is paid for: calls, tokens, dollars, hours.

Used by `collect.py --estimate` and `evaluate.py --estimate` (and `make reproduce`, which prints both
before it spends anything). No call is made: the estimate multiplies the run's plan (benchmarks, split
sizes, turns, candidates, seeds, methods) by per-sample call and token counts measured once per
benchmark and workflow, kept in `call_profile.json`:

    evaluate.<benchmark>.test.<method>   [calls, prompt tokens, completion tokens] per test example
    evaluate.<benchmark>.seeds_valid     the same per validation example, the seed workflows together
    evaluate.<benchmark>.w4s             a W4S candidate: the same per workflow sample ("sample"), the share
                                         scored on the whole split ("pass_rate") and its self-check samples
                                         ("self_checks", 1 + repairs)
    evaluate.<benchmark>.meta            meta-agent calls and tokens per W4S turn per candidate
    evaluate.<benchmark>.test_is_baseline  best_seed, w4s: 1 when the chosen workflow was a baseline's code
                                         (its test pass is then the baseline's, from the cache)
    collect.<benchmark>.search / .meta   the same for a collection candidate and turn

A candidate runs n_valid x pass_rate + self_checks samples; the one self-check sample of a candidate that
passes is scored again in its full pass, from the cache.

`bench/rehearse.py --write-profile` measures them on the simulated endpoint (bench/sim_server.py) at
the paper's shape; replace them with figures from a small real run when you have one. A benchmark
missing from the profile takes the mean of its kind.

Hours are the floor of a run bounded by the API: max(paid calls x mean latency / concurrency cap,
the longest sequential chain), the chain being one W4S search (evaluation: jobs run concurrently) or
all episodes one after another (collection).
"""
from __future__ import annotations

import json
from pathlib import Path

from benchmarks import _MODULES
from executor import cost_usd, is_local_model

KINDS = {name: module.KIND for name, module in _MODULES.items()}

PROFILE_PATH = Path(__file__).resolve().parent / "call_profile.json"
Unit = list  # [calls, prompt_tokens, completion_tokens]


def load_profile(path: str | Path | None = None) -> dict:
    path = Path(path) if path else PROFILE_PATH
    if not path.exists():
        raise SystemExit(f"error: no call profile at {path}; make one with `python bench/rehearse.py --write-profile`")
    return json.loads(path.read_text())


def _lookup(table: dict, bench: str) -> dict:
    """The profile entry of a benchmark, else the mean entry of the benchmarks of its kind."""
    if bench in table:
        return table[bench]
    kind = KINDS[bench]
    same = [v for b, v in table.items() if KINDS.get(b) == kind]
    if not same:
        raise SystemExit(f"error: the call profile has nothing for {bench!r} (kind {kind}); "
                         f"rerun `python bench/rehearse.py --write-profile`")
    return _mean_tree(same)


def _mean_tree(trees: list):
    if isinstance(trees[0], dict):
        return {k: _mean_tree([t[k] for t in trees if k in t]) for k in trees[0]}
    if isinstance(trees[0], (int, float)):
        return sum(trees) / len(trees)
    return [sum(t[i] for t in trees) / len(trees) for i in range(len(trees[0]))]


def _scale(unit: Unit, k: float) -> Unit:
    return [k * x for x in unit]


def _candidates(total: dict, search: dict, n_valid: int, count: float) -> float:
    """Add `count` candidates' samples (counted and paid); return the samples of one candidate."""
    samples = n_valid * search["pass_rate"] + search["self_checks"]
    _add(total, "executor", _scale(search["sample"], count * (samples - search["pass_rate"])))
    _add(total, "executor", _scale(search["sample"], count * search["pass_rate"]), paid=False)
    return samples


def _add(total: dict, key: str, unit: Unit, paid: bool = True) -> None:
    t = total.setdefault(key, {"calls": 0.0, "paid_calls": 0.0, "prompt_tokens": 0.0, "completion_tokens": 0.0,
                                "paid_prompt_tokens": 0.0, "paid_completion_tokens": 0.0})
    t["calls"] += unit[0]
    t["prompt_tokens"] += unit[1]
    t["completion_tokens"] += unit[2]
    if paid:  # a call the response cache answers is counted (and priced in results) but not paid
        t["paid_calls"] += unit[0]
        t["paid_prompt_tokens"] += unit[1]
        t["paid_completion_tokens"] += unit[2]


def price(model: str, prompt_tokens: float, completion_tokens: float) -> float:
    """List-price dollars (in-process models cost 0)."""
    return 0.0 if is_local_model(model) else cost_usd(model, int(prompt_tokens), int(completion_tokens))


def _finish(totals: dict, models: dict[str, str], chain_s: float, latency: dict[str, float], cap: int) -> dict:
    for key, t in totals.items():
        t["model"] = models[key]
        t["cost_usd"] = price(models[key], t["prompt_tokens"], t["completion_tokens"])
        t["paid_usd"] = price(models[key], t["paid_prompt_tokens"], t["paid_completion_tokens"])
    api_s = totals.get("executor", {}).get("paid_calls", 0.0) * latency["executor"] / max(cap, 1)
    return {**totals, "hours": max(api_s, chain_s) / 3600, "api_bound_hours": api_s / 3600,
            "chain_hours": chain_s / 3600, "max_concurrency": cap, "latency_s": latency}


def estimate_evaluate(*, sizes: dict[str, tuple[int, int]], executor_models: list[str],
                      meta_model: str, seeds: list[int], methods: list[str], iterations: int, num_candidates: int,
                      max_concurrency: int, latency_s: float, meta_latency_s: float, profile: dict) -> dict:
    """sizes: benchmark -> (validation examples, test examples) as the run will use them."""
    totals, chains, table = {}, [0.0], profile["evaluate"]
    for bench, (n_valid, n_test) in sizes.items():
        p = _lookup(table, bench)
        for _model in executor_models:
            for _seed in seeds:
                baselines_run = all(m in methods for m in p["test"] if m not in ("best_seed", "w4s"))
                for method in methods:
                    if method in p["test"]:
                        # a chosen workflow that is a baseline's code replays the baseline's test pass
                        cached = p.get("test_is_baseline", {}).get(method, 0.0) if baselines_run else 0.0
                        _add(totals, "executor", _scale(p["test"][method], n_test * (1 - cached)))
                        _add(totals, "executor", _scale(p["test"][method], n_test * cached), paid=False)
                    if method == "best_seed":
                        _add(totals, "executor", _scale(p["seeds_valid"], n_valid))
                    if method != "w4s":
                        continue
                    # the seeds' validation pass again: best_seed and W4S start side by side, so both pay
                    _add(totals, "executor", _scale(p["seeds_valid"], n_valid))
                    _candidates(totals, p["w4s"], n_valid, iterations * num_candidates)
                    _add(totals, "meta", _scale(p["meta"], iterations * num_candidates))
                    # a candidate's samples run side by side: its self-checks, then one pass, a sample deep
                    depth = (p["w4s"]["self_checks"] + 1) * p["w4s"]["sample"][0] * latency_s
                    chains.append(p["seeds_valid"][0] * latency_s + iterations * (
                        p["meta"][0] * num_candidates * meta_latency_s + depth) + p["test"]["w4s"][0] * latency_s)
    models = {"executor": executor_models[0], "meta": meta_model}
    return _finish(totals, models, max(chains), {"executor": latency_s, "meta": meta_latency_s}, max_concurrency)


def estimate_collect(*, sizes: dict[str, int], executor_model: str, meta_model: str,
                     num_episodes: int, num_turns: int, num_candidates: int, max_concurrency: int,
                     latency_s: float, meta_latency_s: float, profile: dict) -> dict:
    """sizes: benchmark -> validation examples used. Episodes run one after another."""
    totals, chain, table = {}, 0.0, profile["collect"]
    for bench, n_valid in sizes.items():
        p = _lookup(table, bench)
        for episode in range(num_episodes):
            # every episode re-scores the seeds on the same examples: only the first one pays
            _add(totals, "executor", _scale(p["seeds_valid"], n_valid), paid=episode == 0)
            _candidates(totals, p["search"], n_valid, num_turns * num_candidates)
            _add(totals, "meta", _scale(p["meta"], num_turns * num_candidates))
            # one meta-agent call samples all m actions; a candidate is self-checks then one pass deep
            depth = (p["search"]["self_checks"] + 1) * p["search"]["sample"][0] * latency_s
            chain += (p["seeds_valid"][0] if episode == 0 else 0.0) * latency_s + num_turns * (
                p["meta"][0] * num_candidates * meta_latency_s + depth)
    models = {"executor": executor_model, "meta": meta_model}
    return _finish(totals, models, chain, {"executor": latency_s, "meta": meta_latency_s}, max_concurrency)


def format_estimate(stage: str, est: dict, source: str) -> str:
    lines = [f"{stage} estimate (no call made; per-sample counts from {source}):"]
    for key in ("executor", "meta"):
        t = est.get(key)
        if t:
            lines.append(f"  {key:<8} {t['model']}: {t['calls']:,.0f} calls ({t['paid_calls']:,.0f} paid), "
                         f"{t['prompt_tokens'] / 1e6:,.2f}M prompt + {t['completion_tokens'] / 1e6:,.2f}M completion "
                         f"tokens, ${t['paid_usd']:,.2f} to pay (list price; ${t['cost_usd']:,.2f} with cached calls)")
    lat = est["latency_s"]
    lines.append(f"  time     {est['hours']:,.2f} h at {est['max_concurrency']} requests in flight, "
                 f"{lat['executor']:g} s per executor call, {lat['meta']:g} s per meta-agent call "
                 f"(API bound {est['api_bound_hours']:,.2f} h; longest sequential chain {est['chain_hours']:,.2f} h)")
    return "\n".join(lines)

"""What a collection or evaluation run will cost before it is paid for: calls, tokens, dollars, hours.

Used by `collect.py --estimate` and `evaluate.py --estimate` (and `make reproduce`, which prints both
before it spends anything). No call is made: the estimate multiplies the run's plan (benchmarks, split
sizes, turns, candidates, seeds, methods) by per-sample call and token counts measured once per
benchmark and workflow, kept in `call_profile.json` (format version 2):

    evaluate.<benchmark>.test.<method>   [calls, prompt tokens, completion tokens] per test example
    evaluate.<benchmark>.seeds_valid     the same per validation example, the seed workflows together
    evaluate.<benchmark>.search          a W4S candidate: the same per workflow sample it ran ("sample"), the
                                         share scored on the whole split ("pass_rate"), and its self-check
                                         samples ("checks": one per attempt past the static check, so an
                                         action with no code block or a syntax error runs none), and
                                         "cached": its samples answered by the cache besides that
                                         replay (a candidate repeating requests of an earlier one)
    evaluate.<benchmark>.meta            meta-agent calls and tokens per W4S turn per candidate
    evaluate.<benchmark>.n_valid         the validation size the search was measured on
    evaluate.<benchmark>.test_cached     best_seed, w4s: 1 when the chosen workflow was a baseline's code (or,
                                         for W4S, the best seed's): its test pass is then that job's, cached
    collect.<benchmark>.search / .meta / .seeds_valid / .n_valid   the same for collection
    evaluate_turns, collect_turns        per turn of a search, [calls, prompt, completion] multipliers of
                                         "sample" and of "meta", pooled over benchmarks: the search drifts
                                         (the meta-agent builds on the best workflow, which samples more
                                         turn by turn) and the state, so the meta-agent's prompt, grows

A candidate at turn t runs checks + n_valid x pass_rate samples of sample x factor(t); the one self-check
sample of a candidate that passes is scored again in its full pass, from the cache, as are its
`cached` samples. Past the measured
turns the factor is the mean of their last third.

`bench/rehearse.py --write-profile` measures them on the simulated endpoint (bench/sim_server.py) at
the paper's shape (or a --fraction of it); replace them with figures from a small real run when you have
one. A benchmark missing from the profile takes the mean of its kind. The search's drift depends on how
many validation examples it selects on (ties and noise on a handful of examples keep it near the cheap
seeds), so the estimate notes a run whose validation size is far from the profile's.

Hours are the floor of a run bounded by the API: max(paid calls x mean latency / concurrency cap, paid
tokens / the evaluation's --tokens-per-minute when set, the longest sequential chain), the chain being one W4S search (evaluation: jobs run concurrently) or
all episodes one after another (collection).
"""
from __future__ import annotations

import json
from pathlib import Path

from benchmarks import _MODULES
from executor import cost_usd, is_local_model

KINDS = {name: module.KIND for name, module in _MODULES.items()}

PROFILE_PATH = Path(__file__).resolve().parent / "call_profile.json"
PROFILE_VERSION = 2
Unit = list  # [calls, prompt_tokens, completion_tokens]


def load_profile(path: str | Path | None = None) -> dict:
    path = Path(path) if path else PROFILE_PATH
    if not path.exists():
        raise SystemExit(f"error: no call profile at {path}; make one with `python bench/rehearse.py --write-profile`")
    profile = json.loads(path.read_text())
    if profile.get("version") != PROFILE_VERSION:
        raise SystemExit(f"error: {path} is a call profile of an older format; rebuild it with "
                         f"`python bench/rehearse.py --write-profile` (or --recheck DIR --write-profile)")
    return profile


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


def _times(unit: Unit, factors: Unit) -> Unit:
    return [x * f for x, f in zip(unit, factors)]


def turn_factor(scales: list | None, turn: int) -> Unit:
    """The per-turn multiplier of a search's per-sample (or meta-agent) counts: measured per turn, and past
    the measured turns the mean of their last third (the search has settled by then)."""
    if not scales:
        return [1.0, 1.0, 1.0]
    if turn < len(scales):
        return scales[turn]
    tail = scales[-max(1, len(scales) // 3):]
    return [sum(t[i] for t in tail) / len(tail) for i in range(3)]


def _search(total: dict, p: dict, scales: dict, n_valid: int, turns: int, count: float) -> None:
    """`turns` turns of `count` candidates each: a candidate runs its self-check samples (`checks`: one per
    attempt that got past the static check) and, with probability pass_rate, the whole validation split,
    whose first sample replays its last self-check from the cache. Plus the meta-agent per candidate."""
    s = p["search"]
    counted = s["checks"] + s["pass_rate"] * n_valid
    cached = s["pass_rate"] + s.get("cached", 0.0)  # the replayed self-check; requests repeated from earlier
    for turn in range(turns):
        unit = _times(s["sample"], turn_factor(scales.get("sample"), turn))
        _add(total, "executor", _scale(unit, count * (counted - cached)))
        _add(total, "executor", _scale(unit, count * cached), paid=False)
        _add(total, "meta", _scale(_times(p["meta"], turn_factor(scales.get("meta"), turn)), count))


def _depth(p: dict, latency_s: float) -> float:
    """A candidate's samples run side by side: its self-checks one after another, then one pass."""
    return (p["search"]["checks"] + 1) * p["search"]["sample"][0] * latency_s


def _far_size(n_valid: int, p: dict) -> str | None:
    """'measured on N, run on M' when the run's validation size is not within 2x of the profile's."""
    measured = p.get("n_valid")
    return f"{measured:g} -> {n_valid}" if measured and not 0.5 <= n_valid / measured <= 2 else None


def _size_note(far: dict[str, str]) -> list[str]:
    if not far:
        return []
    return [f"validation examples searched, profile -> this run: "
            f"{', '.join(f'{b} {sizes}' for b, sizes in far.items())}; the search's per-sample counts drift "
            f"with it (on more examples, further to costlier workflows; README, Rehearsal)"]


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


def _finish(totals: dict, models: dict[str, str], chain_s: float, latency: dict[str, float], cap: int,
            far: dict[str, str], tokens_per_minute: int = 0) -> dict:
    for key, t in totals.items():
        t["model"] = models[key]
        t["cost_usd"] = price(models[key], t["prompt_tokens"], t["completion_tokens"])
        t["paid_usd"] = price(models[key], t["paid_prompt_tokens"], t["paid_completion_tokens"])
    ex = totals.get("executor", {})
    api_s = ex.get("paid_calls", 0.0) * latency["executor"] / max(cap, 1)
    if tokens_per_minute:  # the tier's token rate may bound the run before its request cap does
        api_s = max(api_s, (ex.get("paid_prompt_tokens", 0.0) + ex.get("paid_completion_tokens", 0.0)) / tokens_per_minute * 60)
    return {**totals, "hours": max(api_s, chain_s) / 3600, "api_bound_hours": api_s / 3600,
            "chain_hours": chain_s / 3600, "max_concurrency": cap, "latency_s": latency, "notes": _size_note(far)}


def first_wave(benchmarks, executor_models, seeds, methods, max_parallel_jobs: int) -> set[tuple]:
    """The jobs evaluate.py starts at once (its job order, the first max_parallel_jobs)."""
    from evaluate import METHODS, job_order  # here: evaluate.py imports this module
    jobs = [(b, e, s, m) for b in benchmarks for e in executor_models for s in seeds for m in METHODS if m in methods]
    return set(job_order(jobs)[:max(1, max_parallel_jobs)])


def estimate_evaluate(*, sizes: dict[str, tuple[int, int]], executor_models: list[str],
                      meta_model: str, seeds: list[int], methods: list[str], iterations: int, num_candidates: int,
                      max_concurrency: int, latency_s: float, meta_latency_s: float, profile: dict,
                      max_parallel_jobs: int = 16, tokens_per_minute: int = 0) -> dict:
    """sizes: benchmark -> (validation examples, test examples) as the run will use them."""
    totals, chains, table, notes = {}, [0.0], profile["evaluate"], {}
    scales = profile.get("evaluate_turns", {})
    wave = first_wave(list(sizes), executor_models, seeds, methods, max_parallel_jobs)
    for bench, (n_valid, n_test) in sizes.items():
        p = _lookup(table, bench)
        if "w4s" in methods and (far := _far_size(n_valid, p)):
            notes[bench] = far
        for model in executor_models:
            for seed in seeds:
                others_run = all(m in methods for m in p["test"] if m != "w4s")
                for method in methods:
                    if method in p["test"]:
                        # a chosen workflow that another job also scores replays that job's test pass
                        cached = p.get("test_cached", {}).get(method, 0.0) if others_run else 0.0
                        _add(totals, "executor", _scale(p["test"][method], n_test * (1 - cached)))
                        _add(totals, "executor", _scale(p["test"][method], n_test * cached), paid=False)
                if "best_seed" in methods or "w4s" in methods:  # the seeds' validation pass
                    _add(totals, "executor", _scale(p["seeds_valid"], n_valid))
                if "best_seed" in methods and "w4s" in methods:
                    # again: started side by side, both send it before either is cached; a best_seed job that
                    # starts later (the jobs past the first wave) replays the W4S job's pass from the cache
                    both = {(bench, model, seed, m) for m in ("best_seed", "w4s")} <= wave
                    _add(totals, "executor", _scale(p["seeds_valid"], n_valid), paid=both)
                if "w4s" not in methods:
                    continue
                _search(totals, p, scales, n_valid, iterations, num_candidates)
                chains.append(p["seeds_valid"][0] * latency_s + iterations * (
                    p["meta"][0] * num_candidates * meta_latency_s + _depth(p, latency_s))
                    + p["test"]["w4s"][0] * latency_s)
    models = {"executor": executor_models[0], "meta": meta_model}
    return _finish(totals, models, max(chains), {"executor": latency_s, "meta": meta_latency_s}, max_concurrency, notes,
                   tokens_per_minute)


def estimate_collect(*, sizes: dict[str, int], executor_model: str, meta_model: str,
                     num_episodes: int, num_turns: int, num_candidates: int, max_concurrency: int,
                     latency_s: float, meta_latency_s: float, profile: dict) -> dict:
    """sizes: benchmark -> validation examples used. Episodes run one after another."""
    totals, chain, table, notes = {}, 0.0, profile["collect"], {}
    scales = profile.get("collect_turns", {})
    for bench, n_valid in sizes.items():
        p = _lookup(table, bench)
        if far := _far_size(n_valid, p):
            notes[bench] = far
        for episode in range(num_episodes):
            # every episode re-scores the seeds on the same examples: only the first one pays
            _add(totals, "executor", _scale(p["seeds_valid"], n_valid), paid=episode == 0)
            _search(totals, p, scales, n_valid, num_turns, num_candidates)
            # one meta-agent call samples all m actions; a candidate is self-checks then one pass deep
            chain += (p["seeds_valid"][0] if episode == 0 else 0.0) * latency_s + num_turns * (
                p["meta"][0] * num_candidates * meta_latency_s + _depth(p, latency_s))
    models = {"executor": executor_model, "meta": meta_model}
    return _finish(totals, models, chain, {"executor": latency_s, "meta": meta_latency_s}, max_concurrency, notes)


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
    lines += [f"  note     {note}" for note in est.get("notes", [])]
    return "\n".join(lines)

"""The rehearsal's pieces: the simulated endpoint (bench/sim_server.py, a test harness) and the estimate.

The simulator must be deterministic given its seed, reward better-asked questions, and write meta-agent
actions of realistic length with a share broken; the estimate must be the plan's arithmetic, print
from the command line with no call made, and write nothing.
"""
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import prompts  # noqa: E402
import sim_server as S  # noqa: E402


@pytest.fixture(scope="module")
def index():
    data = ROOT.parent / "shared" / "data"
    if not data.is_dir():
        pytest.skip("../shared/data is not here")
    return S.QuestionIndex(str(data), benchmarks=("gsm8k", "mmlu_pro", "humaneval"), seed=0)


def exec_body(task: str, keys=("reasoning", "answer"), n=1, instructions="Solve it.") -> dict:
    system = f"You are a helpful math expert.\nReply in JSON format, ONLY using the keys {list(keys)}.\n{instructions}"
    return {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": system},
                                                 {"role": "user", "content": f"Problem:\n{task}"}],
            "n": n, "response_format": {"type": "json_object"}, "temperature": 0.5}


def meta_body(n: int) -> dict:
    archive = [{"name": name, "code": code, "feedback": f"Validation accuracy: {50 + i}.0%"}
               for i, (name, code) in enumerate(prompts.seed_workflows("math"))]
    user = prompts.build_user_prompt("Solve grade-school math problems.", archive, "math")
    return {"model": "sim-meta", "n": n, "messages": [{"role": "system", "content": prompts.SYSTEM_PROMPT},
                                                      {"role": "user", "content": user}]}


def gsm8k(data_dir, n=60):
    from benchmarks import load_benchmark
    b = load_benchmark("gsm8k", data_dir)
    return b, (b.examples("valid") + b.examples("test"))[:n]


def test_simulator_is_deterministic_given_its_seed(index, data_dir):
    _, examples = gsm8k(data_dir, 12)
    bodies = [exec_body(e["task"], n=3) for e in examples] + [meta_body(3)]
    bodies += bodies[:2]  # a repeated identical request draws a new sample, the same one on a rerun
    first, again, other = _replay(index, 0, bodies), _replay(index, 0, bodies), _replay(index, 1, bodies)
    assert first == again
    assert first != other
    assert first[0] != first[-2]  # the repeat is a fresh sample, not a copy of the first reply
    assert any(status == 429 for status, _ in first) and any(status == 200 for status, _ in first)


def test_every_question_has_a_wrong_answer_to_give(index, data_dir):
    """A multiple-choice item with a single option had no wrong letter: the simulator's handler raised on
    every wrong draw for it and dropped the connection (20 times in the full-shape rehearsal of session 4)."""
    from benchmarks import load_benchmark
    lone = {"id": "x", "task": "Pick the option.", "answer": "A", "num_options": 1}
    assert S.make_question("mmlu_pro", "multiple_choice", lone, seed=0).wrong == ["B"]
    for name in ("mmlu_pro", "gpqa", "drop", "math", "humaneval"):
        b = load_benchmark(name, data_dir)
        assert all(S.make_question(name, b.kind, e, 0).wrong for split in ("valid", "test") for e in b.examples(split))


def test_a_simulator_bug_is_a_counted_500_and_an_incomplete_run_says_so(index):
    """The simulator's handler raised on a request (a one-option question) and dropped the connection: the
    kit then stopped on a "lost connection" twice and the rehearsal still printed its figures as a run's.
    A bug in the simulator is now a 500 it counts, and the report of a run that stopped says INCOMPLETE."""
    import urllib.error
    import urllib.request
    import rehearse
    sim = S.Simulator(index, S.SimConfig(time_scale=0))
    sim.respond = lambda body: 1 / 0
    with S.SimServer(sim) as srv:
        req = urllib.request.Request(srv.base_url + "/chat/completions", data=b'{"model": "m", "messages": []}',
                                     headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 500 and len(sim.stats.internal_errors) == 1
    assert "ZeroDivisionError" in sim.stats.internal_errors[0][1]
    stage = {"rc": 4, "wall_s": 10.0, "lines": 40, "jobs": 77, "complete": False, "killed": False, "first_rc": 4,
             "lines_at_kill": 22, "duplicate_lines": 0, "repeated_calls": 0, "floor_s": 5.0, "wall_over_floor": 2.0}
    tail = "\n".join(rehearse.outcome({"evaluate": stage, "simulator_errors": 1}))
    assert "40 of 77 lines" in tail and "not killed" in tail and "INCOMPLETE" in tail and "SIMULATOR BUG" in tail


def _replay(index, seed, bodies):
    sim = S.Simulator(index, S.SimConfig(seed=seed, time_scale=0, fault_429=0.2))
    return [sim.respond(b)[:2] for b in bodies]


def test_better_asked_workflows_score_higher(index, data_dir):
    bench, examples = gsm8k(data_dir, 120)
    sim = S.Simulator(index, S.SimConfig(time_scale=0))

    def answers(body):
        status, payload, _, _ = sim.respond(body)
        assert status == 200 and payload["usage"]["completion_tokens"] > 0
        return [json.loads(c["message"]["content"])["answer"] for c in payload["choices"]]

    vanilla = sum(bench.score(answers(exec_body(e["task"], keys=["answer"]))[0], e) for e in examples)
    cot = sum(bench.score(answers(exec_body(e["task"], instructions="Think step by step; check each calculation."))[0], e)
              for e in examples)
    vote = sum(bench.score(Counter(answers(exec_body(e["task"], n=5))).most_common(1)[0][0], e) for e in examples)
    single = sum(bench.score(answers(exec_body(e["task"], n=5))[0], e) for e in examples)
    assert vanilla < cot
    assert single < vote  # wrong answers split over distractors, so a majority vote helps
    assert vote < len(examples)  # hard questions stay hard


def test_meta_agent_actions_realistic_length_some_broken_and_repaired(index):
    import meta_agent
    sim = S.Simulator(index, S.SimConfig(time_scale=0))
    _, payload, _, _ = sim.respond(meta_body(60))
    actions = [c["message"]["content"] for c in payload["choices"]]
    assert all(900 <= S.tokens(a) <= 3300 for a in actions)
    outcomes = Counter()
    broken = []
    for a in actions:
        code = meta_agent.extract_solver_code(a)
        bad = meta_agent.static_check(code) if code else ("no_code_block", "")
        outcomes["no_code_block" if code is None else bad[0] if bad else
                 "runtime_error" if "_draft_tally" in code else "ok"] += 1
        if code and "_draft_" in code:
            broken.append(code)
    assert outcomes["ok"] > len(actions) / 2
    assert outcomes["no_code_block"] and outcomes["syntax_error"] and outcomes["runtime_error"]
    assert any(a.split("```python")[-1] not in prompts.seed_workflows("math")[0][1] for a in actions)  # edits
    fixed = 0
    for code in broken:
        repair = meta_body(1)
        repair["messages"] += [{"role": "assistant", "content": "..."},
                               {"role": "user", "content": prompts.build_repair_prompt(code, "err", "Traceback")}]
        reply = sim.respond(repair)[1]["choices"][0]["message"]["content"]
        new = meta_agent.extract_solver_code(reply)
        fixed += new is not None and "_draft_" not in new and meta_agent.static_check(new) is None
    assert fixed >= len(broken) / 2


def test_sim_server_through_the_real_client_with_faults(index, data_dir):
    from executor import LLM, Agent
    _, examples = gsm8k(data_dir, 4)
    sim = S.Simulator(index, S.SimConfig(time_scale=0.001, fault_429=0.3, fault_500=0.1))
    with S.SimServer(sim) as srv:
        agent = Agent(LLM("gpt-4o-mini", srv.base_url, max_retries=8))
        for e in examples:
            replies = agent.call_json_format_llm([{"role": "user", "content": e["task"]}], num_of_response=3,
                                                 return_dict_keys=["reasoning", "answer"])
            assert len(replies) == 3 and all("NO answer" not in str(r["answer"]) for r in replies)
    stats = sim.stats.summary()["gpt-4o-mini"]
    assert stats["requests"] == len(examples) and stats.get("fault_429", 0) + stats.get("fault_500", 0) > 0
    assert agent.usage.prompt_tokens > 0 and agent.usage.completion_tokens > 3 * 100


# ----------------------------------------------------------------------------------------------------
# The estimate

PROFILE = {
    "version": 2, "source": "a test profile", "evaluate_num_candidates": 1, "collect_num_candidates": 5,
    "evaluate": {"gsm8k": {"test": {m: [c, 100.0 * c, 50.0 * c] for m, c in
                                    [("vanilla", 1), ("cot", 1), ("cot_sc", 1), ("self_refine", 4), ("llm_debate", 5),
                                     ("best_seed", 1), ("w4s", 2)]},
                           "seeds_valid": [3.0, 300.0, 900.0],
                           "search": {"sample": [2.0, 200.0, 100.0], "pass_rate": 0.5, "checks": 2.0, "cached": 0.0},
                           "meta": [1.5, 8000.0, 2000.0], "n_valid": 4}},
    "collect": {"gsm8k": {"search": {"sample": [2.0, 200.0, 100.0], "pass_rate": 0.8, "checks": 1.5},
                          "seeds_valid": [3.0, 300.0, 900.0], "meta": [0.4, 9000.0, 8000.0], "n_valid": 6}},
}


def test_estimate_is_the_plans_arithmetic():
    import estimate
    methods = ["vanilla", "cot", "cot_sc", "self_refine", "llm_debate", "best_seed", "w4s"]
    est = estimate.estimate_evaluate(sizes={"gsm8k": (4, 10)}, executor_models=["gpt-4o-mini"], meta_model="local/7b",
                                     seeds=[0, 1], methods=methods, iterations=3, num_candidates=1, max_concurrency=8,
                                     latency_s=2.0, meta_latency_s=10.0, profile=PROFILE)
    # per seed: 7 test passes; best_seed's and W4S's seed passes; 3 turns x (4 x 0.5 + 2 samples) x 2 calls,
    # of which the passing candidates' self-check sample (0.5 per turn) comes from the cache
    counted = 10 * (1 + 1 + 1 + 4 + 5 + 1 + 2) + 4 * 3 + 4 * 3 + 3 * 4 * 2
    assert est["executor"]["calls"] == pytest.approx(2 * counted)
    assert est["executor"]["paid_calls"] == pytest.approx(2 * (counted - 3 * 0.5 * 2))
    assert est["meta"]["calls"] == pytest.approx(2 * 3 * 1.5)
    paid = est["executor"]
    assert paid["paid_usd"] == pytest.approx((paid["paid_prompt_tokens"] * 0.15 + paid["paid_completion_tokens"] * 0.60) / 1e6,
                                             rel=1e-3)
    assert est["api_bound_hours"] == pytest.approx(paid["paid_calls"] * 2.0 / 8 / 3600)
    chain = 3 * 2.0 + 3 * (1.5 * 10.0 + 3 * 2 * 2.0) + 2 * 2.0  # seeds, 3 x (meta + self-checks + a pass), test
    assert est["chain_hours"] == pytest.approx(chain / 3600)
    # a benchmark missing from the profile borrows the mean of its kind (svamp is math, as gsm8k)
    other = estimate.estimate_evaluate(sizes={"svamp": (4, 10)}, executor_models=["gpt-4o-mini"], meta_model="x",
                                       seeds=[0, 1], methods=methods, iterations=3, num_candidates=1, max_concurrency=8,
                                       latency_s=2.0, meta_latency_s=10.0, profile=PROFILE)
    assert other["executor"]["calls"] == est["executor"]["calls"]
    # one job at a time: best_seed starts after W4S has scored the seeds, and replays them from the cache
    serial = estimate.estimate_evaluate(sizes={"gsm8k": (4, 10)}, executor_models=["gpt-4o-mini"], meta_model="x",
                                        seeds=[0, 1], methods=methods, iterations=3, num_candidates=1, max_concurrency=8,
                                        latency_s=2.0, meta_latency_s=10.0, profile=PROFILE, max_parallel_jobs=1)
    assert serial["executor"]["calls"] == est["executor"]["calls"]
    assert serial["executor"]["paid_calls"] == pytest.approx(est["executor"]["paid_calls"] - 2 * 4 * 3)
    # an API tier's tokens per minute can bound the run before its request cap
    slow = estimate.estimate_evaluate(sizes={"gsm8k": (4, 10)}, executor_models=["gpt-4o-mini"], meta_model="x",
                                      seeds=[0, 1], methods=methods, iterations=3, num_candidates=1, max_concurrency=8,
                                      latency_s=2.0, meta_latency_s=10.0, profile=PROFILE, tokens_per_minute=100)
    tokens = paid["paid_prompt_tokens"] + paid["paid_completion_tokens"]
    assert slow["api_bound_hours"] == pytest.approx(tokens / 100 / 60)
    col = estimate.estimate_collect(sizes={"gsm8k": 6}, executor_model="gpt-3.5-turbo", meta_model="x", num_episodes=2,
                                    num_turns=4, num_candidates=5, max_concurrency=8, latency_s=2.0,
                                    meta_latency_s=10.0, profile=PROFILE)
    per_candidate = 6 * 0.8 + 1.5  # samples
    assert col["executor"]["calls"] == pytest.approx(2 * (6 * 3 + 4 * 5 * per_candidate * 2))
    # the 2nd episode's seeds and every passing self-check sample are cache hits
    assert col["executor"]["paid_calls"] == pytest.approx(6 * 3 + 2 * 4 * 5 * (per_candidate - 0.8) * 2)
    assert col["meta"]["calls"] == pytest.approx(2 * 4 * 5 * 0.4)


@pytest.mark.parametrize("script", ["evaluate.py", "collect.py"])
def test_estimate_cli_makes_no_call_and_writes_nothing(script, data_dir, tmp_path):
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps(PROFILE))
    flags = (["--executor-models", "gpt-4o-mini", "--benchmarks", "gsm8k", "svamp", "--iterations", "30",
              "--limit-valid", "8"] if script == "evaluate.py" else
             ["--executor-model", "gpt-3.5-turbo", "--benchmarks", "gsm8k", "--num-episodes", "4"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI")}
    env["OPENAI_BASE_URL"] = "http://127.0.0.1:9/v1"  # nothing listens there: any call would fail
    out = subprocess.run([sys.executable, str(ROOT / script), "--estimate", "--call-profile", str(profile),
                          "--meta-model", "gpt-4o", "--data-dir", str(data_dir), *flags],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "estimate (no call made" in out.stdout and "calls" in out.stdout and " h at 32 requests" in out.stdout
    assert "$" in out.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["profile.json"]  # no run folder, no cache


# ----------------------------------------------------------------------------------------------------
# The concurrent job scheduler of evaluate.py

def test_run_jobs_runs_side_by_side_within_the_limit_and_stops_on_budget():
    import threading
    import evaluate
    from executor import BudgetExceeded
    lock, state = threading.Lock(), {"now": 0, "peak": 0, "started": []}
    barrier = threading.Barrier(3, timeout=30)  # the first three can only pass if they run at once

    def job(i):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
            state["started"].append(i)
        try:
            if i < 3:
                barrier.wait()
            if i == 7:
                raise BudgetExceeded("spent")
        finally:
            with lock:
                state["now"] -= 1

    assert evaluate.run_jobs(list(range(12)), job, max_parallel=3, progress=False) == 3
    assert state["peak"] == 3
    started = state["started"]
    assert sorted(started[:3]) == [0, 1, 2] and 7 in started and len(started) == len(set(started))
    assert len(started) <= 7 + 3  # after the stop, no job beyond those already running starts

    with pytest.raises(ZeroDivisionError):  # a bug is raised, after the running jobs end
        evaluate.run_jobs([0, 1], lambda i: 1 / i, max_parallel=2, progress=False)


def test_request_cap_hands_slots_to_the_lowest_priority_number_first():
    import threading
    import evaluate
    cap = evaluate.RequestCap(1)
    cap.acquire(1)  # the only slot is taken: the next ones queue
    order, threads = [], []
    for i, priority in enumerate([2, 2, 0, 1]):
        t = threading.Thread(target=lambda i=i, p=priority: (cap.acquire(p), order.append(i), cap.release()))
        t.start()
        threads.append(t)
        while len(cap._waiting) < i + 1:  # queued in this order before the slot frees
            threading.Event().wait(0.01)
    cap.release()
    for t in threads:
        t.join(timeout=30)
    assert order == [2, 3, 0, 1] and cap.busy == 0


def test_request_cap_waits_while_the_last_minutes_paid_tokens_reach_the_limit():
    import evaluate
    from executor import CallRecord
    now = [0.0]
    cap = evaluate.RequestCap(4, tokens_per_minute=1000, clock=lambda: now[0],
                              sleep=lambda s: now.__setitem__(0, now[0] + s))  # a simulated clock
    rec = lambda tokens, cached=False: CallRecord("m", tokens // 2, tokens - tokens // 2, 0.0, 0.0, cached=cached)
    with cap.slot(0).hold(4):
        assert cap._reserved == 1000  # in flight: the first request reserves a default
        cap.spend(rec(400))
        cap.spend(rec(5000, cached=True))  # the cache answered: no tokens from the tier
    with cap.slot(0).hold(4):  # 400 spent + 400 expected (the mean paid call) fit in 1000: no wait
        assert now[0] == 0.0 and cap._reserved == 400
        now[0] = 10.0
        cap.spend(rec(500))
    with cap.slot(0).hold(4):  # 900 + 450 do not fit until the first call leaves the minute, at 60
        assert 60.0 <= now[0] < 62.0 and cap.busy == 1
    assert cap.busy == 0 and cap._reserved == 0
    plain = evaluate.RequestCap(1, clock=lambda: 1 / 0)  # no limit: never reads the clock
    plain.spend(rec(10**9))
    with plain.slot(0).hold(1):
        assert plain.busy == 1


def test_concurrent_evaluate_same_lines_and_resume_after_kill(index, data_dir, tmp_path):
    import signal
    import time
    sim = S.Simulator(index, S.SimConfig(time_scale=0.001))
    with S.SimServer(sim) as srv:
        def evaluate(where, parallel, kill_after_lines=None):
            where.mkdir(exist_ok=True)
            cmd = [sys.executable, str(ROOT / "evaluate.py"), "--run", "t", "--benchmarks", "gsm8k", "mmlu_pro",
                   "--executor-models", "gpt-4o-mini", "--executor-base-url", srv.base_url, "--meta-model", "sim-meta",
                   "--meta-base-url", srv.base_url, "--limit-valid", "2", "--limit-test", "3", "--iterations", "2",
                   "--max-repairs", "1", "--max-parallel-jobs", str(parallel), "--no-progress",
                   "--data-dir", str(data_dir), "--num-bootstrap", "10"]
            proc = subprocess.Popen(cmd, cwd=where, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            results = where / "results" / "t" / "results.jsonl"
            while kill_after_lines and proc.poll() is None:
                if results.exists() and len(results.read_text().splitlines()) >= kill_after_lines:
                    os.killpg(proc.pid, signal.SIGKILL)
                    break
                time.sleep(0.05)
            out = proc.communicate(timeout=240)[0].decode()
            return proc.returncode, out, [json.loads(line) for line in results.read_text().splitlines()]

        rc, out, sequential = evaluate(tmp_path / "seq", 1)
        assert rc == 0, out[-2000:]
        rc, _, partial = evaluate(tmp_path / "par", 8, kill_after_lines=2)
        assert rc == -signal.SIGKILL and 2 <= len(partial) < 14
        rc, out, concurrent = evaluate(tmp_path / "par", 8)
        assert rc == 0, out[-2000:]
    key = lambda r: (r["benchmark"], r["method"])  # noqa: E731
    assert len(concurrent) == len({key(r) for r in concurrent}) == 14  # one line per job, none twice
    assert [r for r in concurrent[: len(partial)]] == partial  # finished lines are kept as they were
    seq = {key(r): r for r in sequential}
    for r in concurrent:
        assert r["n"] == seq[key(r)]["n"] == 3
        if r["method"] in ("vanilla", "cot", "cot_sc", "llm_debate"):  # fixed calls per sample: each job's own
            assert r["calls"] == r["test_calls"] == seq[key(r)]["calls"] == 3 * (5 if r["method"] == "llm_debate" else 1)
        if r["method"] == "w4s":
            traj = [json.loads(line) for line in (tmp_path / "par" / "results" / "t" / r["trajectory"]).read_text().splitlines()]
            assert sorted(t["turn"] for t in traj) == [0, 1] and r["meta_calls"] >= 1


def test_job_ledger_counts_its_own_calls_and_spends_the_runs_budget():
    import evaluate
    from executor import BudgetExceeded, CallRecord, Ledger
    run = Ledger(budget_usd=0.01)
    mine, other = evaluate.JobLedger(run), evaluate.JobLedger(run)
    mine.record(CallRecord("gpt-4o-mini", 10, 5, cost_usd=0.004))
    other.record(CallRecord("gpt-4o-mini", 7, 3, cost_usd=0.004))
    assert mine.summary()["calls"] == 1 and mine.summary()["prompt_tokens"] == 10
    assert run.summary()["calls"] == 2
    with pytest.raises(BudgetExceeded):  # the hard budget's reservation is the run's, not the job's
        mine.reserve(0.005)
    other.record(CallRecord("gpt-4o-mini", 1, 1, cost_usd=0.003))
    with pytest.raises(BudgetExceeded):
        mine.check_budget()


# ----------------------------------------------------------------------------------------------------
# The estimate against a measured run: a small collection with known counts, measured as
# `bench/rehearse.py --write-profile` measures it, then estimated for the same and for other plans

GOOD = "Analysis.\n```python\ndef solver(agent, task):\n    return {'answer': '1'}\n```\n"
NO_CODE = "Analysis without any code block."


def _known_collection(run: Path, n_valid: int = 4, episodes: int = 2, turns: int = 3) -> dict:
    """runs/<run>/ as collect.py writes it, one executor call a sample: per turn candidate A passes its one
    self-check and is scored on the split (its first sample replayed from the cache); B has no code block,
    is repaired and fails its self-check (one sample); the seeds take 3 calls an example, from the cache
    after the first episode. The last turn's calls write 3x the completion tokens (a drifting search)."""
    from executor import cost_usd
    run.mkdir(parents=True)
    rows, records = [], []

    def call(completion: int, cached: bool) -> float:
        paid = 0.0 if cached else cost_usd("gpt-3.5-turbo", 100, completion)
        rows.append({"prompt_tokens": 100, "completion_tokens": completion, "cached": cached, "cost_usd": paid})
        return paid

    for episode in range(episodes):
        for _ in range(3 * n_valid):
            call(50, cached=episode > 0)
        for turn in range(turns):
            completion = 150 if turn == turns - 1 else 50
            a = sum(call(completion, cached=i == 1) for i in range(1 + n_valid))  # sample 0 twice
            b = call(completion, cached=False)
            cands = [{"attempts": [GOOD], "valid_acc": 0.5, "calls": 1 + n_valid, "prompt_tokens": 100 * (1 + n_valid),
                      "completion_tokens": completion * (1 + n_valid), "cost_usd": a},
                     {"attempts": [NO_CODE, GOOD], "valid_acc": None, "calls": 1, "prompt_tokens": 100,
                      "completion_tokens": completion, "cost_usd": b}]
            records.append({"benchmark": "gsm8k", "episode": episode, "turn": turn, "candidates": cands,
                            "meta_usage": {"calls": 2, "prompt_tokens": 3000 + 1000 * turn, "completion_tokens": 500}})
    (run / "trajectories.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run / "calls.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"calls": len(rows), "paid_calls": sum(not r["cached"] for r in rows),
            "completion_tokens": sum(r["completion_tokens"] for r in rows),
            "paid_usd": sum(r["cost_usd"] for r in rows), "meta_prompt_tokens": sum(
                r["meta_usage"]["prompt_tokens"] for r in records)}


def _collect_estimate(profile, n_valid=4, episodes=2, turns=3):
    import estimate
    return estimate.estimate_collect(sizes={"gsm8k": n_valid}, executor_model="gpt-3.5-turbo", meta_model="x",
                                     num_episodes=episodes, num_turns=turns, num_candidates=2, max_concurrency=8,
                                     latency_s=1.0, meta_latency_s=1.0, profile=profile)


def test_estimate_of_a_measured_collection_reproduces_its_counts(tmp_path):
    import rehearse
    measured = _known_collection(tmp_path / "run")
    table, turns = rehearse.collect_profile(tmp_path / "run", {"gsm8k": 4}, num_candidates=2)
    search = table["gsm8k"]["search"]
    # B's first attempt has no code block: turned down before any call, so 1 self-check sample, not 2
    assert search["checks"] == pytest.approx(1.0) and search["pass_rate"] == pytest.approx(0.5)
    assert search["cached"] == pytest.approx(0.0, abs=1e-9)
    # the seeds are what the audit log holds beyond the candidates: 3 calls an example of each episode
    assert table["gsm8k"]["seeds_valid"] == pytest.approx([3.0, 300.0, 150.0])
    assert turns["sample"][-1][2] > 1.5 > turns["sample"][0][2]  # the last turn writes 3x the tokens
    est = _collect_estimate({"collect": table, "collect_turns": turns})
    ex = est["executor"]
    assert ex["calls"] == pytest.approx(measured["calls"])
    assert ex["paid_calls"] == pytest.approx(measured["paid_calls"])
    assert ex["completion_tokens"] == pytest.approx(measured["completion_tokens"])
    assert ex["paid_usd"] == pytest.approx(measured["paid_usd"], rel=1e-3)
    assert est["meta"]["calls"] == pytest.approx(2 * 3 * 2) and \
        est["meta"]["prompt_tokens"] == pytest.approx(measured["meta_prompt_tokens"])
    # another plan from the same profile: a turn is A's 1 + 10 samples and B's 1, A's first one replayed;
    # the seeds are paid in the first episode only
    bigger = _collect_estimate({"collect": table, "collect_turns": turns}, n_valid=10, episodes=3, turns=3)["executor"]
    assert bigger["calls"] == pytest.approx(3 * (3 * 10 + 3 * (1 + 10 + 1)))
    assert bigger["paid_calls"] == pytest.approx(3 * 10 + 3 * 3 * (10 + 1))


def test_turns_past_the_profile_take_its_last_third(tmp_path):
    import estimate
    import rehearse
    _known_collection(tmp_path / "run", turns=3)
    table, turns = rehearse.collect_profile(tmp_path / "run", {"gsm8k": 4}, num_candidates=2)
    profile = {"collect": table, "collect_turns": turns}
    assert estimate.turn_factor(turns["sample"], 7) == turns["sample"][2]  # the last third of 3 turns: turn 2
    three, five = _collect_estimate(profile, turns=3)["executor"], _collect_estimate(profile, turns=5)["executor"]
    assert five["calls"] - three["calls"] == pytest.approx(2 * 2 * (1 + 4 + 1))
    # two more turns cost like the last (heavy) one: 3x the completion tokens of an early turn
    early = (_collect_estimate(profile, turns=2)["executor"]["completion_tokens"]
             - _collect_estimate(profile, turns=1)["executor"]["completion_tokens"])
    assert five["completion_tokens"] - three["completion_tokens"] == pytest.approx(2 * 3 * early, rel=1e-3)


def test_old_profiles_are_refused_and_far_validation_sizes_noted(tmp_path):
    import estimate
    old = tmp_path / "old.json"
    old.write_text(json.dumps({k: v for k, v in PROFILE.items() if k != "version"}))
    with pytest.raises(SystemExit, match="older format"):
        estimate.load_profile(old)
    assert not _collect_estimate(PROFILE, n_valid=6)["notes"]
    note = _collect_estimate(PROFILE, n_valid=128)["notes"]
    assert len(note) == 1 and "gsm8k 6 -> 128" in note[0]
    assert "note" in estimate.format_estimate("collect", _collect_estimate(PROFILE, n_valid=128), "t")

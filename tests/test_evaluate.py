"""evaluate.py end to end against scripted OpenAI-compatible servers (tests/local_server.py).

The executor server answers the GSM8K questions it recognises correctly for a known subset (the first
RIGHT of each limited split) and wrongly for the rest, so every baseline must score exactly RIGHT/N. A
request containing the marker ORACLE is always answered correctly: the meta-agent server proposes, in
order, a medium workflow (no marker), the ORACLE workflow and a bad one, so the workflow chosen on
validation is the second, and only it can reach 100% on test. Everything else is real: the sandbox, the
benchmark files (../shared/data), the cache, the scorer.
"""
import json
import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from local_server import LocalServer, Reply

ROOT = Path(__file__).resolve().parents[1]
N_VALID, N_TEST, RIGHT_VALID, RIGHT_TEST = 4, 5, 2, 3
WRONG = "-987654321"

MEDIUM = '''def solver(agent, task):
    r = agent.call_json_format_llm(messages=[{"role": "user", "content": task}], temperature=0.0,
                                   num_of_response=1, agent_role="math expert",
                                   return_dict_keys=["reasoning", "answer"], instructions="Solve it.")
    return {"answer": str(r[0]["answer"])}
'''
ORACLE = MEDIUM.replace('"content": task', '"content": "ORACLE " + task')
BAD = 'def solver(agent, task):\n    return {"answer": "-1"}\n'


def action(code: str) -> str:
    return f"Analysis: try this.\n```python\n{code}```\n"


@pytest.fixture
def gold(data_dir):
    """[(task, gold answer, answered right?)] for the limited validation and test splits of GSM8K."""
    from benchmarks import load_benchmark
    bench = load_benchmark("gsm8k", data_dir)
    valid, test = bench.examples("valid")[:N_VALID], bench.examples("test")[:N_TEST]
    table = [(e["task"], str(e["answer"]), i < RIGHT_VALID) for i, e in enumerate(valid)]
    table += [(e["task"], str(e["answer"]), i < RIGHT_TEST) for i, e in enumerate(test)]
    for e in valid + test:  # the scripted answers really score 1 and 0
        assert bench.score(str(e["answer"]), e) == 1.0 and bench.score(WRONG, e) == 0.0
    return {"table": table, "valid": [e["task"] for e in valid], "test": [e["task"] for e in test]}


def executor_responder(table):
    def respond(body: dict) -> Reply:
        text = "\n".join(str(m["content"]) for m in body["messages"])
        answer = "0"
        for task, answer_gold, right in table:
            if task in text:
                answer = answer_gold if right or "ORACLE" in text else WRONG
                break
        payload = {"reasoning": "step by step", "answer": answer, "feedback": "looks fine", "correct": "True",
                   "code": f"def solution():\n    return {answer!r}\n"}
        return Reply([json.dumps(payload)] * body.get("n", 1))
    return respond


def meta_responder(codes: list[str]):
    """Reply with codes[0], codes[1], ... in request order (the last one repeats)."""
    lock, seen = threading.Lock(), [0]

    def respond(body: dict) -> Reply:
        with lock:
            i, seen[0] = seen[0], seen[0] + 1
        return Reply([action(codes[min(i, len(codes) - 1)])] * body.get("n", 1))
    return respond


def run_cli(args: list[str], cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OPENAI_API_KEY": "test-key", "W4S_CACHE_DIR": str(cwd / "w4s-cache")}
    return subprocess.run([sys.executable, str(ROOT / "evaluate.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def texts(server) -> list[str]:
    return ["\n".join(str(m["content"]) for m in r["messages"]) for r in server.requests]


def test_baselines_w4s_selection_reports_and_resume(tmp_path, data_dir, gold):
    with LocalServer(executor_responder(gold["table"])) as ex, LocalServer(meta_responder([MEDIUM, ORACLE, BAD])) as meta:
        argv = ["--run", "t", "--data-dir", str(data_dir), "--benchmarks", "gsm8k",
                "--executor-models", "gpt-4o-mini", "--executor-base-url", ex.base_url,
                "--meta-model", "meta-sim", "--meta-base-url", meta.base_url, "--iterations", "3",
                "--limit-valid", str(N_VALID), "--limit-test", str(N_TEST), "--max-concurrency", "8", "--no-progress"]
        proc = run_cli(argv, tmp_path)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        out = tmp_path / "results" / "t"
        rows = {r["method"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
        assert set(rows) == {"vanilla", "cot", "cot_sc", "self_refine", "llm_debate", "best_seed", "w4s"}

        # Baselines: exactly the scripted accuracy, with the calls behind it.
        for m in ("vanilla", "cot", "cot_sc", "self_refine", "llm_debate"):
            assert rows[m]["accuracy"] == RIGHT_TEST / N_TEST, (m, rows[m])
            assert rows[m]["n"] == N_TEST and rows[m]["calls"] > 0 and rows[m]["test_calls"] >= N_TEST
            assert rows[m]["ci"][0] <= rows[m]["accuracy"] <= rows[m]["ci"][1]
        assert rows["vanilla"]["test_calls"] == N_TEST
        # Best seed: chosen on validation (all seeds tie at RIGHT_VALID/N_VALID: the first one wins).
        assert rows["best_seed"]["valid_acc"] == RIGHT_VALID / N_VALID
        assert rows["best_seed"]["chosen"] == "Chain-of-Thought"
        assert rows["best_seed"]["accuracy"] == RIGHT_TEST / N_TEST
        # Its test calls are the CoT baseline's (served from the cache): still priced at list price.
        assert rows["best_seed"]["test_cost_usd"] == rows["cot"]["test_cost_usd"] > 0
        # W4S: the meta-agent proposed MEDIUM, ORACLE, BAD; ORACLE has the best validation accuracy.
        w4s = rows["w4s"]
        assert w4s["turn_valid_acc"] == [RIGHT_VALID / N_VALID, 1.0, None]  # BAD scored 0: it did not advance
        assert w4s["valid_acc"] == 1.0 and w4s["chosen"] == "turn 1"
        assert w4s["accuracy"] == 1.0 and w4s["meta_calls"] == 3
        assert "ORACLE" in (out / w4s["workflow"]).read_text()

        # Test hygiene: the meta-agent never saw a test question; the chosen workflow ran once per test example.
        assert not any(t in m for m in texts(meta) for t in gold["test"])
        oracle_on_test = [m for m in texts(ex) if "ORACLE" in m and any(t in m for t in gold["test"])]
        assert len(oracle_on_test) == N_TEST

        # Reports.
        table = (out / "table.md").read_text()
        assert "| W4S |" in table and "paper, W4S with GPT-4o-mini" in table and "60.0 ±" in table
        assert "NOT paper-scale" not in table
        csv_lines = (out / "results.csv").read_text().strip().splitlines()
        assert csv_lines[0].startswith("benchmark,executor_model,method") and len(csv_lines) == 8
        for png in ("valid_curves.png", "cost_accuracy.png"):
            assert (out / png).stat().st_size > 1000
        assert len(list((out / "workflows").glob("*.py"))) == 7

        # Resume: the same command skips every finished line and makes no request at all.
        counts = (ex.count, meta.count)
        again = run_cli(argv, tmp_path)
        assert again.returncode == 0, again.stderr[-3000:]
        assert (ex.count, meta.count) == counts
        assert "7 skipped" in again.stdout
        assert len((out / "results.jsonl").read_text().splitlines()) == 7


def test_test_split_read_once_per_benchmark(tmp_path, data_dir, gold, monkeypatch):
    """In process, with a spy around the real benchmark: two seeds, W4S and a baseline, one test read."""
    import benchmarks
    import evaluate
    reads = Counter()
    real_load = benchmarks.load_benchmark

    class Spy:
        def __init__(self, bench):
            self._bench = bench

        def __getattr__(self, name):
            return getattr(self._bench, name)

        def examples(self, split):
            reads[split] += 1
            return self._bench.examples(split)

    monkeypatch.setattr(benchmarks, "load_benchmark", lambda name, data_dir=None: Spy(real_load(name, data_dir)))
    monkeypatch.chdir(tmp_path)
    with LocalServer(executor_responder(gold["table"])) as ex, LocalServer(meta_responder([ORACLE])) as meta:
        status = evaluate.main(["--run", "spy", "--data-dir", str(data_dir), "--benchmarks", "gsm8k",
                                "--executor-models", "gpt-4o-mini", "--executor-base-url", ex.base_url,
                                "--meta-model", "meta-sim", "--meta-base-url", meta.base_url,
                                "--methods", "vanilla", "w4s", "--seeds", "0", "1", "--iterations", "1",
                                "--train-benchmarks", "none",
                                "--limit-valid", str(N_VALID), "--limit-test", str(N_TEST), "--no-progress"])
        assert status == 0
        assert reads["test"] == 1
        assert not any(t in m for m in texts(meta) for t in gold["test"])
    out = tmp_path / "results" / "spy"
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted((r["method"], r["seed"]) for r in rows) == [("vanilla", 0), ("vanilla", 1), ("w4s", 0), ("w4s", 1)]
    assert all(r["accuracy"] == 1.0 for r in rows if r["method"] == "w4s")
    csv_rows = (out / "results.csv").read_text().splitlines()
    assert any(line.startswith("gsm8k,gpt-4o-mini,w4s,2,5,1.0") for line in csv_rows), csv_rows


def test_single_workflow_json(tmp_path, data_dir, gold):
    import prompts
    good = tmp_path / "cot.py"
    good.write_text(prompts.baseline_workflows("math")["cot"])
    broken = tmp_path / "broken.py"
    broken.write_text("def solver(agent, task):\n    raise ValueError('no')\n")
    keys = {"benchmark", "split", "n", "accuracy", "calls", "prompt_tokens", "completion_tokens", "cost_usd", "failures"}
    with LocalServer(executor_responder(gold["table"])) as ex:
        common = ["--benchmark", "gsm8k", "--split", "valid", "--limit", str(N_VALID), "--data-dir", str(data_dir),
                  "--executor-models", "gpt-4o-mini", "--executor-base-url", ex.base_url]
        proc = run_cli(["--workflow", str(good), *common, "--json"], tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert set(result) == keys
        assert result["accuracy"] == RIGHT_VALID / N_VALID and result["n"] == N_VALID and result["split"] == "valid"
        assert result["calls"] == N_VALID and result["prompt_tokens"] > 0 and result["failures"] == {}

        proc = run_cli(["--workflow", str(broken), *common, "--json"], tmp_path)
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert result["accuracy"] == 0.0 and result["failures"] == {"runtime_error": N_VALID}

        proc = run_cli(["--workflow", str(good), *common], tmp_path)  # human-readable: cached, no new call
        assert proc.returncode == 0 and "accuracy 0.5000" in proc.stdout
        assert ex.count == N_VALID


def test_bootstrap_ci_and_table_heading():
    from evaluate import bootstrap_ci, render_table
    assert bootstrap_ci(np.ones((1, 5))) == (1.0, 1.0, 1.0)
    scores = np.array([[1, 0, 1, 1, 0, 1, 0, 1, 1, 0]], dtype=float)
    mean, lo, hi = bootstrap_ci(scores)
    assert mean == 0.6 and 0.2 <= lo < 0.6 < hi <= 0.95
    assert bootstrap_ci(scores) == (mean, lo, hi)  # fixed RNG
    two_seeds = np.vstack([scores, 1 - scores])     # seeds disagree: wider than either alone
    m2, lo2, hi2 = bootstrap_ci(two_seeds)
    assert m2 == 0.5 and hi2 - lo2 > 0

    agg = [{"benchmark": "math", "executor_model": "embedded", "method": "w4s", "num_seeds": 1, "n": 10,
            "accuracy": 0.5, "ci_lo": 0.2, "ci_hi": 0.8, "cost_usd_per_run": 0.0}]
    table = render_table(agg, ["math", "gsm8k"], "embedded", "tiny")
    assert "embedded SmolLM2-135M: NOT paper-scale numbers" in table
    assert "| W4S | 50.0 ± 30.0 ($0.0000) |" in table
    assert "| *paper, W4S with GPT-4o-mini (reported)* | 63.0 |" in table


def test_ctrl_c_keeps_finished_lines_and_exits(tmp_path, data_dir, gold):
    import signal
    import time
    respond = executor_responder(gold["table"])

    def slow(body):  # the first job (5 calls) is quick; later ones hang long enough to be interrupted
        reply = respond(body)
        reply.delay_s = 30.0 if "step by step" in str(body["messages"]) else 0.0
        return reply
    with LocalServer(slow) as ex:
        env = {**os.environ, "OPENAI_API_KEY": "test-key"}
        proc = subprocess.Popen([sys.executable, str(ROOT / "evaluate.py"), "--run", "c", "--data-dir", str(data_dir),
                                 "--benchmarks", "gsm8k", "--methods", "vanilla", "cot", "--executor-models",
                                 "gpt-4o-mini", "--executor-base-url", ex.base_url, "--limit-test", str(N_TEST),
                                 "--no-progress"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
        results = tmp_path / "results" / "c" / "results.jsonl"
        deadline = time.time() + 60
        while time.time() < deadline and not (results.exists() and results.read_text().count("\n") == 1):
            time.sleep(0.2)
        time.sleep(1.0)  # the cot job is now waiting on the slow server
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=20)
    assert proc.returncode == 130, stdout
    assert "interrupted" in stdout and len(results.read_text().splitlines()) == 1
    assert "| Vanilla |" in (tmp_path / "results" / "c" / "table.md").read_text()


def test_jobs_on_an_in_process_executor_run_one_at_a_time(tmp_path):
    """Side by side, jobs on an in-process model all queue on it and their samples hit the sample timeout;
    against an endpoint they run side by side under the request cap."""
    import evaluate
    from executor import parse_args
    local = parse_args(evaluate.Args, ["--executor-models", "embedded", "--max-parallel-jobs", "16"])
    mixed = parse_args(evaluate.Args, ["--executor-models", "gpt-4o-mini", str(tmp_path)])
    (tmp_path / "config.json").write_text("{}")  # a local Hugging Face folder
    remote = parse_args(evaluate.Args, ["--executor-models", "gpt-4o-mini", "--max-parallel-jobs", "5"])
    served = parse_args(evaluate.Args, ["--executor-models", str(tmp_path), "--executor-base-url", "http://x/v1"])
    assert [evaluate.parallel_jobs(a) for a in (local, mixed, remote, served)] == [1, 1, 5, 16]


def test_side_by_side_jobs_share_the_cap_without_timing_out(tmp_path, data_dir, gold):
    """8 jobs x 5 samples x 5 sequential calls, a cap of 4 requests at 0.25 s each. With every job running
    4 samples at once (the old code), 32 samples' calls queue ~2 s each and samples pass their 7 s timeout;
    with samples shared out among the jobs running, each call waits about one latency and none times out."""
    with LocalServer(executor_responder(gold["table"]), latency_s=0.25) as ex:
        proc = run_cli(["--run", "q", "--data-dir", str(data_dir), "--benchmarks", "gsm8k", "--methods", "llm_debate",
                        "--seeds", *map(str, range(8)), "--executor-models", "gpt-4o-mini", "--executor-base-url",
                        ex.base_url, "--limit-test", str(N_TEST), "--max-concurrency", "4", "--sample-timeout-s", "7",
                        "--max-parallel-jobs", "8", "--no-progress", "--no-cache"], tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert ex.max_in_flight <= 4
    rows = [json.loads(line) for line in (tmp_path / "results/q/results.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(r["failures"] == {} and r["n"] == N_TEST for r in rows), rows


def test_a_seed_recorded_twice_counts_once_and_the_heading_names_the_seeds_shown(tmp_path):
    """Two processes on one run folder can both write a job's line: the table averaged the copy as another
    seed. And a resume with other --seeds (a resumable change) kept every earlier seed in the table while
    its heading named only the new ones."""
    from evaluate import Args, aggregate, write_reports
    (tmp_path / "scores").mkdir()
    rows = []
    for seed, scores in ((0, [1, 1, 0, 0]), (0, [1, 1, 0, 0]), (1, [1, 1, 1, 1])):
        (tmp_path / "scores" / f"s{seed}.json").write_text(json.dumps({"ids": list("abcd"), "scores": scores}))
        rows.append({"benchmark": "gsm8k", "executor_model": "gpt-4o-mini", "method": "cot", "seed": seed,
                     "n": 4, "scores_path": f"scores/s{seed}.json", "accuracy": sum(scores) / 4, "calls": 1,
                     "prompt_tokens": 1, "completion_tokens": 1, "cost_usd": 0.0, "meta_cost_usd": 0.0,
                     "test_cost_usd": 0.0, "paid_usd": 0.0})
    [agg] = aggregate(tmp_path, rows, 100)
    assert agg["num_seeds"] == 2 and agg["accuracy"] == 0.75
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_reports(tmp_path, Args(seeds=[1], benchmarks=["gsm8k"], methods=["cot"], train_benchmarks=["none"]))
    assert "Seeds [0, 1]" in (tmp_path / "table.md").read_text()

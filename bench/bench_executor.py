"""Figures for the executor (issue 2): concurrency against a slow endpoint, the cache, local micro-batching.

1. A local OpenAI-compatible server answers after L = 0.2 s. 128 samples each make 3 sequential
   agent.call_llm calls, all samples at once (128 threads, max_concurrency 128): the floor is 3 x L = 0.6 s.
2. The same run again on the warm cache: wall time, and requests the server saw (must be 0).
3. The embedded SmolLM2 model: 16 concurrent calls one at a time vs micro-batched.

    .venv/bin/python bench/bench_executor.py [--skip-local]

The server runs in its own process so that its Python work does not share our GIL, as a real endpoint.
"""
import multiprocessing as mp
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import executor as ex  # noqa: E402
from tests.local_server import LocalServer  # noqa: E402

LATENCY_S = 0.2
NUM_SAMPLES = 128
CALLS_PER_SAMPLE = 3


def _serve(conn, latency_s):
    """Child process: run the server, send its URL, then answer 'count' queries until 'stop'."""
    with LocalServer(latency_s=latency_s) as srv:
        conn.send(srv.base_url)
        while conn.recv() != "stop":
            conn.send(srv.count)


def run_workflow(agent: ex.Agent) -> float:
    """128 samples at once, each 3 sequential calls (a 3-step workflow); returns the wall time."""
    def sample(i):
        a = agent.fork()
        for step in range(CALLS_PER_SAMPLE):
            a.call_llm([{"role": "user", "content": f"sample {i} step {step}"}])

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=NUM_SAMPLES) as pool:
        list(pool.map(sample, range(NUM_SAMPLES)))
    return time.perf_counter() - t0


def bench_endpoint() -> None:
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=_serve, args=(child, LATENCY_S), daemon=True)
    proc.start()
    base_url = parent.recv()
    floor = CALLS_PER_SAMPLE * LATENCY_S
    with tempfile.TemporaryDirectory() as tmp:
        cache = ex.ResponseCache(Path(tmp) / "llm.sqlite")
        llm = ex.LLM("gpt-4o-mini", base_url, "bench", cache=cache, max_concurrency=NUM_SAMPLES)
        agent = ex.Agent(llm)
        agent.call_llm([{"role": "user", "content": "warm up the connection pool"}])
        parent.send("count")
        before = parent.recv()
        cpu0 = time.process_time()
        cold = run_workflow(agent)
        cold_cpu = time.process_time() - cpu0
        parent.send("count")
        after_cold = parent.recv()
        warm = run_workflow(agent)
        parent.send("count")
        after_warm = parent.recv()
    parent.send("stop")
    proc.join(5)
    print(f"endpoint: {NUM_SAMPLES} samples x {CALLS_PER_SAMPLE} sequential calls, latency {LATENCY_S} s, "
          f"concurrency {NUM_SAMPLES}")
    print(f"  cold cache: {cold:.2f} s wall = {cold / floor:.2f}x the {floor:.1f} s floor "
          f"({after_cold - before} requests; client CPU {cold_cpu:.2f} s = "
          f"{cold_cpu / (after_cold - before) * 1000:.1f} ms per call)")
    print(f"  warm cache: {warm:.3f} s wall, {after_warm - after_cold} requests to the server")


def bench_local(num_calls: int = 16, max_tokens: int = 24) -> None:
    llm = ex.LLM(ex.EMBEDDED, max_tokens=max_tokens, max_concurrency=num_calls)
    llm.chat([{"role": "user", "content": "warm up"}], max_tokens=4)  # load the model
    timings = {}
    for batch in (1, 16):
        llm._local.max_batch = batch
        threads = [threading.Thread(target=llm.chat, args=([{"role": "user", "content": f"Name a fruit ({batch}, {i})."}],),
                                    kwargs={"temperature": 0.7}) for i in range(num_calls)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        timings[batch] = time.perf_counter() - t0
    print(f"embedded model: {num_calls} concurrent calls, max_tokens {max_tokens}, "
          f"torch threads {__import__('torch').get_num_threads()}")
    print(f"  one at a time: {timings[1]:.1f} s | micro-batched (16): {timings[16]:.1f} s | "
          f"speedup {timings[1] / timings[16]:.1f}x")


if __name__ == "__main__":
    bench_endpoint()
    if "--skip-local" not in sys.argv:
        bench_local()

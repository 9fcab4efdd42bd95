"""Figures for the executor (issue 2): concurrency against a slow endpoint, the cache, local micro-batching.

1. A local OpenAI-compatible server answers after L = 0.2 s. 128 samples each make 3 sequential
   agent.call_llm calls, all samples at once (128 threads, max_concurrency 128): the floor is 3 x L = 0.6 s.
2. The same run again on the warm cache: wall time, and requests the server saw (must be 0).
3. The embedded SmolLM2 model: 16 concurrent calls one at a time vs micro-batched.
4. The embedded model, n samples of one long prompt (a meta-agent state): the prompt's KV cache computed
   once and shared by the n rows (what _LocalModel does) vs generate() over n copies of the prompt.

    .venv/bin/python bench/bench_executor.py [--skip-local] [--only-prefill]

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


def bench_prefill(prompt_tokens: int = 3500, n: int = 2, max_tokens: int = 64) -> None:
    import torch
    local = ex._local_model(ex.embedded_model_dir())
    words = " ".join(f"word{i}" for i in range(prompt_tokens))
    ids = local.tokenizer(words, add_special_tokens=False)["input_ids"][:prompt_tokens]
    messages = [{"role": "user", "content": local.tokenizer.decode(ids)}]
    request = ex._LocalRequest(messages, (0.0, 1.0, max_tokens), n)
    t0 = time.perf_counter()
    shared = local._generate_batch([request], 0.0, 1.0, max_tokens)[0]
    t_shared = time.perf_counter() - t0
    prompt = local.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                 return_dict=True)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = local.model.generate(input_ids=prompt["input_ids"].repeat(n, 1), max_new_tokens=max_tokens,
                                   do_sample=False, pad_token_id=local.pad_id, eos_token_id=local.eos_ids)
    t_plain = time.perf_counter() - t0
    plain = local.tokenizer.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    print(f"embedded model: n={n} greedy samples of a {prompt['input_ids'].shape[1]}-token prompt, max_tokens "
          f"{max_tokens}, torch threads {torch.get_num_threads()}")
    print(f"  prompt pass shared: {t_shared:.1f} s | plain generate over {n} copies: {t_plain:.1f} s | "
          f"speedup {t_plain / t_shared:.2f}x | same text: {shared[0].content == plain}")


if __name__ == "__main__":
    if "--only-prefill" not in sys.argv:
        bench_endpoint()
    if "--skip-local" not in sys.argv:
        if "--only-prefill" not in sys.argv:
            bench_local()
        bench_prefill()

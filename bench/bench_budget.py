"""Figures for issue 12 "Budget and caps are hard": what a hostile workflow's requests can spend and load.

1. Spend: with gpt-4o prices, --budget-usd 0.001 and --executor-max-tokens 64, a workflow sends 4 calls
   of max_tokens=1e9 and n=1000 to a server that bills every token it was allowed (max_tokens x n):
   spent / budget, and the n and max_tokens the server saw.
2. Flood: 64 concurrent calls (n 1-5) with --budget-usd 0.01: spent / budget.
3. Cap: the policy's LLM and the executor's on one endpoint, --max-concurrency 33, 132 calls of n=3 to a
   server that ignores n (so each becomes 3 requests) and answers after 0.3 s, 1 request in 10 answered
   429: the most requests in flight at the server.

    .venv/bin/python bench/bench_budget.py
"""
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import executor as ex  # noqa: E402
from tests.local_server import LocalServer, Reply  # noqa: E402


def billing_everything(body: dict) -> Reply:
    n = body.get("n", 1)
    return Reply(["5"] * n, prompt_tokens=sum(len(m["content"]) for m in body["messages"]),
                 completion_tokens=body["max_tokens"] * n)


def in_threads(fn, count: int) -> None:
    threads = [threading.Thread(target=fn, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def spend(budget_usd: float, calls: int, max_tokens: int, n_of) -> tuple[float, LocalServer]:
    with LocalServer(billing_everything, latency_s=0.05) as srv:
        ledger = ex.Ledger(budget_usd=budget_usd)
        llm = ex.LLM("gpt-4o", srv.base_url, "k", ledger=ledger, max_tokens=64, max_retries=0)

        def call(i):
            try:
                ex.Agent(llm).call_llm([{"role": "user", "content": f"q{i}"}], max_tokens=max_tokens,
                                       num_of_response=n_of(i))
            except ex.BudgetExceeded:
                pass

        in_threads(call, calls)
    return ledger.summary()["cost_usd"], srv


def main() -> None:
    for budget in (0.001, 0.1):
        spent, srv = spend(budget, 4, 10 ** 9, lambda i: 1000)
        sent = sorted({(r.get("n", 1), r["max_tokens"]) for r in srv.requests})
        print(f"1. 4 calls of n=1000, max_tokens=1e9, budget ${budget}: spent ${spent:.6f} = {spent / budget:.2f}x "
              f"the budget; {srv.count} requests reached the server, (n, max_tokens) sent: {sent}")
    spent, srv = spend(0.01, 64, 100, lambda i: 1 + i % 5)
    print(f"2. 64 concurrent calls, budget $0.01: spent ${spent:.6f} = {spent / 0.01:.2f}x the budget "
          f"({srv.count} requests)")
    seen = iter(range(10 ** 9))
    with LocalServer(lambda b: Reply(status=429) if next(seen) % 10 == 9 else Reply(["x"], delay_s=0.3),
                     supports_n=False) as srv:
        llms = [ex.LLM(m, srv.base_url, "k", max_concurrency=33, max_retries=5) for m in ("gpt-4o", "gpt-4o-mini")]

        def call(i):
            try:
                llms[i % 2].chat([{"role": "user", "content": str(i)}], n=3)
            except ex.LLMError:
                pass

        in_threads(call, 132)
    print(f"3. two LLMs on one endpoint, cap 33: at most {srv.max_in_flight} requests in flight "
          f"({srv.count} requests)")


if __name__ == "__main__":
    main()

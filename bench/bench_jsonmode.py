"""JSON mode on the embedded model: the share of replies that parse with the requested keys, and tokens/s.

    python bench/bench_jsonmode.py [--max-tokens 64] [--n 2]

Asks short questions through `Agent.call_json_format_llm` (keys "reasoning", "answer"), all at once from
threads as a workflow does (so the in-process model micro-batches them), with no cache. A reply counts as
parsed when the model's own text is a JSON object holding every requested key (the executor fills a
missing key with "NO <key> IN DICTIONARY", which does not count).
"""
from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import executor as ex  # noqa: E402

QUESTIONS = ["What is 7 + 5?", "How many legs does a spider have?", "What is the capital of France?",
             "What is 9 times 3?", "Which planet is closest to the sun?", "What is 100 minus 58?",
             "What colour is the sky on a clear day?", "How many days are in a week?"]
KEYS = ["reasoning", "answer"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--max-tokens", type=int, default=64, help="executor max tokens per call (the CPU recipe's)")
    p.add_argument("--n", type=int, default=2, help="samples per question (num_of_response)")
    args = p.parse_args()
    llm = ex.LLM(ex.EMBEDDED, max_tokens=args.max_tokens)
    agent = ex.Agent(llm)
    agent.call_llm([{"role": "user", "content": "Hi"}], max_tokens=2)  # load the model outside the timing
    before = llm.ledger.summary()["completion_tokens"]

    def ask(q):
        return agent.fork().call_json_format_llm([{"role": "user", "content": q}], temperature=0.5,
                                                 num_of_response=args.n, return_dict_keys=KEYS)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(QUESTIONS)) as pool:
        replies = [d for ds in pool.map(ask, QUESTIONS) for d in ds]
    wall = time.perf_counter() - t0
    tokens = llm.ledger.summary()["completion_tokens"] - before
    parsed = sum(all(k in d and d[k] != f"NO {k} IN DICTIONARY" for k in KEYS) and "JSONDecodeError" not in d
                 for d in replies)
    for d in replies[:4]:
        print("  e.g.", d)
    print(f"parsed with keys {KEYS}: {parsed}/{len(replies)} ({100 * parsed / len(replies):.0f}%)")
    print(f"{tokens} completion tokens in {wall:.1f} s: {tokens / wall:.1f} tokens/s "
          f"({len(QUESTIONS)} concurrent calls x n={args.n}, max_tokens={args.max_tokens})")


if __name__ == "__main__":
    main()

"""Benchmarks of benchmarks/: cold load of all eleven, and scoring the 164 HumanEval canonical solutions.

    .venv/bin/python bench/bench_benchmarks.py [--data-dir ../shared/data] [--num-workers 8]

Each load runs in a fresh interpreter (cold: imports, file reads, sha256 checks, splits); scoring runs
the hidden tests in the sandbox, `--num-workers` at a time.
"""
import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LOAD_ALL = """
import sys, time
t = time.perf_counter()
from benchmarks import BENCHMARKS, load_benchmark
for name in BENCHMARKS:
    t0 = time.perf_counter()
    b = load_benchmark(name, sys.argv[1])
    print(f"{name:10s} {len(b.examples('valid')):4d} / {len(b.examples('test')):4d}  {time.perf_counter() - t0:6.2f} s")
print(f"TOTAL {time.perf_counter() - t:.2f}")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--num-workers", type=int, default=8)
    args = parser.parse_args()

    # ---------------------------------------------------------------- cold load of all eleven
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", LOAD_ALL, args.data_dir], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    wall = time.perf_counter() - t
    print(out.rstrip())
    print(f"load all eleven (cold, fresh interpreter): {float(out.split('TOTAL')[1]):.2f} s in-process, "
          f"{wall:.2f} s with interpreter start")

    # ---------------------------------------------------------------- HumanEval canonical solutions
    from benchmarks import load_benchmark
    b = load_benchmark("humaneval", args.data_dir)
    examples = b.examples("valid") + b.examples("test")
    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.num_workers) as pool:
        scores = list(pool.map(lambda e: b.score(e["task"] + e["answer"], e), examples))
    wall = time.perf_counter() - t
    print(f"score 164 HumanEval canonical solutions ({args.num_workers} workers): {wall:.2f} s, "
          f"{sum(scores):.0f}/{len(scores)} passed, {1000 * wall / len(scores):.0f} ms/solution")


if __name__ == "__main__":
    main()

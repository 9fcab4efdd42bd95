"""Benchmarks of benchmarks/: cold load of all eleven, scoring the 164 HumanEval canonical solutions,
and hostile answers (issue 12): an always-equal object on HumanEval/MBPP validation, answers built to hang
the MATH and code scorers.

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

    hostile(args.data_dir, args.num_workers)


ALWAYS_EQUAL = """
class AlwaysEqual:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __bool__(self): return True
    def __hash__(self): return 0
    def __str__(self): return ""

def ENTRY(*args, **kwargs):
    return AlwaysEqual()
"""


def hostile(data_dir: str, num_workers: int) -> None:
    from benchmarks import load_benchmark
    for name in ("humaneval", "mbpp"):
        b = load_benchmark(name, data_dir)
        examples = b.examples("valid")
        with ThreadPoolExecutor(max_workers=num_workers) as pool:
            scores = list(pool.map(lambda e: b.score(ALWAYS_EQUAL.replace("ENTRY", e["entry_point"]), e), examples))
        print(f"always-equal object on {name} validation: {sum(scores):.0f}/{len(scores)} passed")
    math_b = load_benchmark("math", data_dir)
    e = math_b.examples("valid")[0]
    for label, answer in (("MATH \\boxed{factorial(factorial(30))}", r"\boxed{factorial(factorial(30))}"),):
        t = time.perf_counter()
        got = math_b.score(answer, e)
        print(f"{label}: score {got}, {time.perf_counter() - t:.1f} s")
    he = load_benchmark("humaneval", data_dir)
    e = he.examples("valid")[0]
    t = time.perf_counter()
    got = he.score("\n".join("[" + "1, " * 80 for _ in range(400)), e)
    print(f"HumanEval, 400 unparsable long lines: score {got}, {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()

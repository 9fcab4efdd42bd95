"""Issue 6's figure: one collection episode on the embedded default, and where its time goes.

Runs (unless --run-dir names a finished run) 1 episode x 2 turns x 2 candidates on a 16-example GSM8K
validation subset with the embedded SmolLM2 as both meta-agent and executor, then prints wall time, the
number of calls on each side, and how long each side was busy: the union of its calls' time intervals
(calls overlap, so summed latencies would overstate it).

    python bench/bench_collect.py --data-dir ../shared/data
    python bench/bench_collect.py --run-dir runs/bench_collect        # only read a finished run
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def busy_seconds(calls: list[dict]) -> float:
    """Length of the union of [end - latency, end] over the calls."""
    spans = sorted((c["time"] - c["latency_s"], c["time"]) for c in calls if not c.get("cached"))
    total, start, end = 0.0, None, None
    for s, e in spans:
        if end is None or s > end:
            total += (end - start) if end is not None else 0.0
            start, end = s, e
        else:
            end = max(end, e)
    return total + ((end - start) if end is not None else 0.0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", default=None)
    p.add_argument("--run-dir", default=None, help="read this finished run instead of collecting")
    p.add_argument("--max-new-tokens", type=int, default=384)
    p.add_argument("--executor-max-tokens", type=int, default=128)
    a = p.parse_args()
    run_dir = Path(a.run_dir) if a.run_dir else ROOT / "runs" / "bench_collect"
    wall = None
    if not a.run_dir:
        t0 = time.time()
        subprocess.run([sys.executable, str(ROOT / "collect.py"), "--run", run_dir.name, "--benchmarks", "gsm8k",
                        "--num-episodes", "1", "--num-turns", "2", "--num-candidates", "2", "--limit-valid", "16",
                        "--max-new-tokens", str(a.max_new_tokens), "--executor-max-tokens", str(a.executor_max_tokens),
                        "--no-progress", *(["--data-dir", a.data_dir] if a.data_dir else [])],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        wall = time.time() - t0
    summary = json.loads((run_dir / "summary.json").read_text())
    meta = [json.loads(x) for x in open(run_dir / "meta_calls.jsonl")]
    execu = [json.loads(x) for x in open(run_dir / "calls.jsonl")]
    wall = wall or summary["wall_s"]
    print(f"wall {wall:.0f} s | turns {summary['turns']} | candidates {summary['candidates']} "
          f"(ok {summary['ok']}, failed {summary['failed_by_reason']})")
    for name, calls in (("meta-agent", meta), ("executor", execu)):
        busy = busy_seconds(calls)
        print(f"{name}: {len(calls)} calls | {sum(c['completion_tokens'] for c in calls)} completion tokens | "
              f"busy {busy:.0f} s ({busy / wall:.0%} of wall)")


if __name__ == "__main__":
    main()

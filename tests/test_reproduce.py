"""`make reproduce` end to end at its smallest scale (SCALE=tiny), as a user runs it: every stage on the
embedded SmolLM2 model, outputs in a fresh folder, then a second run that skips or resumes every stage."""
import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_reproduce(cwd: Path, data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-f", str(ROOT / "Makefile"), "reproduce", "SCALE=tiny", f"DATA_DIR={data_dir}"],
                          cwd=cwd, capture_output=True, text=True, timeout=1500)


def test_make_reproduce_tiny_end_to_end(data_dir, tmp_path):
    first = make_reproduce(tmp_path, data_dir)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    assert "NOT paper-scale numbers" in first.stdout

    records = [json.loads(line) for line in (tmp_path / "runs/tiny/trajectories.jsonl").read_text().splitlines()]
    assert len(records) == 1 and records[0]["benchmark"] == "mmlu_pro" and len(records[0]["candidates"]) == 1
    assert (tmp_path / "checkpoints/tiny/config.json").exists()  # a HF folder: trained, or the base model
    rows = [json.loads(line) for line in (tmp_path / "results/tiny/results.jsonl").read_text().splitlines()]
    assert {r["method"] for r in rows} == {"vanilla", "cot", "cot_sc", "self_refine", "llm_debate", "best_seed", "w4s"}
    assert all(r["n"] == 2 and 0 <= r["accuracy"] <= 1 for r in rows)
    table = (tmp_path / "results/tiny/table.md").read_text()
    assert "NOT paper-scale" in table and "W4S" in table
    if (tmp_path / "checkpoints/tiny/NOT_TRAINED.txt").exists():  # no working candidate: said in the table
        assert "untrained base model" in table

    second = make_reproduce(tmp_path, data_dir)  # every stage is done: nothing is recomputed
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    assert "1 turns already recorded" in second.stdout and "is complete, skipped" in second.stdout
    assert "7 skipped" in second.stdout
    assert len((tmp_path / "results/tiny/results.jsonl").read_text().splitlines()) == len(rows)

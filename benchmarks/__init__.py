"""The eleven W4S benchmarks: data loading, fixed validation/test splits, task text and scorers.

    from benchmarks import BENCHMARKS, load_benchmark
    b = load_benchmark("gsm8k")             # data from data_dir, else $W4S_DATA_DIR, else ./data
    b.examples("valid")                     # [{"id", "task", "answer", ...}], code adds entry_point, public_tests, test
    b.score(prediction, example)            # float in [0, 1]; prediction is the solver's "answer" value

One module per benchmark (drop.py, mgsm.py, ...), each with the same shape: NAME, KIND, FILES,
DESCRIPTION, load(data_dir, verify) -> {"valid": [...], "test": [...]}, score(prediction, example).
Scorers follow the official ones the paper's peers use, quirks included (see the README). This
package does not download anything; `python -m benchmarks.download` (make data) does.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from benchmarks import drop, gpqa, gsm8k, gsm_hard, gsm_plus, humaneval, math_aflow, mbpp, mgsm, mmlu_pro, svamp
from benchmarks.common import DataError

BENCHMARKS = ("drop", "mgsm", "mmlu_pro", "gpqa", "math", "gsm8k", "gsm_hard", "gsm_plus", "svamp", "humaneval", "mbpp")
_MODULES = {m.NAME: m for m in (drop, mgsm, mmlu_pro, gpqa, math_aflow, gsm8k, gsm_hard, gsm_plus, svamp, humaneval, mbpp)}
SPLITS = ("valid", "test")

__all__ = ["BENCHMARKS", "Benchmark", "DataError", "default_data_dir", "load_benchmark"]


@dataclass
class Benchmark:
    """One loaded benchmark: its fixed splits and its scorer."""
    name: str
    kind: str  # "math" | "multiple_choice" | "drop" | "code"
    description: str  # the task description the meta-agent sees
    files: tuple[str, ...]  # source files, relative to the data directory
    splits: dict[str, list[dict]] = field(repr=False)
    scorer: Callable[[object, dict], float] = field(repr=False)

    def examples(self, split: str) -> list[dict]:
        """The examples of "valid" or "test", in a fixed order; each a fresh shallow copy."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
        return [dict(example) for example in self.splits[split]]

    def score(self, prediction, example: dict) -> float:
        """Score in [0, 1] of a solver's answer (code: the program text) on one example."""
        return float(self.scorer(prediction, example))


def default_data_dir() -> Path:
    """$W4S_DATA_DIR if set, else ./data relative to the current directory."""
    return Path(os.environ.get("W4S_DATA_DIR") or "data")


def load_benchmark(name: str, data_dir: str | Path | None = None, *, verify: bool = True) -> Benchmark:
    """Load one benchmark's fixed splits from data_dir (default: default_data_dir()).

    Raises DataError (a FileNotFoundError) naming the missing or corrupt file and `make data`.
    verify=False skips the sha256 check, for the tests' synthetic rows.
    """
    if name not in _MODULES:
        raise ValueError(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
    module = _MODULES[name]
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    return Benchmark(name=module.NAME, kind=module.KIND, description=module.DESCRIPTION, files=module.FILES,
                     splits=module.load(data_dir, verify), scorer=module.score)

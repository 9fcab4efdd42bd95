"""Adversarial and ordinary tests of sandbox.py: one property each. The only double is the HTTP server."""
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

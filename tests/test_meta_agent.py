"""The workflow-design MDP against scripted servers: the meta-agent and the executor are local HTTP servers,
everything else (openai client, cache, sandbox, prompts) is the shipped code."""
import json
import re

import pytest

import meta_agent
from executor import LLM, Agent
from local_server import LocalServer, Reply
from meta_agent import FAILURE_REASONS, Policy, WorkflowEnv, compute_reward, extract_solver_code, run_turn

# Four additions; the executor answers the first two right, so the CoT seeds score 0.5 and the
# code-generation seed (whose code returns 0) scores 0: best so far 0.5, previous turn 0.0.
EXAMPLES = [{"id": str(i), "task": f"What is {a} + {b}?", "answer": str(a + b)}
            for i, (a, b) in enumerate([(1, 2), (3, 4), (5, 6), (7, 8)])]


def score(prediction, example) -> float:
    try:
        return float(float(str(prediction)) == float(example["answer"]))
    except ValueError:
        return 0.0


def executor_reply(body: dict) -> Reply:
    text = json.dumps(body["messages"])
    n = body.get("n", 1)
    if "code" in body["messages"][0]["content"] and "answer" not in body["messages"][0]["content"]:
        return Reply([json.dumps({"reasoning": "r", "code": "def solution():\n    return 0"})] * n)
    a, b = map(int, re.search(r"What is (\d+) \+ (\d+)", text).groups())
    answer = a + b if a in (1, 3) else -1
    return Reply([json.dumps({"reasoning": "adding", "answer": str(answer)})] * n)


def workflow(marker: str, body: str) -> str:
    return f"Analysis for {marker}.\n```python\ndef solver(agent, task):\n    # {marker}\n{body}\n```\n"


ADD = "    import re\n    a, b = map(int, re.findall(r'\\d+', task))\n"
GOOD = workflow("cand-A", ADD + "    agent.call_llm(messages=[{'role': 'user', 'content': task}])\n"
                "    return {'answer': str(a + b)}")
QUARTER = ADD + "    return {'answer': str(a + b) if a == 1 else '-1'}"
BROKEN = "    return {'answer': 1 / 0}"
ACTIONS = [
    GOOD,                                                   # ok, acc 1.0, reward 1
    workflow("cand-B attempt 0", BROKEN),                   # fixed on the 2nd repair, acc 0.25, reward 0.5
    workflow("cand-C attempt 0", BROKEN),                   # never fixed
    "I would use chain of thought, but here is no code.",  # no code block, never fixed
    workflow("cand-E attempt 0", "    while True:\n        pass"),  # hangs; fixed on the 1st repair, acc 0
]


def meta_reply(body: dict) -> Reply:
    msgs = body["messages"]
    if len(msgs) == 2:  # a fresh state: the m candidates
        return Reply(ACTIONS[: body.get("n", 1)])
    previous = msgs[-2]["content"]  # a repair request: the failing action is the assistant message
    if "cand-B attempt 0" in previous:
        return Reply([workflow("cand-B attempt 1", BROKEN)])
    if "cand-B attempt 1" in previous:
        return Reply([workflow("cand-B attempt 2", QUARTER)])
    if "cand-E" in previous:
        return Reply([workflow("cand-E attempt 1", "    return {'answer': '-1'}")])
    return Reply([previous])  # C and D repeat themselves


@pytest.fixture
def servers():
    with LocalServer(executor_reply) as ex, LocalServer(meta_reply) as meta:
        yield ex, meta


def make_env(ex, *, low_acc_penalty=False, history_window=0, seed=0):
    agent = Agent(LLM("test-executor", ex.base_url, api_key="k"))
    return WorkflowEnv(description="Add two numbers.", kind="math", valid_examples=EXAMPLES, score=score,
                       agent=agent, seed=seed, history_window=history_window, low_acc_penalty=low_acc_penalty,
                       sample_timeout_s=2.0, progress=False)


def test_turn_statuses_repairs_rewards_and_advance(servers):
    ex, meta = servers
    env = make_env(ex)
    env.reset()
    assert [e.valid_acc for e in env.seeds][:2] == [0.5, 0.5] and (env.best_acc, env.prev_acc) == (0.5, 0.0)
    policy = Policy(LLM("test-meta", meta.base_url, api_key="k"))
    state, cands, best, _ = run_turn(env, policy, turn=0, num_candidates=5)
    by = {c.attempts[0][:40]: c for c in cands}
    a, b, c, d, e = cands
    assert (a.status, a.repairs, a.valid_acc, a.reward) == ("ok", 0, 1.0, 1.0)
    assert (b.status, b.repairs, b.valid_acc, b.reward) == ("ok", 2, 0.25, 0.5)
    assert "cand-B attempt 2" in b.action and len(b.attempts) == 3
    assert (c.status, c.reason, c.repairs) == ("failed", "runtime_error", 3) and "ZeroDivisionError" in c.error
    assert (d.status, d.reason, d.repairs, d.code) == ("failed", "no_code_block", 3, None)
    assert (e.status, e.reason, e.repairs, e.valid_acc) == ("failed", "zero_accuracy", 1, 0.0)
    assert all(x.reason in FAILURE_REASONS for x in cands if x.status == "failed")
    assert best == 0 and env.history[-1].code == a.code and env.best_acc == 1.0
    assert a.calls > 0 and state[0]["role"] == "system"
    assert len(by) == 5


def test_timeout_is_a_recorded_failure_reason(servers):
    ex, _ = servers
    env = make_env(ex)
    env.max_repairs = 0
    cand = env.evaluate(ACTIONS[4], repair=lambda m: pytest.fail("no repair expected"), turn=0, index=0)
    assert (cand.status, cand.reason, cand.repairs) == ("failed", "timeout", 0)


def test_low_accuracy_penalty(servers):
    ex, meta = servers
    env = make_env(ex, low_acc_penalty=True)
    env.reset()
    _, cands, _, _ = run_turn(env, Policy(LLM("test-meta", meta.base_url, api_key="k")), turn=0, num_candidates=2)
    assert [c.reward for c in cands] == [1.0, pytest.approx(0.4)]


def test_reward_rule():
    assert compute_reward(0.8, best_so_far=0.7, prev_acc=0.2, low_acc_penalty=False) == 1.0
    assert compute_reward(0.5, best_so_far=0.7, prev_acc=0.2, low_acc_penalty=False) == 0.5
    assert compute_reward(0.2, best_so_far=0.7, prev_acc=0.2, low_acc_penalty=False) == 0.0
    assert compute_reward(0.2, best_so_far=0.7, prev_acc=0.2, low_acc_penalty=True) == pytest.approx(-0.1)


def test_code_extraction_takes_the_last_solver_block():
    text = "```python\nx = 1\n```\nthen\n```python\ndef solver(agent, task):\n    return {}\n```\n```\nprint()\n```"
    assert extract_solver_code(text).startswith("def solver")
    assert extract_solver_code("no code here") is None


def test_same_seed_same_feedback_and_history_window(servers):
    ex, _ = servers
    texts = []
    for _ in range(2):
        env = make_env(ex, seed=7)
        env.reset()
        cand = env.evaluate(workflow("q", QUARTER), repair=lambda m: "", turn=3, index=1)
        texts.append(cand.feedback)
    assert texts[0] == texts[1] and "25" in texts[0]

    env = make_env(ex, history_window=1)
    env.reset()
    for turn, marker in enumerate(["first-advanced", "second-advanced"]):
        env.advance(meta_agent.ArchiveEntry(f"turn {turn}", f"def solver(agent, task):\n    # {marker}\n", 0.1, "fb"))
    prompt = env.state()[1]["content"]
    assert "second-advanced" in prompt and "first-advanced" not in prompt
    assert all(code.split("\n")[0] in prompt for _, code in __import__("prompts").seed_workflows("math"))


def test_meta_agent_never_reads_a_test_split():
    source = open(meta_agent.__file__).read()
    assert 'examples("test")' not in source and "examples('test')" not in source


def test_embedded_policy_produces_a_candidate(servers):
    ex, _ = servers
    env = make_env(ex)
    env.max_repairs = 1
    env.reset()
    policy = Policy(LLM("embedded"), max_new_tokens=48)
    _, cands, _, _ = run_turn(env, policy, turn=0, num_candidates=1)
    cand = cands[0]
    assert cand.action and (cand.status == "ok" or cand.reason in FAILURE_REASONS)


def test_one_optimisation_by_hand_cli(data_dir, tmp_path):
    """`python meta_agent.py ...` as a person runs it: the best workflow file, its accuracy and the cost."""
    import subprocess
    import sys
    from benchmarks import load_benchmark
    golds = {e["task"]: e["answer"] for e in load_benchmark("gsm8k", str(data_dir)).examples("valid")[:3]}

    def executor(body):  # right only for the workflow that asks as an "oracle"
        text = json.dumps(body["messages"])
        task = next(t for t in golds if json.dumps(t)[1:-1] in text)
        answer = golds[task] if "helpful oracle" in text else "-7"
        return Reply([json.dumps({"reasoning": "r", "answer": answer, "code": "def solution():\n    return -7"})]
                     * body.get("n", 1))

    oracle = ("```python\ndef solver(agent, task):\n    r = agent.call_json_format_llm(messages=[{'role': 'user', "
              "'content': task}], agent_role='oracle', return_dict_keys=['answer'])\n    return {'answer': r[0]['answer']}\n```")
    with LocalServer(executor) as ex, LocalServer(lambda b: Reply([oracle] * b.get("n", 1))) as meta:
        cmd = [sys.executable, str(meta_agent.__file__), "--benchmark", "gsm8k", "--data-dir", str(data_dir),
               "--limit", "3", "--turns", "1", "--meta-model", "m", "--meta-base-url", meta.base_url,
               "--executor-model", "gpt-4o-mini", "--executor-base-url", ex.base_url, "--out-dir", "opt"]
        out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                             env={**__import__("os").environ, "OPENAI_API_KEY": "k"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "valid_acc 1.0000" in out.stdout and "executor $" in out.stdout
    best = (tmp_path / "opt" / "best_workflow.py").read_text()
    assert "valid_acc=1.0000" in best and "agent_role='oracle'" in best


def test_dead_executor_aborts_instead_of_recording_bad_workflows():
    with LocalServer(lambda body: Reply(status=500)) as dead:
        agent = Agent(LLM("test-executor", dead.base_url, api_key="k", max_retries=0))
        env = WorkflowEnv(description="Add.", kind="math", valid_examples=EXAMPLES, score=score, agent=agent,
                          sample_timeout_s=5.0, progress=False)
        with pytest.raises(meta_agent.LLMError, match="endpoint reason twice"):
            env.reset()  # the seeds catch the error and fall back, but every call failed: abort


def test_run_config_resumes_or_refuses(tmp_path):
    path = tmp_path / "config.json"
    meta_agent.check_run_config(path, {"seed": 0, "budget_usd": 1.0}, {"budget_usd"})
    meta_agent.check_run_config(path, {"seed": 0, "budget_usd": 5.0}, {"budget_usd"})  # may change
    with pytest.raises(SystemExit, match="refusing to resume(.|\n)*--seed: recorded 0, now 1"):
        meta_agent.check_run_config(path, {"seed": 1, "budget_usd": 5.0}, {"budget_usd"})
    assert json.loads(path.read_text()) == {"seed": 0, "budget_usd": 5.0}

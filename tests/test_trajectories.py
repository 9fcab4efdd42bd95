"""Issue 11: trajectories, rewards and scores that a paper-scale run can trust.

Each test here failed on the code before the fix it guards (code extraction cut at an inner fence,
zero-accuracy candidates advancing, a dead endpoint scored as 0.0, repaired actions trained against the
wrong state, a state that outgrows the context, a resume rule that deleted work, train/test overlap)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import meta_agent
import prompts
from executor import LLM, Agent, LLMError
from local_server import LocalServer, Reply
from meta_agent import Candidate, Policy, WorkflowEnv, extract_solver_code, run_turn
from test_evaluate import gold  # noqa: F401 -- a fixture: the scripted GSM8K golds

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = [{"id": str(i), "task": f"What is {a} + {b}?", "answer": str(a + b)}
            for i, (a, b) in enumerate([(1, 2), (3, 4)])]


def score(prediction, example) -> float:
    return float(str(prediction) == example["answer"])


def all_workflows():
    for kind in prompts.KINDS:
        for name, code in prompts.seed_workflows(kind) + list(prompts.baseline_workflows(kind).items()):
            yield f"{kind}/{name}", code


@pytest.mark.parametrize("name,code", list(all_workflows()))
def test_every_seed_and_baseline_extracts_to_itself(name, code):
    reply = f"Analysis: resubmitting {name} unchanged.\n\n```python\n{code}```\n\nThat is all."
    assert extract_solver_code(reply) == code
    # a later unfenced mention and a fence-only block after it do not change the choice
    assert extract_solver_code(reply + "\n```\npip install nothing\n```\n") == code


def test_fences_count_only_at_line_start():
    code = 'def solver(agent, task):\n    s = "```python\\nx\\n```"\n    t = """\n```\n"""\n    return {"answer": s}\n'
    assert extract_solver_code(f"Here:\n```python\n{code}```\n") == code
    assert extract_solver_code("inline ```python def solver(): pass``` only") is None
    crlf = "Fix:\r\n```Python\r\ndef solver(agent, task):\r\n    return {}\r\n```\r\n"
    assert extract_solver_code(crlf).replace("\r", "") == "def solver(agent, task):\n    return {}\n"


def make_env(url, **kw):
    return WorkflowEnv(description="Add two numbers.", kind="math", valid_examples=EXAMPLES, score=score,
                       agent=Agent(LLM("test-executor", url, api_key="k", max_retries=0)), sample_timeout_s=5.0,
                       progress=False, **kw)


def test_only_ok_candidates_advance_and_references_stay():
    env = make_env("http://127.0.0.1:9/v1")
    env.best_acc = env.prev_acc = 0.6
    zero = Candidate(action="a", code="def solver(agent, task):\n    return {}\n", status="failed",
                     reason="zero_accuracy", valid_acc=0.0)
    failed = Candidate(action="b", status="failed", reason="runtime_error")
    assert env.reward_and_advance([zero, failed], turn=0) is None
    assert (env.best_acc, env.prev_acc, env.history) == (0.6, 0.6, [])
    low = Candidate(action="c", code="def solver(agent, task):\n    return {}\n", status="ok", valid_acc=0.2)
    assert env.reward_and_advance([low], turn=1) == 0
    assert low.reward == 0.0  # 0.2 after 0.6 is not "better than the previous turn"


def dead(body):
    return Reply(["down"], status=500)


def test_dead_endpoint_is_never_a_score():
    with LocalServer(dead) as srv:
        env = make_env(srv.base_url)
        code = prompts.baseline_workflows("math")["cot"]
        with pytest.raises(LLMError):
            meta_agent.score_workflow(code, EXAMPLES, score, env.agent)


def test_an_endpoint_failure_in_any_sample_is_never_a_score():
    """One sample's call failing for the endpoint's reason (a 500 after retries) would score that sample 0
    and the line would stand: the whole run raises instead, and a rerun asks again (the cache keeps the rest)."""
    def flaky(body):
        text = json.dumps(body["messages"])
        if "3 + 4" in text:
            return Reply(["down"], status=500)
        return Reply([json.dumps({"reasoning": "r", "answer": "3"})] * body.get("n", 1))
    with LocalServer(flaky) as srv:
        env = make_env(srv.base_url)
        code = prompts.baseline_workflows("math")["cot"]
        with pytest.raises(LLMError, match="1 executor calls .* failed for an endpoint reason twice"):
            meta_agent.score_workflow(code, EXAMPLES, score, env.agent)
        bad = 'def solver(agent, task):\n    agent.call_llm([{"role": "user", "content": "x" * 500000}])\n'
        s = meta_agent.score_workflow(bad, EXAMPLES, score, env.agent)  # the caller's fault stays its own
    assert s.scores == [0.0, 0.0] and set(s.failures) == {"bad_request"}


def test_a_transient_endpoint_failure_runs_that_sample_once_more():
    """A call lost once (a dropped connection after the client's retries) must not stop a long run: the
    sample runs again, is scored, and both attempts' calls are counted."""
    lost = []

    def once(body):
        text = json.dumps(body["messages"])
        if "3 + 4" in text and not lost:
            lost.append(1)
            return Reply(["down"], status=500)
        return Reply([json.dumps({"reasoning": "r", "answer": "7" if "3 + 4" in text else "3"})] * body.get("n", 1))
    with LocalServer(once) as srv:
        env = make_env(srv.base_url)
        s = meta_agent.score_workflow(prompts.baseline_workflows("math")["cot"], EXAMPLES, score, env.agent)
    assert s.scores == [1.0, 1.0] and s.calls == 3 and lost == [1]


def test_dead_endpoint_in_single_workflow_mode_exits_nonzero(tmp_path, data_dir):
    wf = tmp_path / "cot.py"
    wf.write_text(prompts.baseline_workflows("math")["cot"])
    with LocalServer(dead) as srv:
        proc = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--workflow", str(wf), "--benchmark", "gsm8k",
                               "--split", "valid", "--limit", "2", "--data-dir", str(data_dir), "--executor-models",
                               "gpt-4o-mini", "--executor-base-url", srv.base_url, "--json", "--no-cache"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "OPENAI_API_KEY": "k", "W4S_CACHE_DIR": str(tmp_path)})
    assert proc.returncode != 0
    assert "endpoint" in (proc.stdout + proc.stderr) and '"accuracy"' not in proc.stdout


def repair_meta(body):
    msgs = body["messages"]
    if len(msgs) == 2:
        return Reply(["First try.\n```python\ndef solver(agent, task):\n    return {'answer': 1 / 0}\n```\n"])
    return Reply(["Fixed.\n```python\ndef solver(agent, task):\n    import re\n    a, b = map(int, re.findall(r'\\d+', task))\n"
                  "    return {'answer': str(a + b)}\n```\n"])


def test_repaired_candidate_records_the_messages_that_produced_it():
    with LocalServer(lambda b: Reply(["x"])) as ex, LocalServer(repair_meta) as meta:
        env = make_env(ex.base_url)
        env.reset()
        state, cands, best, _ = run_turn(env, Policy(LLM("test-meta", meta.base_url, api_key="k")), turn=0,
                                      num_candidates=1)
    c = cands[0]
    assert c.status == "ok" and c.repairs == 1 and c.valid_acc == 1.0
    assert c.messages[:2] == state and len(c.messages) == 4
    assert c.messages[2] == {"role": "assistant", "content": c.attempts[0]}
    assert "ZeroDivisionError" in c.messages[3]["content"]
    assert meta.requests[-1]["messages"] == c.messages  # exactly what was sent for the final action


def test_state_stays_within_its_token_budget():
    env = make_env("http://127.0.0.1:9/v1", state_max_tokens=6000)
    for name, code in prompts.seed_workflows("math"):
        env.seeds.append(meta_agent.ArchiveEntry(name, code, 0.5, prompts.format_feedback(0.5, None, [])))
    code = prompts.seed_workflows("math")[1][1]
    cases = [{"task": "q" * 300, "prediction": "p" * 200, "answer": "1"}] * 3
    for turn in range(30):
        env.advance(meta_agent.ArchiveEntry(f"turn {turn}", code + f"# v{turn}\n", 0.5 + turn / 100,
                                            prompts.format_feedback(0.5, 0.4, cases)))
        assert env.state_tokens(env.state()) <= 6000
    names = [e.name for e in env.archive()]
    assert names[:3] == [n for n, _ in prompts.seed_workflows("math")] and names[-1] == "turn 29"
    assert env.history[0].name == "turn 0"  # dropped from the state, never from the record


def test_the_newest_advanced_workflow_stays_in_the_state_past_the_budget():
    """Rewards compare with the newest advanced workflow: the state must show it even when it alone does
    not fit the budget (a long one, with its feedback); older ones leave first."""
    env = make_env("http://127.0.0.1:9/v1", state_max_tokens=6144)
    for name, code in prompts.seed_workflows("math"):
        env.seeds.append(meta_agent.ArchiveEntry(name, code, 0.5, prompts.format_feedback(0.5, None, [])))
    long = prompts.seed_workflows("math")[1][1] + "".join(f"# note {i}: {'x' * 80}\n" for i in range(80))
    env.advance(meta_agent.ArchiveEntry("older", long, 0.6, prompts.format_feedback(0.6, 0.5, [])))
    env.advance(meta_agent.ArchiveEntry("newest", long + "# v2\n", 0.7, prompts.format_feedback(0.7, 0.6, [])))
    assert env.state_tokens(env._messages(env.seeds + env.history[-1:])) > 6144  # it does not fit alone
    assert [e.name for e in env.archive()][-1:] == ["newest"] and "# v2" in env.state()[-1]["content"]


def test_garbage_line_in_the_middle_stops_with_file_and_line(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text('{"a": 1}\nnot json\n{"a": 3}\n{"a": 4')
    with pytest.raises(ValueError, match=r"t\.jsonl:2"):
        meta_agent.read_jsonl(p)
    assert p.read_text().endswith('{"a": 4')  # nothing was cut
    p.write_text('{"a": 1}\n\n{"a": 2}\n{"a": ')
    assert meta_agent.read_jsonl(p, cut_torn_tail=False) == [{"a": 1}, {"a": 2}]
    assert p.read_text().endswith('{"a": ')  # a reader leaves the file alone
    assert meta_agent.read_jsonl(p) == [{"a": 1}, {"a": 2}] and p.read_text() == '{"a": 1}\n\n{"a": 2}\n'


def test_meta_agent_cli_refuses_a_changed_config_and_keeps_the_trajectory(tmp_path, data_dir):
    out = tmp_path / "opt"
    cmd = [sys.executable, str(ROOT / "meta_agent.py"), "--out-dir", str(out), "--data-dir", str(data_dir)]
    proc = subprocess.run(cmd + ["--benchmark", "nonesuch"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "nonesuch" in proc.stderr and not (out / "config.json").exists()
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"benchmark": "gsm8k", "seed": 0}))
    (out / "trajectories.jsonl").write_text('{"turn": 0}\n')
    proc = subprocess.run(cmd + ["--seed", "5"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "--seed" in proc.stderr
    assert (out / "trajectories.jsonl").read_text() == '{"turn": 0}\n'


def test_train_test_overlap_is_measured_and_labelled(data_dir):
    from benchmarks import load_benchmark
    from benchmarks.overlap import overlap_counts
    en = [e for e in load_benchmark("mgsm", data_dir).examples("valid") if e["lang"] == "en"]
    plus = load_benchmark("gsm_plus", data_dir).examples("valid")
    counts = overlap_counts(en + plus, data_dir, ["gsm8k", "gsm_hard", "svamp", "mgsm"])
    assert counts["gsm8k"][0] > 0 and counts["gsm_hard"][0] > 0 and counts["mgsm"][0] > 0
    assert counts["svamp"][0] == 0
    assert overlap_counts(plus, data_dir, ["gsm8k"])["gsm8k"][2] == 103  # of 128 GSM-Plus valid items
    import evaluate
    args = evaluate.Args(data_dir=str(data_dir), train_benchmarks=["mgsm", "gsm_plus"])
    labels = evaluate.train_test_labels(args, ["mgsm", "gsm8k", "svamp"])
    assert labels["mgsm"].startswith("seen") and labels["gsm8k"].startswith("overlap (") and labels["svamp"] == "unseen"
    assert evaluate.train_test_labels(evaluate.Args(data_dir=str(data_dir), train_benchmarks=["none"]),
                                      ["gsm8k"]) == {"gsm8k": "unseen"}
    # --limit-test 6: the overlap is counted over the 6 items scored, not the whole split ("344/6" before)
    import re
    small = evaluate.train_test_labels(evaluate.Args(data_dir=str(data_dir), train_benchmarks=["mgsm", "gsm_plus"],
                                                     limit_test=6), ["mgsm", "gsm8k"])
    for label in small.values():
        k, n = map(int, re.search(r"\((\d+)/(\d+) test items", label).groups())
        assert k <= n == 6, label


def test_w4s_cost_counts_turns_replayed_on_resume(tmp_path, data_dir, gold):
    from test_evaluate import BAD, MEDIUM, N_TEST, N_VALID, ORACLE, executor_responder, meta_responder, run_cli
    rows = {}
    with LocalServer(executor_responder(gold["table"])) as ex, LocalServer(meta_responder([MEDIUM, ORACLE, BAD])) as meta:
        argv = ["--data-dir", str(data_dir), "--benchmarks", "gsm8k", "--methods", "w4s",
                "--executor-models", "gpt-4o-mini", "--executor-base-url", ex.base_url, "--train-benchmarks", "none",
                "--meta-model", "meta-sim", "--meta-base-url", meta.base_url, "--iterations", "2",
                "--limit-valid", str(N_VALID), "--limit-test", str(N_TEST), "--no-progress"]
        for run in ("whole", "resumed"):
            if run == "resumed":  # as if killed after turn 0: its record is on disk, the rest is not
                traj = tmp_path / "results" / "whole" / "trajectories" / "gsm8k__gpt-4o-mini__seed0.jsonl"
                first = traj.read_text().splitlines()[0]
                (tmp_path / "results" / "resumed" / "trajectories").mkdir(parents=True)
                (tmp_path / "results" / "resumed" / "trajectories" / traj.name).write_text(first + "\n")
            proc = run_cli(["--run", run, *argv], tmp_path)
            assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
            rows[run] = json.loads((tmp_path / "results" / run / "results.jsonl").read_text().splitlines()[0])
    for k in ("calls", "prompt_tokens", "completion_tokens", "cost_usd", "meta_calls", "meta_prompt_tokens"):
        assert rows["resumed"][k] == rows["whole"][k] > 0, k
    assert "unseen" in (tmp_path / "results" / "whole" / "table.md").read_text()


def test_collect_validates_before_writing_and_missing_data_is_one_line(tmp_path, data_dir):
    def collect(*flags):
        return subprocess.run([sys.executable, str(ROOT / "collect.py"), "--run", "r", *flags], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
    proc = collect("--benchmarks", "gsm8k", "nonesuch", "--data-dir", str(data_dir))
    assert proc.returncode != 0 and "nonesuch" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs" / "r" / "config.json").exists()  # the corrected command is not refused
    proc = collect("--benchmarks", "gsm8k", "--data-dir", str(tmp_path / "empty"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "make data" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs" / "r" / "config.json").exists()


def bad_request_executor(body):
    if body.get("max_tokens", 0) > 8192:  # as an endpoint does for max_tokens over the model's limit
        return Reply(raw_body=json.dumps({"error": {"message": "max_tokens is too large: 5000000",
                                                    "type": "invalid_request_error"}}), status=400)
    return Reply([json.dumps({"answer": "3"})] * body.get("n", 1))


def two_candidates(body):
    call = "agent.call_json_format_llm(messages=[{'role': 'user', 'content': task}], return_dict_keys=['answer']"
    greedy = f"Greedy.\n```python\ndef solver(agent, task):\n    r = {call}, max_tokens=5000000)\n    return {{'answer': r[0]['answer']}}\n```\n"
    modest = f"Modest.\n```python\ndef solver(agent, task):\n    r = {call})\n    return {{'answer': r[0]['answer']}}\n```\n"
    return Reply([greedy, modest][: body.get("n", 1)])


def test_a_workflows_bad_request_is_its_own_failure_not_a_dead_endpoint():
    with LocalServer(bad_request_executor) as ex, LocalServer(two_candidates) as meta:
        env = make_env(ex.base_url, max_repairs=0)
        env.reset()
        _, cands, best, _ = run_turn(env, Policy(LLM("test-meta", meta.base_url, api_key="k")), turn=0,
                                     num_candidates=2)
    greedy, modest = cands
    assert (greedy.status, greedy.reason) == ("failed", "bad_request") and "max_tokens is too large" in greedy.error
    assert modest.status == "ok" and modest.valid_acc == 0.5 and best == 1


def test_stage_with_a_corrupt_cache_stops_with_one_line_and_masks_credentials(tmp_path, data_dir):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "llm.sqlite").write_bytes(b"this is not a database" * 100)
    proc = subprocess.run([sys.executable, str(ROOT / "collect.py"), "--run", "r", "--benchmarks", "gsm8k",
                           "--data-dir", str(data_dir), "--executor-model", "gpt-4o-mini",
                           "--executor-base-url", "http://user:sk-secret@127.0.0.1:9/v1"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "llm.sqlite" in proc.stderr and "mv " in proc.stderr
    assert (tmp_path / "cache" / "llm.sqlite").read_bytes().startswith(b"this is not")  # kept as it was
    config = (tmp_path / "runs" / "r" / "config.json").read_text()
    assert "sk-secret" not in config + proc.stdout + proc.stderr


def test_a_resumed_episode_goes_on_from_its_recorded_seed_scores():
    """A resume re-scored the seeds: with another cache, --no-cache or an endpoint that now answers
    otherwise, the resumed turns were rewarded against other references than the recorded ones, and the
    seeds were paid for again. The seeds' scores and feedback are in every record and a resume restores them."""
    right = {"on": True}

    def executor(body):
        text = json.dumps(body["messages"])
        answer = ("7" if "3 + 4" in text else "3") if right["on"] else "0"
        return Reply([json.dumps({"reasoning": "r", "answer": answer})] * body.get("n", 1))

    def meta(body):  # a working workflow that scores 1 of 2
        return Reply(["Try.\n```python\ndef solver(agent, task):\n    return {'answer': '3'}\n```\n"] * body.get("n", 1))

    fields = {"run": "r", "benchmark": "b", "meta_model": "m", "executor_model": "e"}
    with LocalServer(executor) as ex, LocalServer(meta) as mt:
        policy = Policy(LLM("test-meta", mt.base_url, api_key="k"))
        first = meta_agent.run_episode(make_env(ex.base_url), policy, num_turns=1, num_candidates=1,
                                       record_fields=fields).records
        right["on"] = False  # the endpoint now answers otherwise: a second scoring of the seeds would differ
        seen = ex.count
        env = make_env(ex.base_url)
        resumed = meta_agent.run_episode(env, policy, num_turns=2, num_candidates=1, record_fields=fields,
                                         done=first).records
    assert max(e.valid_acc for e in env.seeds) == 1.0 and resumed[:1] == first  # as recorded, not 0.0 now
    assert ex.count == seen  # the candidate calls no executor: nothing was paid for the seeds again
    assert [e["valid_acc"] for e in first[0]["seeds"]] == [e.valid_acc for e in env.seeds]
    assert resumed[1]["seeds"] == first[0]["seeds"]
    for e in first[0]["seeds"]:  # the resumed turn was sampled from the seeds' recorded feedback
        assert e["feedback"].splitlines()[0] in resumed[1]["state"][1]["content"]


def test_a_lone_surrogate_from_a_workflow_or_an_endpoint_never_stops_the_run():
    """A workflow's error or answer holding a lone surrogate ("\\udc80" crosses the sandbox as JSON) went
    into the repair prompt and the feedback, and every meta-agent call on them raised ValueError: the stage
    died, and on every resume again (the same feedback is replayed). Untrusted text comes back valid now,
    and so does an endpoint's reply."""
    bad = chr(0xDC80)
    first = ("Try.\n```python\ndef solver(agent, task):\n    raise RuntimeError('bad ' + chr(0xdc80))\n```\n")
    fixed = ("Fixed.\n```python\ndef solver(agent, task):\n    import re\n    a, b = map(int, re.findall(r'\\d+', task))\n"
             "    return {'answer': str(a + b) if a == 1 else 'x' + chr(0xd800)}\n```\n")

    def meta(body):
        return Reply([fixed if body["messages"][-1]["content"].startswith("Your workflow failed") else first])
    fields = {"run": "r", "benchmark": "b", "meta_model": "m", "executor_model": "e"}
    with LocalServer(lambda b: Reply(["x"])) as ex, LocalServer(meta) as mt:
        records = meta_agent.run_episode(make_env(ex.base_url), Policy(LLM("test-meta", mt.base_url, api_key="k")),
                                         num_turns=2, num_candidates=1, record_fields=fields).records
        raw = '{"choices": [{"message": {"role": "assistant", "content": "half \\ud83d emoji"}}]}'
        with LocalServer(lambda b: Reply(raw_body=raw)) as odd:
            reply = LLM("test-executor", odd.base_url, api_key="k").chat([{"role": "user", "content": "hi"}])
    c = records[0]["candidates"][0]
    assert c["status"] == "ok" and c["repairs"] == 1 and c["valid_acc"] == 0.5
    assert "bad ?" in c["messages"][-1]["content"] and len(records) == 2
    assert "Workflow answer: x?" in records[1]["state"][1]["content"]  # the feedback the next turn was asked on
    assert bad not in json.dumps(records, ensure_ascii=False)
    assert reply == ["half ? emoji"]


def test_no_answer_is_never_right(data_dir):
    """GSM-Plus has "None" golds (16 of 128 validation, 107 of 800 test) and the scorers compare str(answer):
    a workflow returning no answer at all scored on them (12.5% on validation: an `ok` candidate, a reward)."""
    from benchmarks import load_benchmark
    b = load_benchmark("gsm_plus", str(data_dir))
    golds = [e for e in b.examples("valid") if e["answer"] == "None"][:2]
    assert golds and b.score("None", golds[0]) == 1.0  # the string "None" is an answer, and right here
    agent = Agent(LLM("test-executor", "http://127.0.0.1:9/v1", api_key="k", max_retries=0))
    for code in ("def solver(agent, task):\n    return {'answer': None}\n",
                 "def solver(agent, task):\n    return {'answer': 'None'}\n"):
        s = meta_agent.score_workflow(code, golds, b.score, agent)
        assert s.scores == ([0.0, 0.0] if "None}" in code else [1.0, 1.0]), code

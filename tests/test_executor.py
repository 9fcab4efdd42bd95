"""executor.py against a real local OpenAI-compatible server (tests/local_server.py), through the real
openai client: n, JSON mode and its fallback, accounting, cache, budget, faults, the CLI, the embedded model."""
import json
import logging
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

import executor as ex
from executor import LLM, Agent, BudgetExceeded, Ledger, LLMError, ResponseCache, is_local_model
from tests.local_server import LocalServer, Reply, seeded

ROOT = Path(__file__).resolve().parents[1]
USER = [{"role": "user", "content": "What is 2+3?"}]


def numbered(body: dict) -> Reply:
    """One distinct answer per choice, so samples can be told apart."""
    return Reply([f"answer {i}" for i in range(body.get("n", 1))])


def make_llm(srv, tmp_path=None, **kw) -> LLM:
    kw.setdefault("max_retries", 0)
    cache = ResponseCache(tmp_path / "llm.sqlite") if tmp_path is not None else None
    return LLM(kw.pop("model", "gpt-4o-mini"), srv.base_url, "test-key", cache=cache, **kw)


# -- n ---------------------------------------------------------------------------------------------

def test_n_samples_in_one_request():
    with LocalServer(numbered) as srv:
        out = make_llm(srv).chat(USER, n=3)
        assert out == ["answer 0", "answer 1", "answer 2"]
        assert srv.count == 1 and srv.requests[0]["n"] == 3


def test_server_without_n_gets_one_request_per_sample():
    with LocalServer(numbered, supports_n=False) as srv:
        llm = make_llm(srv)
        assert len(llm.chat(USER, n=3)) == 3
        assert srv.count == 3  # one that asked for 3 and got 1, then 2 more
        llm.chat([{"role": "user", "content": "again"}], n=2)
        assert srv.count == 5 and all("n" not in r for r in srv.requests[3:])  # it remembered


def test_what_an_endpoint_lacks_is_learnt_once_for_every_copy():
    """evaluate gives each job a shallow copy of the executor LLM: on a server that rejects n, each copy
    sent n again and got a 400 first, one wasted request per job; the copies share what was learnt now."""
    import copy

    def responder(body):
        if body.get("n", 1) > 1:
            return Reply(status=400, error="Invalid value for n: only n = 1 is supported", param="n")
        return Reply(["ok"])

    with LocalServer(responder) as srv:
        llm = make_llm(srv)
        jobs = [copy.copy(llm) for _ in range(4)]  # as evaluate.job_llm makes them
        assert jobs[0].chat(USER, n=3) == ["ok"] * 3
        assert srv.count == 4  # the rejected one, then one request per sample
        for i, job in enumerate(jobs[1:]):
            assert job.chat([{"role": "user", "content": f"job {i}"}], n=2) == ["ok"] * 2
        assert srv.count == 4 + 3 * 2 and all("n" not in r for r in srv.requests[4:])


# -- JSON mode -------------------------------------------------------------------------------------

def test_json_mode_is_sent_and_missing_keys_are_filled():
    with LocalServer(lambda b: Reply(['{"answer": "5"}'] * b.get("n", 1))) as srv:
        agent = Agent(make_llm(srv))
        out = agent.call_json_format_llm(USER, num_of_response=2, agent_role="math expert",
                                         return_dict_keys=["reasoning", "answer"], instructions="Be brief.")
        assert out == [{"answer": "5", "reasoning": "NO reasoning IN DICTIONARY"}] * 2
        body = srv.requests[0]
        assert body["response_format"] == {"type": "json_object"}
        assert body["messages"][0] == {"role": "system", "content": "You are a helpful math expert.\n"
                                       "Reply in JSON format, ONLY using the keys ['reasoning', 'answer'].\nBe brief."}


def test_json_mode_rejected_falls_back_to_text_extraction(tmp_path):
    """Only a 400 about response_format turns JSON mode off, for that endpoint and model only (every LLM
    on them), and the cache keys say what was sent."""
    def responder(body):
        if "response_format" in body and body["model"] == "gpt-4o-mini":
            return Reply(status=400, error="response_format is not supported by this model", param="response_format")
        return Reply(['Sure! Here it is: {"reasoning": "2+3", "answer": 5} Hope this helps.'])

    with LocalServer(responder) as srv:
        llm = make_llm(srv, tmp_path)
        agent = Agent(llm)
        assert agent.call_json_format_llm(USER, return_dict_keys=["reasoning", "answer"]) == [
            {"reasoning": "2+3", "answer": 5}]
        assert srv.count == 2  # rejected once, then retried without response_format
        messages = srv.requests[-1]["messages"]
        assert llm._keys(messages, 0.5, 1.0, llm.max_tokens, False, 1) == list(llm.cache.get_many(
            llm._keys(messages, 0.5, 1.0, llm.max_tokens, False, 1)))  # keyed as sent: without JSON mode
        assert not llm.cache.get_many(llm._keys(messages, 0.5, 1.0, llm.max_tokens, True, 1))
        Agent(make_llm(srv)).call_json_format_llm([{"role": "user", "content": "again"}], return_dict_keys=["answer"])
        assert srv.count == 3 and "response_format" not in srv.requests[-1]  # remembered, by another LLM too
        Agent(make_llm(srv, model="gpt-4o")).call_json_format_llm(USER, return_dict_keys=["answer"])
        assert srv.requests[-1]["response_format"] == {"type": "json_object"}  # another model keeps it


@pytest.mark.parametrize("status", [400, 413, 422])
def test_bad_request_is_the_callers_fault_and_keeps_json_mode(tmp_path, status):
    """max_tokens over the limit (or a prompt over the context) is a BadRequestError with the server's
    message, counted as a bad request and not as a failed call; JSON mode stays on for the next call."""
    def responder(body):
        if body["max_tokens"] > 100:
            return Reply(status=status, error="max_tokens is too large: 5000. This model's maximum context "
                                              "length is 4096 tokens.", param="max_tokens")
        return Reply(['{"answer": "5"}'])

    with LocalServer(responder) as srv:
        agent = Agent(make_llm(srv, ledger=Ledger(tmp_path / "calls.jsonl"), max_retries=2))
        with pytest.raises(ex.BadRequestError, match="max_tokens is too large"):
            agent.call_json_format_llm(USER, return_dict_keys=["answer"], max_tokens=5000)
        assert srv.count == 1  # not retried
        assert (agent.usage.bad_requests, agent.usage.failed_calls, agent.usage.calls) == (1, 0, 1)
        assert agent.llm.ledger.summary()["bad_requests"] == 1
        assert json.loads((tmp_path / "calls.jsonl").read_text())["bad_request"] is True
        assert agent.call_json_format_llm(USER, return_dict_keys=["answer"], max_tokens=50) == [{"answer": "5"}]
        assert srv.requests[-1]["response_format"] == {"type": "json_object"}


def test_a_workflows_bad_request_reaches_its_sample_result():
    import sandbox
    workflow = ("def solver(agent, task):\n"
                "    return {'answer': agent.call_llm([{'role': 'user', 'content': task}], temperature=3)[0]}\n")
    def responder(body):
        return Reply(status=400, error="temperature must be <= 2") if body["temperature"] > 2 else Reply(["x"])

    with LocalServer(responder) as srv:
        run = sandbox.run_workflow(workflow, [{"task": "t"}], Agent(make_llm(srv)))
    sample = run.samples[0]
    assert (sample.bad_requests, sample.failed_calls, sample.calls) == (1, 0, 1)
    assert "temperature must be <= 2" in sample.error


def test_prompt_over_the_size_limit_is_refused_unsent():
    with LocalServer() as srv:
        agent = Agent(make_llm(srv, max_prompt_chars=1000))
        with pytest.raises(ex.BadRequestError, match="1000"):
            agent.call_llm([{"role": "user", "content": "x" * 2000}])
        assert srv.count == 0 and agent.usage.bad_requests == 1 and agent.usage.failed_calls == 0


@pytest.mark.parametrize("text, expected", [
    ('{"a": 1}', {"a": 1}),
    ('```json\n{"a": "x", "b": [1, 2]}\n```', {"a": "x", "b": [1, 2]}),
    ('Reasoning first.\n```\n{"a": {"b": 2}}\n```\nDone.', {"a": {"b": 2}}),
    ('The answer is {"a": "}"} as asked.', {"a": "}"}),
    ("{'a': 'single', 'ok': True, 'none': None}", {"a": "single", "ok": True, "none": None}),
    ("no object here", None),
])
def test_extract_json(text, expected):
    assert ex.extract_json(text) == expected


def test_reply_without_json_keeps_text_and_fills_keys():
    with LocalServer(lambda b: Reply(["I think it is five."])) as srv:
        out = Agent(make_llm(srv)).call_json_format_llm(USER, return_dict_keys=["answer"])
        assert out == [{"JSONDecodeError": "I think it is five.", "answer": "NO answer IN DICTIONARY"}]


def test_call_llm_system_prompt_and_ignored_model_kwarg():
    with LocalServer() as srv:
        agent = Agent(make_llm(srv))
        assert agent.call_llm(USER, agent_role="math expert", model="gpt-4o") == ["What is 2+3?"]
        assert srv.requests[0]["messages"][0] == {"role": "system", "content": "You are a helpful math expert."}
        assert srv.requests[0]["model"] == "gpt-4o-mini"  # the run's executor, not the workflow's wish
        agent.call_llm([{"role": "system", "content": "S"}, *USER])
        assert srv.requests[1]["messages"][0]["content"] == "S"  # an existing system prompt is kept


@pytest.mark.parametrize("bad", ["hi", [], [{"role": "user"}], [{"role": "user", "content": 3}], ["x"]])
def test_bad_messages_are_rejected(bad):
    with LocalServer() as srv:
        with pytest.raises(ValueError):
            Agent(make_llm(srv)).call_llm(bad)
        assert srv.count == 0


# -- accounting ------------------------------------------------------------------------------------

def test_usage_and_cost_from_price_table(tmp_path):
    reply = lambda b: Reply(["5"], prompt_tokens=1000, completion_tokens=2000)  # noqa: E731
    with LocalServer(reply) as srv:
        ledger = Ledger(tmp_path / "calls.jsonl")
        agent = Agent(make_llm(srv, model="gpt-4o-mini-2024-07-18", ledger=ledger))  # priced by prefix
        fork = agent.fork()
        agent.call_llm(USER)
        fork.call_llm([{"role": "user", "content": "other"}])
        fork.call_llm([{"role": "user", "content": "third"}])
        cost = (1000 * 0.15 + 2000 * 0.60) / 1e6
        assert agent.usage.calls == 1 and agent.usage.cost_usd == pytest.approx(cost)
        assert (fork.usage.calls, fork.usage.prompt_tokens, fork.usage.completion_tokens) == (2, 2000, 4000)
        s = ledger.summary()
        assert (s["calls"], s["prompt_tokens"], s["completion_tokens"]) == (3, 3000, 6000)
        assert s["cost_usd"] == pytest.approx(3 * cost)
        lines = [json.loads(x) for x in (tmp_path / "calls.jsonl").read_text().splitlines()]
        assert len(lines) == 3 and lines[0]["cost_usd"] == pytest.approx(cost) and lines[0]["latency_s"] > 0


def test_prices_exact_prefix_and_unknown():
    assert ex.price_per_million("gpt-4o") == (2.50, 10.00)
    assert ex.price_per_million("gpt-4o-mini-2024-07-18") == (0.15, 0.60)  # longest prefix wins
    assert ex.price_per_million("gpt-3.5-turbo-0125") == (0.50, 1.50)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert ex.cost_usd("my-local-model-xyz", 10, 10) == 0.0
        assert ex.cost_usd("my-local-model-xyz", 10, 10) == 0.0
    assert len([w for w in caught if "my-local-model-xyz" in str(w.message)]) == 1


# -- cache -----------------------------------------------------------------------------------------

def test_cache_replay_makes_no_request(tmp_path):
    with LocalServer(numbered) as srv:
        first = Agent(make_llm(srv, tmp_path)).call_llm(USER, num_of_response=2)
        assert srv.count == 1
        rerun = Agent(make_llm(srv, tmp_path, ledger=Ledger(tmp_path / "calls.jsonl")))  # a new run, same cache
        assert rerun.call_llm(USER, num_of_response=2) == first
        assert srv.count == 1
        assert rerun.usage.cost_usd == 0 and rerun.usage.calls == 1
        assert json.loads((tmp_path / "calls.jsonl").read_text())["cached"] is True
        rerun.call_llm(USER, num_of_response=2, temperature=0.9)  # another temperature is another key
        assert srv.count == 2


def test_cache_reuses_samples_across_n(tmp_path):
    with LocalServer(numbered) as srv:
        llm = make_llm(srv, tmp_path)
        assert llm.chat(USER, n=5) == [f"answer {i}" for i in range(5)]
        assert llm.chat(USER, n=3) == ["answer 0", "answer 1", "answer 2"]
        assert srv.count == 1
        other = [{"role": "user", "content": "other"}]
        llm.chat(other, n=2)
        assert llm.chat(other, n=4) == ["answer 0", "answer 1", "answer 0", "answer 1"]
        assert srv.count == 3 and srv.requests[-1]["n"] == 2  # only the 2 missing samples were asked for


def test_cache_is_shared_across_processes(tmp_path):
    ResponseCache(tmp_path / "c.sqlite").put_many({"k": {"content": "x", "prompt_tokens": 1, "completion_tokens": 1}})
    code = (f"import executor; c = executor.ResponseCache({str(tmp_path / 'c.sqlite')!r}); "
            "print(c.get_many(['k'])['k']['content'])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "x", out.stderr


# -- budget ----------------------------------------------------------------------------------------

def test_budget_stops_cleanly_and_loses_nothing(tmp_path):
    # $0.010025 a call on gpt-4o; each reserves ~$0.0101 (its prompt's bytes and 1000 completion tokens)
    reply = lambda b: Reply(["5"], prompt_tokens=10, completion_tokens=1000)  # noqa: E731
    with LocalServer(reply) as srv:
        ledger = Ledger(tmp_path / "calls.jsonl", budget_usd=0.025)
        agent = Agent(make_llm(srv, tmp_path, model="gpt-4o", ledger=ledger, max_tokens=1000))
        agent.call_llm([{"role": "user", "content": "1"}])
        agent.call_llm([{"role": "user", "content": "2"}])
        with pytest.raises(BudgetExceeded, match="budget"):  # its worst case would pass the budget: not sent
            agent.call_llm([{"role": "user", "content": "3"}])
        with pytest.raises(BudgetExceeded):
            agent.call_llm([{"role": "user", "content": "4"}])
        assert srv.count == 2
        replay = agent.fork()  # a rerun: a fresh agent makes the same first call, served from the cache
        assert replay.call_llm([{"role": "user", "content": "1"}]) == ["5"]
        lines = (tmp_path / "calls.jsonl").read_text().splitlines()
        assert [json.loads(x)["cached"] for x in lines] == [False, False, True]
        assert ledger.summary()["cost_usd"] == pytest.approx(2 * 0.010025)


def test_budget_is_hard_under_a_concurrent_flood(tmp_path):
    """64 threads at once (n up to 5) never spend past the budget: each call reserves its worst case first."""
    def honest(body):  # usage as a real server reports it: at most the prompt's bytes, max_tokens x n
        n = body.get("n", 1)
        return Reply(["5"] * n, prompt_tokens=sum(len(m["content"]) for m in body["messages"]),
                     completion_tokens=body["max_tokens"] * n)

    with LocalServer(honest, latency_s=0.05) as srv:
        ledger = Ledger(tmp_path / "calls.jsonl", budget_usd=0.01)
        llm = make_llm(srv, model="gpt-4o", ledger=ledger, max_tokens=100)  # ~$0.0012 per sample
        refused = []

        def call(i):
            try:
                Agent(llm).call_llm([{"role": "user", "content": f"question {i}"}], num_of_response=1 + i % 5)
            except BudgetExceeded:
                refused.append(i)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        costs = [json.loads(x)["cost_usd"] for x in (tmp_path / "calls.jsonl").read_text().splitlines()]
        assert 0 < sum(costs) <= 0.01 + 1e-12 and ledger.summary()["cost_usd"] <= 0.01 + 1e-12  # float rounding
        assert refused and len(costs) == srv.count == 64 - len(refused)


# -- faults ----------------------------------------------------------------------------------------

def test_429_is_retried_then_succeeds():
    seen = []

    def responder(body):
        seen.append(1)
        return Reply(status=429) if len(seen) == 1 else Reply(["ok"])

    with LocalServer(responder) as srv:
        llm = make_llm(srv, max_retries=2)
        assert llm.chat(USER) == ["ok"]
        assert srv.count == 2 and llm.ledger.summary()["errors"] == 0


def test_persistent_500_fails_that_call_only():
    def responder(body):
        return Reply(status=500) if body["messages"][-1]["content"] == "boom" else Reply(["fine"])

    with LocalServer(responder) as srv:
        agent = Agent(make_llm(srv, max_retries=1))
        with pytest.raises(LLMError, match="HTTP 500"):
            agent.call_llm([{"role": "user", "content": "boom"}])
        assert srv.count == 2  # the first try and one retry
        assert agent.call_llm(USER) == ["fine"]  # the run goes on
        assert agent.llm.ledger.summary()["errors"] == 1 and agent.usage.calls == 2


def test_timeout_raises_llm_error():
    with LocalServer(lambda b: Reply(["late"], delay_s=1.5)) as srv:
        with pytest.raises(LLMError, match="timed out"):  # not the late reply
            make_llm(srv, timeout_s=0.3).chat(USER)


def test_malformed_body_raises_llm_error():
    with LocalServer(lambda b: Reply(raw_body="{this is not json")) as srv:
        with pytest.raises(LLMError, match="malformed|failed"):
            make_llm(srv).chat(USER)


def test_empty_content_is_an_empty_answer():
    with LocalServer(lambda b: Reply([""])) as srv:
        agent = Agent(make_llm(srv))
        assert agent.call_llm(USER) == [""]
        assert agent.call_json_format_llm(USER, return_dict_keys=["answer"])[0]["answer"] == "NO answer IN DICTIONARY"


def test_concurrency_is_bounded():
    with LocalServer(latency_s=0.2) as srv:
        llm = make_llm(srv, max_concurrency=2)
        threads = [threading.Thread(target=llm.chat, args=([{"role": "user", "content": str(i)}],)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert srv.count == 6 and srv.max_in_flight <= 2  # 6 calls, never more than 2 at a time


def test_two_ledgers_on_one_budget_never_spend_more_than_it_together():
    """evaluate.py's executor and meta-agent ledgers share one Budget (review item E): calls from both, from
    many threads at once, reserve against the sum, so it never passes the budget."""
    from executor import Budget, CallRecord
    budget = Budget(1.0)
    ledgers = [Ledger(budget=budget), Ledger(budget=budget)]

    def spend(ledger):
        while True:
            try:
                ledger.reserve(0.125)  # the call's worst case
            except BudgetExceeded:
                return
            time.sleep(0.001)  # in flight: other threads reserve meanwhile
            ledger.record(CallRecord("m", cost_usd=0.125))
            ledger.release(0.125)

    threads = [threading.Thread(target=spend, args=(ledgers[i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spent = [lg.summary()["cost_usd"] for lg in ledgers]
    assert sum(spent) == 1.0 and budget.spent == 1.0 and budget.reserved == 0.0
    assert sum(lg.summary()["calls"] for lg in ledgers) == 8
    with pytest.raises(BudgetExceeded, match=r"spent \$1.0000 of the \$1.0000 budget"):
        ledgers[1].check_budget()


# -- the embedded model ----------------------------------------------------------------------------

def test_embedded_model_answers_offline():
    agent = Agent(LLM(ex.EMBEDDED, max_tokens=8))
    out = agent.call_llm(USER, temperature=0.0, num_of_response=2)
    assert len(out) == 2 and all(isinstance(t, str) and t.strip() for t in out)
    assert out[0] == out[1]  # greedy
    assert agent.usage.prompt_tokens > 10 and 0 < agent.usage.completion_tokens <= 16
    assert agent.usage.cost_usd == 0


def test_shared_prompt_parts_are_run_once_and_outputs_do_not_change():
    """n samples, identical requests and the shared beginning of different prompts are run through the
    model once (and a long beginning is kept for the next call); the greedy replies are those of
    generate() over each bare prompt."""
    import torch
    local = ex._local_model(ex.embedded_model_dir())
    state = "Workflows so far: " + " ".join(f"step{i}" for i in range(300))  # > 512 tokens
    a = [{"role": "user", "content": state + " Name a colour."}]
    b = [{"role": "user", "content": state + " What is the capital of France? Answer in one word."}]
    batch = [ex._LocalRequest(a, (0.0, 1.0, 6), 3), ex._LocalRequest(b, (0.0, 1.0, 6), 1),
             ex._LocalRequest(a, (0.0, 1.0, 6), 1), ex._LocalRequest(b, (0.0, 1.0, 6), 2, ("answer",))]
    passes = []
    hook = local.model.register_forward_pre_hook(lambda m, args, kw: passes.append(kw["input_ids"].shape),
                                                 with_kwargs=True)
    try:
        local._prefixes.clear()
        got = local._generate_batch(batch, 0.0, 1.0, 6)
        first = list(passes)
        passes.clear()
        again = local._generate_batch(batch[:1], 0.0, 1.0, 6)  # the state's part is stored: not run again
    finally:
        hook.remove()
    tok = local.tokenizer
    lengths = [len(tok(tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True),
                       add_special_tokens=False)["input_ids"]) for m in (a, b)]
    prompt_pass = sum(n * t for n, t in first if t > 1)
    assert prompt_pass < sum(lengths) < 7 * min(lengths)  # not 7 rows of prompt, nor 2 whole prompts
    assert sum(n * t for n, t in passes if t > 1) < 20 and again[0][0].content == got[0][0].content
    assert json.loads(got[3][0].content).keys() == {"answer"}
    assert len({s.content for s in got[0]}) == 1 and got[0][0].content == got[2][0].content  # greedy
    with torch.inference_mode():  # and the texts are generate()'s over the bare prompts, one at a time
        for messages, reply in ((a, got[0][0].content), (b, got[1][0].content)):
            ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
            ref = local.model.generate(**ids, max_new_tokens=6, do_sample=False, pad_token_id=local.pad_id)
            assert tok.decode(ref[0, ids["input_ids"].shape[1]:], skip_special_tokens=True) == reply


def test_a_prompt_over_the_context_fails_alone_as_a_bad_request():
    """One co-batched request over the model's context (review item D) is the caller's fault: it gets a
    BadRequestError, and the other request of the same batch its reply."""
    local = ex._local_model(ex.embedded_model_dir())
    short = ex._LocalRequest([{"role": "user", "content": "Name a colour."}], (0.0, 1.0, 4), 1)
    long = ex._LocalRequest([{"role": "user", "content": "word " * local.context}], (0.0, 1.0, 4), 2)
    with local._cond:  # both queued at once, so the worker takes them as one batch
        local._pending += [long, short]
        local._cond.notify()
    with pytest.raises(ex.BadRequestError, match=rf"the prompt has \d+ tokens, over the {local.context}-token context"):
        long.future.result(timeout=120)
    [reply] = short.future.result(timeout=120)
    assert reply.content.strip() and reply.prompt_tokens > 0
    assert reply.content == local._generate_batch([short], 0.0, 1.0, 4)[0][0].content  # as if it were alone


def test_a_prompt_near_the_context_does_not_cut_the_replies_batched_with_it():
    """A request whose reply must be cut short to fit the context is generated apart: the other request of the
    batch gets its whole reply, as alone. (A small context stands in for the 8k one: same code, fast.)"""
    local = ex._local_model(ex.embedded_model_dir())
    short = ex._LocalRequest([{"role": "user", "content": "Tell me about the sea."}], (0.0, 1.0, 12), 1)
    alone = local._generate_batch([short], 0.0, 1.0, 12)[0][0]
    near = ex._LocalRequest([{"role": "user", "content": "sea " * 60}], (0.0, 1.0, 12), 1)
    prompt = local.tokenizer.apply_chat_template(near.messages, tokenize=False, add_generation_prompt=True)
    context, local.context = local.context, local._count_tokens(prompt) + 3
    try:
        got = local._generate_batch([short, near], 0.0, 1.0, 12)
    finally:
        local.context = context
    assert alone.completion_tokens > 3 and got[0][0] == alone  # not cut to the near one's 3 tokens
    assert got[1][0].completion_tokens <= 3


# -- CLI and parse_args ----------------------------------------------------------------------------

def test_cli_json(tmp_path):
    with LocalServer() as srv:
        cmd = [sys.executable, str(ROOT / "executor.py"), "What is 2+3?", "--model", "gpt-4o-mini",
               "--base-url", srv.base_url, "--api-key", "k", "--cache-path", str(tmp_path / "c.sqlite"), "--json"]
        outs = [json.loads(subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout)
                for _ in range(2)]
        assert outs[0]["answer"] == "What is 2+3?" and outs[0]["prompt_tokens"] == 3
        assert set(outs[0]) == {"answer", "prompt_tokens", "completion_tokens", "cost_usd", "cached"}
        assert outs[0]["cached"] is False and outs[1]["cached"] is True and srv.count == 1


@dataclass
class _Args:
    """Demo."""
    out_dir: str = field(default="runs/x", metadata={"help": "where"})
    num_rollouts: int = 2
    lr: float | None = None
    save_optimizer: bool = True
    benchmarks: list[str] = field(default_factory=lambda: ["gsm8k"])
    mode: Literal["fast", "full"] = "fast"


def test_parse_args():
    a = ex.parse_args(_Args, ["--num-rollouts", "5", "--lr", "0.1", "--no-save-optimizer",
                              "--benchmarks", "drop", "mmlu", "--mode", "full"])
    assert a == _Args("runs/x", 5, 0.1, False, ["drop", "mmlu"], "full")
    assert ex.parse_args(_Args, []) == _Args()
    with pytest.raises(SystemExit):
        ex.parse_args(_Args, ["--no-such-flag", "1"])
    with pytest.raises(SystemExit):
        ex.parse_args(_Args, ["--mode", "slow"])


# -- code execution (delegated to sandbox.py) ------------------------------------------------------

def test_execute_code_and_public_tests():
    with LocalServer() as srv:
        agent = Agent(make_llm(srv))
        assert agent.execute_code("def solution():\n    return 2 + 3") == 5
        with pytest.raises(RuntimeError, match="ZeroDivisionError"):
            agent.execute_code("def solution():\n    return 1 / 0")
        sample = agent.fork(public_tests="assert add(1, 2) == 3")
        assert sample.run_public_tests("def add(a, b):\n    return a + b")["passed"]
        failed = sample.run_public_tests("def add(a, b):\n    return a - b")
        assert not failed["passed"] and "assert" in failed["feedback"]
        assert srv.count == 0


def test_repeated_identical_calls_draw_new_samples_and_replay_the_same(tmp_path):
    """A self-consistency loop of identical n=1 calls gets fresh samples; a rerun replays them from the cache."""
    counter = iter(range(100))
    with LocalServer(lambda b: Reply([str(next(counter))])) as srv:
        llm = make_llm(srv, tmp_path)
        first = [Agent(llm).call_llm(USER)[0]]
        agent = Agent(llm)
        drawn = [agent.call_llm(USER)[0] for _ in range(3)]
        assert drawn[0] == first[0] and len(set(drawn)) == 3 and srv.count == 3
        again = Agent(llm)
        assert [again.call_llm(USER)[0] for _ in range(3)] == drawn and srv.count == 3
        assert Agent(llm, seed=1).call_llm(USER)[0] not in drawn and srv.count == 4


def test_which_models_run_in_process(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    assert is_local_model("embedded") and is_local_model(str(tmp_path / "ckpt"))
    assert is_local_model("Qwen/Qwen2.5-Coder-7B-Instruct")  # a Hub id with no endpoint: transformers
    assert not is_local_model("Qwen/Qwen2.5-Coder-7B-Instruct", "http://localhost:8000/v1")  # served by vLLM
    assert not is_local_model(str(tmp_path / "ckpt"), "http://localhost:8000/v1")  # `vllm serve <folder>`
    assert not is_local_model("gpt-4o-mini")


# -- seeds -----------------------------------------------------------------------------------------

def test_cot_sc_loop_gets_distinct_samples_on_a_seeded_server():
    """On a server that honours seeds, 5 identical calls get 5 samples: each is sent its own seed."""
    with LocalServer(seeded) as srv:
        for run_seed in (7, None):
            agent = Agent(make_llm(srv), seed=run_seed)
            answers = [agent.call_json_format_llm(USER, return_dict_keys=["answer"])[0]["answer"] for _ in range(5)]
            assert len(set(answers)) == 5
            assert [r["seed"] for r in srv.requests[-5:]] == [ex.sample_seed(run_seed, i) for i in range(5)]
        assert ex.sample_seed(None, 3) == ex.sample_seed(0, 3) != ex.sample_seed(7, 3)  # None is seed 0


@pytest.mark.parametrize("supports_n", [True, False])
def test_partial_cache_hit_asks_only_the_missing_samples_with_their_own_seeds(tmp_path, supports_n):
    with LocalServer(seeded, supports_n=supports_n) as srv:
        llm = make_llm(srv, tmp_path)
        first = llm.chat(USER, n=3, seed=7)
        before = srv.count
        five = llm.chat(USER, n=5, seed=7)
        assert five[:3] == first and len(set(five)) == 5
        new = srv.requests[before:]
        if supports_n:  # one request for both, sent the first missing sample's seed
            assert [(r.get("n"), r["seed"]) for r in new] == [(2, ex.sample_seed(7, 3))]
        else:
            assert sorted(r["seed"] for r in new) == sorted([ex.sample_seed(7, 3), ex.sample_seed(7, 4)])


def test_seed_zero_keeps_the_old_cache_keys():
    with LocalServer() as srv:
        llm = make_llm(srv)
        base = {"backend": "openai", "endpoint": llm.endpoint, "model": "gpt-4o-mini", "messages": USER,
                "temperature": 0.5, "top_p": 1.0, "max_tokens": 4096, "json_mode": False, "i": 0}
        assert llm._keys(USER, 0.5, 1.0, 4096, False, 1, 0) == llm._keys(USER, 0.5, 1.0, 4096, False, 1, None) == [
            ResponseCache.make_key(base)]


# -- limits: clamps, concurrency -------------------------------------------------------------------

def test_requests_are_clamped_to_the_runs_limits(tmp_path, capsys):
    with LocalServer(numbered) as srv:
        agent = Agent(make_llm(srv, ledger=Ledger(tmp_path / "calls.jsonl"), max_tokens=64))
        out = agent.call_llm(USER, max_tokens=1_000_000_000, num_of_response=1000)
        agent.call_llm(USER, max_tokens=10 ** 6)
        assert len(out) == ex.MAX_N and srv.requests[0]["n"] == ex.MAX_N
        assert all(r["max_tokens"] == 64 for r in srv.requests)
        assert agent.llm.ledger.summary()["clamped_calls"] == 2
        first = json.loads((tmp_path / "calls.jsonl").read_text().splitlines()[0])
        assert first["clamped"] == "n 1000->32, max_tokens 1000000000->64"
        assert capsys.readouterr().err.count("executor: clamped") == 1  # said once


def test_concurrency_cap_holds_for_every_llm_on_one_endpoint():
    """Two LLMs on one server (the policy and the executor), n fallbacks and 429 retries together never
    have more than the cap in flight there."""
    throttled = set()

    def responder(body):  # the first request of every 4th chat is throttled once (and retried by the client)
        content = body["messages"][-1]["content"]
        if content in throttled or int(content) % 4:
            return Reply(["x"], delay_s=0.05)
        throttled.add(content)
        return Reply(status=429)

    with LocalServer(responder, supports_n=False) as srv:
        llms = [make_llm(srv, model=m, max_concurrency=3, max_retries=3) for m in ("gpt-4o-mini", "gpt-4o")]
        threads = [threading.Thread(target=llms[i % 2].chat, args=([{"role": "user", "content": str(i)}],),
                                    kwargs={"n": 3}) for i in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert srv.count == 24 * 3 + 6 and srv.max_in_flight <= 3


def test_brokered_workflow_flood_obeys_the_cap():
    import sandbox
    flood = ("import threading\n"
             "def solver(agent, task):\n"
             "    out = []\n"
             "    ts = [threading.Thread(target=lambda k=k: out.append(agent.call_llm(\n"
             "          [{'role': 'user', 'content': task + str(k)}], num_of_response=2))) for k in range(8)]\n"
             "    [t.start() for t in ts]\n"
             "    [t.join() for t in ts]\n"
             "    return {'answer': len(out)}\n")
    with LocalServer(latency_s=0.02, supports_n=False) as srv:
        agent = Agent(make_llm(srv, max_concurrency=4))
        run = sandbox.run_workflow(flood, [{"task": f"t{i}"} for i in range(6)], agent, max_concurrency=6)
        assert [s.answer for s in run.samples] == [8] * 6
        assert srv.count == 6 * 8 * 2 and srv.max_in_flight <= 4


# -- credentials never leak ------------------------------------------------------------------------

def test_credentials_in_the_base_url_are_redacted(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)  # the HTTP client logs every URL it requests
    secret, key = "s3cr3t-pass", "sk-private-key-123"

    def responder(body):  # a server that echoes the key it was sent, as some 401 messages do
        return Reply(status=401, error=f"Incorrect API key provided: {key}")

    with LocalServer(responder) as srv:
        url = srv.base_url.replace("http://", f"http://user:{secret}@") + f"?api-key={secret}"
        llm = LLM("gpt-4o-mini", url, key, max_retries=0, ledger=Ledger(tmp_path / "calls.jsonl"))
        errors = []
        with pytest.raises(LLMError) as e:
            llm.chat(USER)
        errors.append(str(e.value))
        dead = LLM("gpt-4o-mini", f"http://user:{secret}@127.0.0.1:9/v1", key, max_retries=0,
                   ledger=Ledger(tmp_path / "calls.jsonl"))
        with pytest.raises(LLMError) as e:
            dead.chat(USER)
        errors.append(str(e.value))
        import sandbox
        workflow = ("def solver(agent, task):\n    try:\n        agent.call_llm([{'role': 'user', 'content': task}])\n"
                    "    except Exception as e:\n        return {'answer': str(e)}\n")
        run = sandbox.run_workflow(workflow, [{"task": "hi"}], Agent(llm))
        errors.append(run.samples[0].answer)
        cli = subprocess.run([sys.executable, str(ROOT / "executor.py"), "hi", "--model", "gpt-4o-mini", "--base-url",
                              url, "--api-key", key, "--no-cache"], capture_output=True, text=True, timeout=60)
        errors.append(cli.stdout + cli.stderr)
    logged = (tmp_path / "calls.jsonl").read_text()
    assert "HTTP 401" in errors[0] and "://***@127.0.0.1" in llm.endpoint and "api-key=***" in llm.endpoint
    assert "127.0.0.1:9" in errors[1] and "HTTP 401" in errors[2] and "HTTP 401" in errors[3]
    assert "127.0.0.1" in caplog.text
    for text in [*errors, logged, llm.endpoint, dead.endpoint, caplog.text]:
        assert secret not in text and key not in text, text


def test_redact_url_leaves_plain_urls_byte_for_byte():
    assert ex.redact_url("http://localhost:8000/v1") == "http://localhost:8000/v1"
    assert ex.redact_url("https://u:p@h.example/v1?a=1&token=t") == "https://***@h.example/v1?a=1&token=***"


# -- a corrupt cache -------------------------------------------------------------------------------

def _real_cache(path: Path) -> bytes:
    cache = ResponseCache(path)
    cache.put_many({f"k{i}": {"content": "x" * 500, "prompt_tokens": 1, "completion_tokens": 1} for i in range(300)})
    cache.close()  # checkpoints the WAL into the file
    data = path.read_bytes()
    path.unlink()
    return data


@pytest.mark.parametrize("damage", ["garbage", "truncated", "overwritten pages"])
def test_corrupt_cache_file_is_named_and_kept(tmp_path, damage):
    bad = tmp_path / "llm.sqlite"
    good = _real_cache(tmp_path / "good.sqlite")
    broken = {"garbage": b"this is not a sqlite database\n" * 200, "truncated": good[: len(good) // 2],
              "overwritten pages": good[:8192] + b"\xff" * 8192 + good[16384:]}[damage]
    bad.write_bytes(broken)
    with pytest.raises(ex.CacheError) as e:
        cache = ResponseCache(bad)
        cache.get_many([f"k{i}" for i in range(300)])
    assert str(bad) in str(e.value) and f"mv {bad} {bad}.bad" in str(e.value)
    assert bad.read_bytes() == broken  # never deleted or rewritten
    if damage == "garbage":
        cli = subprocess.run([sys.executable, str(ROOT / "executor.py"), "hi", "--model", "embedded",
                              "--cache-path", str(bad)], capture_output=True, text=True, timeout=60)
        assert cli.returncode != 0 and f"mv {bad}" in cli.stderr and "Traceback" not in cli.stderr


# -- what a server does not take, and what no server takes ---------------------------------------

def test_a_server_that_rejects_seed_or_n_is_served_without_them():
    def responder(body):
        if "seed" in body:
            return Reply(status=400, error="Unrecognized request argument supplied: seed")
        if body.get("n", 1) > 1:
            return Reply(status=400, error="Invalid value for n: only n = 1 is supported", param="n")
        return Reply(["ok"])

    with LocalServer(responder) as srv:
        agent = Agent(make_llm(srv))
        assert agent.call_llm(USER, num_of_response=3) == ["ok"] * 3
        assert agent.usage.bad_requests == agent.usage.failed_calls == 0
        before = srv.count
        agent.call_llm([{"role": "user", "content": "again"}], num_of_response=2)
        assert srv.count == before + 2 and all("seed" not in r and "n" not in r for r in srv.requests[before:])


@pytest.mark.parametrize("kwargs", [{"temperature": float("nan")}, {"temperature": "hot"}, {"max_tokens": float("inf")},
                                    {"num_of_response": float("nan")}])
def test_non_finite_sampling_parameters_are_the_callers_error(kwargs):
    with LocalServer() as srv:
        agent = Agent(make_llm(srv))
        with pytest.raises(ValueError, match="finite"):
            agent.call_llm(USER, **kwargs)
        assert srv.count == 0 and agent.usage.failed_calls == 0


def test_a_served_checkpoint_retrained_in_its_folder_misses_the_old_cache(tmp_path):
    """vLLM serves checkpoints/run under that path: the cache key holds its weight files, not just the name."""
    ckpt = tmp_path / "checkpoints" / "run"
    ckpt.mkdir(parents=True)
    (ckpt / "config.json").write_text("{}")
    (ckpt / "model.safetensors").write_bytes(b"old weights")
    cache = ResponseCache(tmp_path / "llm.sqlite")
    with LocalServer() as srv:
        def ask():
            return LLM(str(ckpt), srv.base_url, "k", cache=cache, max_retries=0).chat(USER, temperature=0.0)
        ask()
        ask()
        assert srv.count == 1  # the same weights: replayed
        (ckpt / "model.safetensors").write_bytes(b"new, retrained weights")
        ask()
        assert srv.count == 2

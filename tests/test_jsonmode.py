"""JSON mode: the embedded model (real SmolLM2-135M, in-process) constrained by llguidance returns a JSON
object with exactly the requested keys on every call, within its token budget; endpoints get the keys as
a json_schema when asked (tests/local_server.py records the request bodies)."""
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import executor as ex
from executor import LLM, Agent, ResponseCache
from tests.local_server import LocalServer, Reply

QUESTIONS = ["What is 7 + 5?", "How many legs does a spider have?", "Name the capital of France.",
             "Explain in detail how a rainbow forms, step by step, with all the physics."]
KEYS = ["reasoning", "answer"]


def assert_object_with(d: dict, keys: list[str]) -> None:
    assert isinstance(d, dict) and list(d) == keys, d  # exactly these keys, in this order
    assert all(isinstance(v, str) and v and not v.startswith("NO ") for v in d.values()), d


def test_embedded_json_mode_every_call_has_the_keys():
    """Concurrent calls in one micro-batch (JSON rows with different keys next to a plain-text row), n > 1,
    sampling at temperature 1, a long question whose reply the budget cuts: every reply is a JSON object
    with exactly the keys asked for, within max_tokens per sample."""
    max_tokens = 20
    agent = Agent(LLM(ex.EMBEDDED, max_tokens=max_tokens))
    odd = ["ответ", 'say "x"']  # keys that need escaping in the grammar and in the JSON

    def ask(i):
        sample = agent.fork()
        if i == len(QUESTIONS):
            return sample.call_llm([{"role": "user", "content": "Say hi."}], num_of_response=2)
        keys = odd if i == 1 else KEYS
        return keys, sample, sample.call_json_format_llm([{"role": "user", "content": QUESTIONS[i]}],
                                                         temperature=1.0, num_of_response=2, return_dict_keys=keys)

    with ThreadPoolExecutor(len(QUESTIONS) + 1) as pool:
        *answers, plain = pool.map(ask, range(len(QUESTIONS) + 1))
    for keys, sample, dicts in answers:
        assert len(dicts) == 2
        for d in dicts:
            assert_object_with(d, keys)
        assert 0 < sample.usage.completion_tokens <= 2 * max_tokens  # the value caps close it in the budget
    assert len(plain) == 2 and all(isinstance(t, str) for t in plain)  # the unconstrained row still answers


def test_embedded_json_mode_small_budget_and_no_keys():
    """A budget smaller than the object's fixed text is raised to it (and still parses); JSON mode without
    keys (call_llm with response_format="json") gives an object."""
    llm = LLM(ex.EMBEDDED)
    count = ex._local_model(ex.embedded_model_dir())._count_tokens
    fixed, values = ex.json_min_tokens(tuple(KEYS), count)
    records = []
    texts = llm._chat([{"role": "user", "content": QUESTIONS[-1]}], temperature=1.0, n=2, max_tokens=2,
                      json_mode=True, json_keys=KEYS, on_record=records.append)
    for t in texts:
        assert_object_with(json.loads(t), KEYS)
    assert records[0].completion_tokens <= 2 * (fixed + values)
    out = Agent(llm).call_llm([{"role": "user", "content": "Describe a cat as JSON."}], temperature=1.0,
                              num_of_response=2, max_tokens=8, response_format="json")
    assert len(out) == 2
    for d in out:
        assert isinstance(d, dict) and d and "JSONDecodeError" not in d, d


def test_embedded_json_keys_are_part_of_the_cache_key(tmp_path):
    """The same chat asked with other keys is a different constrained reply, not the cached one."""
    llm = LLM(ex.EMBEDDED, max_tokens=4, cache=ResponseCache(tmp_path / "llm.sqlite"))
    chat = [{"role": "user", "content": "What is 2+3?"}]
    first = llm._chat(chat, temperature=0.0, json_mode=True, json_keys=["answer"])[0]
    second = llm._chat(chat, temperature=0.0, json_mode=True, json_keys=["reasoning", "answer"])[0]
    assert list(json.loads(first)) == ["answer"]
    assert list(json.loads(second)) == ["reasoning", "answer"]
    assert llm._chat(chat, temperature=0.0, json_mode=True, json_keys=["answer"])[0] == first  # replayed


# -- endpoints: the keys as a json_schema, on request ----------------------------------------------

def schema_of(keys):
    return {"type": "json_schema", "json_schema": {"name": "reply", "strict": True, "schema": {
        "type": "object", "properties": {k: {"type": "string"} for k in keys}, "required": keys,
        "additionalProperties": False}}}


def test_json_schema_option_sends_the_keys_and_keys_the_cache(tmp_path):
    with LocalServer(lambda b: Reply(['{"reasoning": "r", "answer": "5"}'] * b.get("n", 1))) as srv:
        llm = LLM("gpt-4o-mini", srv.base_url, "test-key", max_retries=0, json_schema=True,
                  cache=ResponseCache(tmp_path / "llm.sqlite"))
        agent = Agent(llm)
        assert agent.call_json_format_llm([{"role": "user", "content": "2+3?"}], return_dict_keys=KEYS) == \
            [{"reasoning": "r", "answer": "5"}]
        assert srv.requests[0]["response_format"] == schema_of(KEYS)
        llm._chat([{"role": "user", "content": "x"}], json_mode=True, json_keys=KEYS)
        llm._chat([{"role": "user", "content": "x"}], json_mode=True, json_keys=["answer"])  # another schema
        assert srv.count == 3 and srv.requests[2]["response_format"] == schema_of(["answer"])
        llm._chat([{"role": "user", "content": "x"}], json_mode=True, json_keys=["answer"])  # cached
        assert srv.count == 3
        agent.call_llm([{"role": "user", "content": "y"}], response_format="json")  # no keys: json_object
        assert srv.requests[3]["response_format"] == {"type": "json_object"}


def test_default_endpoint_json_mode_stays_json_object(tmp_path):
    """The paper's executors: json_object whatever the keys, and the keys do not split the cache."""
    with LocalServer(lambda b: Reply(['{"answer": "5"}'])) as srv:
        llm = LLM("gpt-4o-mini", srv.base_url, "test-key", max_retries=0, cache=ResponseCache(tmp_path / "c.sqlite"))
        llm._chat([{"role": "user", "content": "x"}], json_mode=True, json_keys=KEYS)
        llm._chat([{"role": "user", "content": "x"}], json_mode=True, json_keys=["answer"])
        assert srv.count == 1 and srv.requests[0]["response_format"] == {"type": "json_object"}


def test_json_schema_rejected_falls_back_to_extraction():
    def responder(body):
        if "response_format" in body:  # only a rejection that names response_format turns it off
            return Reply(raw_body=json.dumps({"error": {"message": "response_format json_schema is not supported",
                                                        "param": "response_format"}}), status=400)
        return Reply(['Sure: {"answer": "5"}'])
    with LocalServer(responder) as srv:
        agent = Agent(LLM("gpt-4o-mini", srv.base_url, "test-key", max_retries=0, json_schema=True))
        out = agent.call_json_format_llm([{"role": "user", "content": "2+3?"}], return_dict_keys=["answer"])
        assert out == [{"answer": "5"}]
        assert srv.requests[0]["response_format"] == schema_of(["answer"]) and "response_format" not in srv.requests[1]


# -- plots: the numbers the embedded model gives (small, equal, $0) still read right ------------------

def plotted(tmp_path, monkeypatch, cost: float) -> dict:
    """Run evaluate.plot_results on seven methods that all score 0 at `cost` dollars per run; return each
    saved figure's (y limits, x label) per axes."""
    import matplotlib.figure
    import evaluate as ev
    seen = {}
    real = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, path, **kw: (
        seen.__setitem__(Path(path).name, [(ax.get_ylim(), ax.get_xlabel()) for ax in fig.axes]),
        real(fig, path, **kw))[1])
    (tmp_path / "trajectories").mkdir()
    (tmp_path / "trajectories" / "w4s.jsonl").write_text(json.dumps({
        "turn": 0, "benchmark": "mmlu_pro", "executor_model": "embedded", "seed": 0, "best": 0,
        "candidates": [{"valid_acc": 0.0}]}) + "\n")
    rows = [{"benchmark": "mmlu_pro", "executor_model": "embedded", "seed": 0, "method": "w4s", "seed_valid_best": 0.0}]
    agg = [{"benchmark": "mmlu_pro", "executor_model": "embedded", "method": m, "num_seeds": 1, "accuracy": 0.0,
            "prompt_tokens": 5000, "completion_tokens": 700, "cost_usd_per_run": cost} for m in ev.METHODS]
    ev.plot_results(tmp_path, rows, agg)
    return seen


def test_plots_span_0_to_100_and_show_tokens_when_free(tmp_path, monkeypatch):
    seen = plotted(tmp_path, monkeypatch, cost=0.0)
    for name in ("cost_accuracy.png", "valid_curves.png"):
        (lo, hi), _ = seen[name][0]
        assert lo <= 0 and hi >= 100, (name, lo, hi)  # a 0-100 % axis, not -0.04..0.04
        assert (tmp_path / name).stat().st_size > 1000
    assert "tokens" in seen["cost_accuracy.png"][0][1]  # every dollar figure is 0: tokens on the x axis


def test_plots_keep_dollars_when_there_are_any(tmp_path, monkeypatch):
    assert plotted(tmp_path, monkeypatch, cost=0.02)["cost_accuracy.png"][0][1] == "dollars per run"

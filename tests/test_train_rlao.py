"""train_rlao.py on CPU: a tiny random Qwen2 built from a config, with the embedded SmolLM2 tokenizer (ChatML).
Synthetic trajectories in the contract format; no network."""
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

import executor
import prompts
import train_rlao

ROOT = Path(__file__).resolve().parents[1]


def turn(benchmark, episode, t, user, actions, rewards):
    state = [{"role": "system", "content": "You design workflows."}, {"role": "user", "content": user}]
    cands = [{"action": a, "code": "", "status": "ok" if r is not None else "failed", "error": None, "repairs": 0,
              "valid_acc": 0.5, "reward": r if r is not None else 0.0, "feedback": "", "calls": 1, "cost_usd": 0.0}
             for a, r in zip(actions, rewards)]
    return {"run": "t", "benchmark": benchmark, "episode": episode, "turn": t, "seed": 0, "meta_model": "m",
            "executor_model": "e", "state": state, "candidates": cands, "best": 0}


def action(i):
    return f"Analysis {i}: vote over {i % 3 + 2} samples.\n```python\ndef solver(agent, task):\n    return {{'answer': {i}}}\n```"


@pytest.fixture(scope="module")
def tok_dir():
    return executor.embedded_model_dir()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tok_dir):
    d = tmp_path_factory.mktemp("tiny")
    tok = AutoTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    Qwen2ForCausalLM(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def traj(tmp_path_factory):
    p = tmp_path_factory.mktemp("runs") / "trajectories.jsonl"
    rows = [turn("gsm8k" if e % 2 else "mbpp", e, t, f"Task {e}.{t}: improve the workflow.",
                 [action(3 * e + t), action(3 * e + t + 7), "broken"], [1.0 if t else 0.5, 0.0, None])
            for e in range(4) for t in range(3)]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def common(traj, model, out, run, *extra):
    return ["--trajectories", str(traj), "--model", str(model), "--out-dir", str(out), "--run", run, "--dtype", "float32",
            "--device", "cpu", "--max-len", "512", *extra]


def test_labels_cover_exactly_the_action(tok_dir):
    tok = AutoTokenizer.from_pretrained(tok_dir)
    state = turn("gsm8k", 0, 0, "Design a solver.", [], [])["state"]
    act = action(5) + "\n"  # a trailing newline inside the action must keep its loss
    ids, labels = train_rlao.tokenize_sample(tok, state, act)
    target = [i for i, l in zip(ids, labels) if l != -100]
    assert tok.decode(target) == act + "<|im_end|>"
    first = next(k for k, l in enumerate(labels) if l != -100)
    assert tok.decode(ids[:first]) == tok.apply_chat_template(state, add_generation_prompt=True, tokenize=False)
    assert tok.decode(ids[first + len(target):]) == "\n"  # ChatML's newline after <|im_end|> gets no loss
    all_ids, all_labels = train_rlao.tokenize_sample(tok, state, act, loss_on_all_tokens=True)
    assert all_ids == ids and all_labels == ids != labels


def test_loss_equals_hand_computed_weighted_nll(tiny_dir, tok_dir):
    tok = AutoTokenizer.from_pretrained(tok_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    state = turn("gsm8k", 0, 0, "Design a solver.", [], [])["state"]
    samples = []
    for i, w in [(1, 0.5), (2, 3.0), (30, 1.7)]:
        ids, labels = train_rlao.tokenize_sample(tok, state, action(i) * (1 + i // 10))
        samples.append(dict(input_ids=ids, labels=labels, weight=w))
    b = train_rlao.collate(samples, tok.pad_token_id, "cpu")
    loss, nll = train_rlao.rwr_loss(model, b["input_ids"], b["attention_mask"], b["labels"], b["weights"], 4, 7)
    expected = 0.0
    for s in samples:
        logp = torch.log_softmax(model(torch.tensor([s["input_ids"]])).logits[0].double(), -1)
        tok_nll = [-logp[t - 1, s["input_ids"][t]] for t in range(1, len(s["labels"])) if s["labels"][t] != -100]
        expected += s["weight"] * sum(tok_nll) / len(tok_nll)
    assert loss.item() == pytest.approx(expected.item() / 4, rel=1e-5)  # divided by the step's sample count (4)


def logp(model, tok, state, act):
    ids, labels = train_rlao.tokenize_sample(tok, state, act)
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)
    return sum(lp[t - 1, ids[t]].item() for t in range(1, len(ids)) if labels[t] != -100)


def test_training_lowers_loss_and_prefers_the_rewarded_action(tmp_path, tiny_dir, tok_dir):
    good, bad = "Use self-consistency over five samples.", "Use a single greedy sample instead."
    p = tmp_path / "pair.jsonl"
    p.write_text(json.dumps(turn("gsm8k", 0, 0, "Improve it.", [good, bad], [1.0, 0.0])) + "\n")
    tok = AutoTokenizer.from_pretrained(tok_dir)
    state = turn("gsm8k", 0, 0, "Improve it.", [], [])["state"]
    before = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    gap0 = logp(before, tok, state, good) - logp(before, tok, state, bad)
    run_dir = train_rlao.main(common(p, tiny_dir, tmp_path, "pair", "--batch-size", "2", "--num-epochs", "8",
                                     "--lr", "3e-3", "--warmup-frac", "0", "--save-every", "0"))
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train/loss"] < rows[0]["train/loss"] - 0.5
    after = AutoModelForCausalLM.from_pretrained(run_dir, dtype=torch.float32)
    assert logp(after, tok, state, good) - logp(after, tok, state, bad) > gap0 + 1.0
    # the final folder is a HF model folder that reloads and generates
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= {f.name for f in run_dir.iterdir()}
    ids = tok.apply_chat_template(state, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = after.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 5


def test_optimizer_in_backward_matches_plain_optimizer(tmp_path, traj, tiny_dir):
    dirs = [train_rlao.main(common(traj, tiny_dir, tmp_path, f"oib_{m}", m, "--max-steps", "2", "--save-every", "0",
                                   "--lr", "1e-3", "--batch-size", "3"))
            for m in ("--optimizer-in-backward", "--no-optimizer-in-backward")]
    a, b = (load_file(d / "model.safetensors") for d in dirs)
    init = load_file(tiny_dir / "model.safetensors")
    for k in a:
        assert not torch.equal(a[k], init[k]) or k.endswith("bias")
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)
    ra, rb = ([json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()] for d in dirs)
    assert [r["train/lr"] for r in ra] == [r["train/lr"] for r in rb]
    assert ra[0]["train/grad_norm"] == pytest.approx(rb[0]["train/grad_norm"], rel=1e-4)


def test_incompatible_flags_fail_before_loading(traj, tiny_dir, tmp_path):
    with pytest.raises(SystemExit, match="--grad-accum-steps 1"):
        train_rlao.main(common(traj, tiny_dir, tmp_path, "x", "--optimizer-in-backward", "--grad-accum-steps", "2"))
    with pytest.raises(SystemExit, match="--max-grad-norm 0"):
        train_rlao.main(common(traj, tiny_dir, tmp_path, "x", "--optimizer-in-backward", "--max-grad-norm", "1"))


def test_dry_run_prints_statistics_and_plan(traj, tiny_dir, tmp_path, capsys):
    assert train_rlao.main(common(traj, tiny_dir, tmp_path, "dry", "--dry-run", "--min-reward", "0.5")) is None
    out = capsys.readouterr().out
    assert "samples: 12 |" in out and "r=0.5 (w=3.49): 4" in out and "r=1 (w=12.18): 8" in out
    assert "gsm8k: 6" in out and "memory plan" in out and "min reward" in out
    assert not (tmp_path / "dry").exists()


def test_no_samples_fails_unless_allowed_then_exports_the_base_model(tmp_path, tiny_dir):
    empty = tmp_path / "failed.jsonl"
    empty.write_text(json.dumps(turn("gsm8k", 0, 0, "Task.", ["broken"], [None])) + "\n")
    with pytest.raises(SystemExit, match="no training step"):
        train_rlao.main(common(empty, tiny_dir, tmp_path, "none"))
    out = train_rlao.main(common(empty, tiny_dir, tmp_path, "base", "--allow-no-samples"))
    assert (out / "NOT_TRAINED.txt").exists()
    assert torch.equal(load_file(out / "model.safetensors")["model.embed_tokens.weight"],
                       load_file(tiny_dir / "model.safetensors")["model.embed_tokens.weight"])


def run_cli(args):
    # one thread each: two runs share 2 cores, and oversubscribed OpenMP threads crawl
    return subprocess.Popen([sys.executable, "-u", str(ROOT / "train_rlao.py"), *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_kill_and_resume_gives_the_same_weights(tmp_path, traj, tiny_dir):
    args = ["--batch-size", "2", "--grad-accum-steps", "2", "--num-epochs", "3", "--save-every", "5", "--lr", "1e-3",
            "--max-grad-norm", "1.0", "--eval-fraction", "0.25", "--eval-every", "4"]
    full = run_cli(common(traj, tiny_dir, tmp_path, "full", *args))
    killed = run_cli(common(traj, tiny_dir, tmp_path, "killed", *args))
    for line in killed.stdout:  # a real SIGKILL, mid-run, after the checkpoint of step 5
        if line.startswith("step 7/"):
            killed.send_signal(signal.SIGKILL)
            break
    killed.wait()
    full_out, full_err = full.communicate(timeout=300)
    assert full.returncode == 0, full_err[-3000:]
    assert killed.returncode == -signal.SIGKILL and not (tmp_path / "killed" / "model.safetensors").exists()
    resumed = run_cli(common(traj, tiny_dir, tmp_path, "killed", *args, "--resume", "--num-checkpoints-kept", "2"))
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    assert "resumed from" in out and "the command line wins" in err
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "killed" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma = [json.loads(l) for l in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(l) for l in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith("sys/")} for r in rows]
    assert strip(ma) == strip(mb) and any("eval/weighted_loss" in r for r in ma)


# ---------------------------------------------------------------- bf16 updates (issue 13.1)
def weight_change(optimizer: str, dtype, optimizer_in_backward: bool, num_steps: int = 20, lr: float = 1e-5):
    """Accumulated weight change of a tiny Qwen2 (initialised like a 7B model: std 0.02) after num_steps of AdamW
    on one fixed batch, measured from its start in `dtype`."""
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(cfg).to(dtype)
    start = [p.detach().float().clone() for p in model.parameters()]
    ids = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(1))
    make = lambda ps: train_rlao.make_optimizer(ps, optimizer, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)  # noqa: E731
    if optimizer_in_backward:
        train_rlao.attach_optimizer_in_backward(model, make, torch.zeros(()))
    else:
        opt = make(list(model.parameters()))
    for _ in range(num_steps):
        model(ids, labels=ids).loss.backward()
        if not optimizer_in_backward:
            opt.step()
            opt.zero_grad(set_to_none=True)
    return torch.cat([(p.detach().float() - p0).flatten() for p, p0 in zip(model.parameters(), start)])


@pytest.fixture(scope="module")
def fp32_change():
    return weight_change("adamw", torch.float32, False)


# Tolerance on |dW_bf16 - dW_fp32| / |dW_fp32| after 20 steps at lr 1e-5: a bf16 weight is stored within half a
# bf16 spacing (|w| * 2^-9, ~4e-5 at |w| = 0.02) of the value Kahan summation tracks, while 20 Adam steps move it
# by at most 2e-4; that rounding alone costs ~0.1-0.2 (measured 0.18). Plain bf16 AdamW loses every update
# below half a spacing: ~84% of the weights never move (measured 0.93).
TOLERANCE = 0.3


@pytest.mark.parametrize("optimizer,optimizer_in_backward,follows", [
    ("adamw_kahan", False, True), ("adamw_kahan", True, True),
    ("adamw", False, False),  # the failure the default guards against
])
def test_bf16_updates_follow_fp32_only_with_kahan(fp32_change, optimizer, optimizer_in_backward, follows):
    change = weight_change(optimizer, torch.bfloat16, optimizer_in_backward)
    deviation = ((change - fp32_change).norm() / fp32_change.norm()).item()
    assert (deviation < TOLERANCE) == follows, deviation
    moved = (change != 0).float().mean().item()
    assert moved > 0.95 if follows else moved < 0.3


def test_default_optimizer_in_bf16_is_kahan_and_the_plan_counts_its_buffer(traj, tiny_dir, tmp_path, capsys):
    train_rlao.main(common(traj, tiny_dir, tmp_path, "dry", "--dry-run", "--dtype", "bfloat16"))
    out = capsys.readouterr().out
    assert "adamw_kahan" in out and "Kahan compensation (1 buffer)" in out
    train_rlao.main(common(traj, tiny_dir, tmp_path, "dry", "--dry-run"))  # float32: plain AdamW, no buffer
    out = capsys.readouterr().out
    assert "float32, adamw," in out and "Kahan" not in out


# ---------------------------------------------------------------- inputs (issue 13.2, 11.7)
def test_torn_last_line_is_skipped_without_touching_the_file(tmp_path, traj, tiny_dir, capsys):
    p = tmp_path / "torn.jsonl"
    good = traj.read_text()
    p.write_text(good + good.splitlines()[0][:57])  # a killed collect.py: half a line, no newline
    before = p.read_bytes()
    with pytest.warns(UserWarning, match=r"torn.jsonl:13: torn last line"):
        train_rlao.main(common(p, tiny_dir, tmp_path, "torn", "--dry-run"))
    assert "samples: 24 |" in capsys.readouterr().out and p.read_bytes() == before
    lines = good.splitlines(keepends=True)
    p.write_text(lines[0] + '{"run": garbage\n' + "".join(lines[1:]))  # corruption, not a torn tail: refuse
    with pytest.raises(ValueError, match=r"torn.jsonl:2: not a JSON line"):
        train_rlao.main(common(p, tiny_dir, tmp_path, "torn", "--dry-run"))


@pytest.mark.parametrize("act", ["\n" + action(1), "  " + action(2), "\n\n```python\ndef solver(agent, task):\n    pass\n```"])
def test_action_starting_with_whitespace_keeps_its_own_tokens(tok_dir, act):
    tok = AutoTokenizer.from_pretrained(tok_dir)
    state = turn("gsm8k", 0, 0, "Design a solver.", [], [])["state"]
    ids, labels = train_rlao.tokenize_sample(tok, state, act)
    first = next(k for k, l in enumerate(labels) if l != -100)
    assert tok.decode(ids[:first]) == tok.apply_chat_template(state, add_generation_prompt=True, tokenize=False)
    assert tok.decode([i for i, l in zip(ids, labels) if l != -100]) == act + "<|im_end|>"
    records = [dict(messages=state, action=a, reward=1.0, benchmark="gsm8k", state_key="k", cand=0) for a in (act, action(3))]
    samples, dropped = train_rlao.build_samples(records, tok, tau=0.4, max_len=512, loss_on_all_tokens=False)
    assert len(samples) == 2 and not dropped


def test_repaired_candidate_trains_on_the_messages_that_produced_it(tmp_path, tok_dir):
    tok = AutoTokenizer.from_pretrained(tok_dir)
    row = turn("gsm8k", 0, 0, "Improve it.", [action(1), action(2)], [1.0, 0.5])
    first_try = "def solver(agent, task):\n    return 1 / 0"
    repair = prompts.build_repair_prompt(first_try, "ZeroDivisionError: division by zero", "")
    row["candidates"][0]["messages"] = row["state"] + [{"role": "assistant", "content": f"```python\n{first_try}\n```"},
                                                      {"role": "user", "content": repair}]
    p = tmp_path / "repaired.jsonl"
    p.write_text(json.dumps(row) + "\n")
    records, _ = train_rlao.read_candidates([str(p)], min_reward=0, turns=[], benchmarks=[])
    samples, _ = train_rlao.build_samples(records, tok, tau=0.4, max_len=2048, loss_on_all_tokens=False)
    for s, act, has_repair in zip(samples, [action(1), action(2)], [True, False]):  # the second: no messages, the state
        first = next(k for k, l in enumerate(s["labels"]) if l != -100)
        prompt = tok.decode(s["input_ids"][:first])
        assert (repair.strip() in prompt and "1 / 0" in prompt) == has_repair and "Improve it." in prompt
        assert tok.decode([i for i, l in zip(s["input_ids"], s["labels"]) if l != -100]) == act + "<|im_end|>"


# ---------------------------------------------------------------- resume (issue 13.2)
def test_resume_restores_the_kahan_state_and_applies_a_changed_lr(tmp_path, traj, tiny_dir):
    args = ["--dtype", "bfloat16", "--batch-size", "3", "--max-steps", "3", "--save-every", "2", "--num-checkpoints-kept", "2",
            "--warmup-frac", "0"]
    run_dir = train_rlao.main(common(traj, tiny_dir, tmp_path, "lr", *args, "--lr", "1e-3"))
    lrs = lambda: [json.loads(l)["train/lr"] for l in (run_dir / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    uninterrupted, before = load_file(run_dir / "model.safetensors"), lrs()
    # from step 2 again: the same weights, so the moments, Kahan buffers and step counts came back exactly
    shutil.rmtree(run_dir / "step_000003")
    train_rlao.main(common(traj, tiny_dir, tmp_path, "lr", *args, "--lr", "1e-3", "--resume"))
    resumed = load_file(run_dir / "model.safetensors")
    assert all(torch.equal(uninterrupted[k], resumed[k]) for k in uninterrupted)
    # and a changed --lr is applied, as the warning says
    shutil.rmtree(run_dir / "step_000003")
    with pytest.warns(UserWarning, match="--lr: checkpoint has 0.001, command line has 0.002; the command line wins"):
        train_rlao.main(common(traj, tiny_dir, tmp_path, "lr", *args, "--lr", "2e-3", "--resume"))
    assert lrs()[:2] == before[:2] and lrs()[2:] == pytest.approx([2 * x for x in before[2:]])


# ---------------------------------------------------------------- several processes: FSDP2 over gloo (issue 13.3)
def torchrun(args, num_procs=2):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(num_procs),
                           str(ROOT / "train_rlao.py"), "--", *args], cwd=ROOT, text=True, capture_output=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_two_processes_train_the_same_model_as_one_and_resume(tmp_path, traj, tiny_dir):
    flags = ["--max-steps", "3", "--lr", "1e-3", "--max-grad-norm", "0"]
    one = train_rlao.main(common(traj, tiny_dir, tmp_path, "one", *flags, "--batch-size", "4", "--save-every", "0"))
    # the same global batch (2 x 2), stepped inside backward on each process's shards, checkpointed at step 2
    two_args = common(traj, tiny_dir, tmp_path, "two", *flags, "--batch-size", "2", "--save-every", "2",
                      "--num-checkpoints-kept", "2", "--optimizer-in-backward")
    r = torchrun(two_args)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = load_file(one / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5)
    rows = lambda run: [json.loads(l) for l in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert [r["step"] for r in rows("two")] == [1, 2, 3]  # written once, by rank 0
    assert [r["train/loss"] for r in rows("two")] == pytest.approx([r["train/loss"] for r in rows("one")], rel=1e-5)
    assert len(list((tmp_path / "two" / "step_000002" / "optimizer").glob("*.distcp"))) == 2  # one shard per process
    # resume the 2-process run from its step-2 checkpoint: the same final weights and metrics
    strip = lambda rs: [{k: v for k, v in r.items() if not k.startswith("sys/")} for r in rs]  # noqa: E731
    uninterrupted = strip(rows("two"))
    shutil.rmtree(tmp_path / "two" / "step_000003")
    r = torchrun(two_args + ["--resume"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from" in r.stdout and r.stdout.count("step 3/3 |") == 1
    c = load_file(tmp_path / "two" / "model.safetensors")
    assert all(torch.equal(b[k], c[k]) for k in b)
    assert strip(rows("two")) == uninterrupted


def test_sharded_kahan_adamw_uses_optimis_per_tensor_loop():
    """Under FSDP2 the Kahan AdamW is pinned to optimi's per-tensor loop: its Triton kernel would index a
    DTensor shard by the global numel (review item A)."""
    p = [torch.nn.Parameter(torch.zeros(4, dtype=torch.bfloat16))]
    kw = dict(lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0)
    sharded = train_rlao.make_optimizer(p, "adamw_kahan", **kw, sharded=True)
    assert sharded.defaults["triton"] is False and sharded.defaults["foreach"] is False
    assert sharded.defaults["kahan_sum"] is True
    one = train_rlao.make_optimizer(p, "adamw_kahan", **kw)  # one process: optimi picks its fastest kernel
    assert one.defaults["triton"] is None and one.defaults["foreach"] is None



def test_kahan_adamw_on_dtensor_shards_steps_like_on_plain_tensors():
    """The sharded optimizer's loop runs on DTensor parameters (as FSDP2 leaves them) and gives the weights of
    the same optimizer on plain tensors. A one-process gloo group: DTensor needs one, torchrun is not needed."""
    import torch.distributed as dist
    from torch.distributed.tensor import Shard, distribute_tensor, init_device_mesh
    torch.manual_seed(0)
    w0, grads = torch.randn(8, 4, dtype=torch.bfloat16), [torch.randn(8, 4, dtype=torch.bfloat16) for _ in range(3)]
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        result = []
        for make in (lambda t: t.clone(), lambda t: distribute_tensor(t.clone(), mesh, [Shard(0)])):
            p = torch.nn.Parameter(make(w0))
            opt = train_rlao.make_optimizer([p], "adamw_kahan", lr=1e-2, betas=(0.9, 0.95), weight_decay=0.01, sharded=True)
            for g in grads:
                p.grad = make(g)
                opt.step()
            result.append(p.detach().full_tensor() if hasattr(p, "full_tensor") else p.detach())
    finally:
        dist.destroy_process_group()
    assert not torch.equal(result[0], w0) and torch.equal(result[0], result[1])


def test_allow_no_samples_never_deletes_recorded_work(tmp_path, traj, tiny_dir):
    """--allow-no-samples with trajectories that give no sample (review item B): over a trained run (its step
    checkpoint, --resume) it stops and leaves everything; into an untrained folder it keeps what is there."""
    empty = tmp_path / "trajectories.jsonl"
    shutil.copy(traj, empty)
    run_dir = train_rlao.main(common(empty, tiny_dir, tmp_path, "trained", "--max-steps", "1", "--batch-size", "2"))
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    weights = (run_dir / "model.safetensors").read_bytes()
    # the same file (--resume keeps the checkpoint's --trajectories), now without an ok candidate
    empty.write_text(json.dumps(turn("gsm8k", 0, 0, "Task.", ["broken"], [None])) + "\n")
    with pytest.raises(SystemExit, match=r"holds trained work \(step_000001, model.safetensors\).*nothing deleted"):
        train_rlao.main(common(empty, tiny_dir, tmp_path, "trained", "--allow-no-samples", "--resume"))
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == before
    assert (run_dir / "model.safetensors").read_bytes() == weights and not (run_dir / "NOT_TRAINED.txt").exists()
    # a folder with a record but no trained model (a run stopped before its first checkpoint): exported beside it
    (tmp_path / "early").mkdir()
    (tmp_path / "early" / "metrics.jsonl").write_text('{"step": 1}\n')
    out = train_rlao.main(common(empty, tiny_dir, tmp_path, "early", "--allow-no-samples"))
    assert (out / "metrics.jsonl").read_text() == '{"step": 1}\n' and (out / "NOT_TRAINED.txt").exists()
    assert (out / "model.safetensors").exists() and not (out / "final").exists()
    # trained later into that folder (samples now): the model is replaced, and the marker goes with it
    train_rlao.main(common(traj, tiny_dir, tmp_path, "early", "--max-steps", "1", "--batch-size", "2"))
    assert not (out / "NOT_TRAINED.txt").exists() and (out / "step_000001").exists()


def test_resume_after_a_torn_metrics_line(tmp_path, traj, tiny_dir):
    """A run killed while writing metrics.jsonl leaves half a line: --resume drops it and goes on (the class of
    review item C: every log is read back with the one torn-tail reader)."""
    args = ["--max-steps", "2", "--batch-size", "2", "--save-every", "1", "--num-checkpoints-kept", "2"]
    run_dir = train_rlao.main(common(traj, tiny_dir, tmp_path, "torn", *args))
    shutil.rmtree(run_dir / "step_000002")
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    (run_dir / "metrics.jsonl").write_text(lines[0] + "\n" + lines[1][:20])  # step 2's line, torn
    with pytest.warns(UserWarning, match="torn last line"):
        train_rlao.main(common(traj, tiny_dir, tmp_path, "torn", *args, "--resume"))
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and rows[0] == json.loads(lines[0])


def test_a_killed_export_never_passes_for_a_complete_model(tmp_path, tiny_dir, monkeypatch):
    """The export moves the model file by file into the run folder and make train skips a folder with
    config.json: killed midway, the folder passed for complete, with a partial or an older model. Now
    config.json moves last, final/ stays until the end, and make train and evaluate.py both read final/ as
    an export cut off (review of session 3)."""
    import evaluate
    model, tok = AutoModelForCausalLM.from_pretrained(tiny_dir), AutoTokenizer.from_pretrained(tiny_dir)
    run_dir, moved, real = tmp_path / "run", [], os.replace
    monkeypatch.setattr(train_rlao.os, "replace", lambda a, b: (moved.append(Path(a).name), real(a, b)))
    train_rlao.export_model(run_dir, model, tok)
    assert moved[-1] == "config.json" and len(moved) >= 3 and not (run_dir / "final").exists()
    (run_dir / "final").mkdir()  # as a kill leaves it
    with pytest.raises(SystemExit, match="cut off.*--resume"):
        evaluate.check_args(evaluate.Args(meta_model=str(run_dir)))
    shutil.copytree(run_dir, tmp_path / "checkpoints" / "r")
    make = subprocess.run(["make", "-f", str(ROOT / "Makefile"), "train", "RUN=r", "PY=echo", "STAMP="],
                          cwd=tmp_path, capture_output=True, text=True)  # PY=echo: the command it would run
    assert "train_rlao.py --run r" in make.stdout and "skipped" not in make.stdout, make.stdout + make.stderr


@pytest.mark.parametrize("n,batch,accum,epochs", [(5, 1, 2, 1), (3, 1, 4, 2), (13, 2, 3, 3), (8, 2, 2, 1)])
def test_the_plan_trains_every_sample_once_per_epoch(n, batch, accum, epochs):
    """The plan cut each epoch into whole steps of --grad-accum-steps micro-batches and dropped the rest:
    5 samples with accumulation 2 never trained one of them (review of session 3)."""
    steps = train_rlao.plan_batches(list(range(10, 10 + n)), batch_size=batch, grad_accum_steps=accum,
                                    num_buckets_batches=2, num_epochs=epochs, seed=0)
    seen = sorted(i for step in steps for mb in step for i in mb)
    assert seen == sorted(list(range(n)) * epochs)
    assert all(1 <= len(step) <= accum and all(1 <= len(mb) <= batch for mb in step) for step in steps)

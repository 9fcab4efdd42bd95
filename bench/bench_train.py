"""Throughput, memory and bf16 numerics of train_rlao.py's training step.

CPU mode (default), on one small random Qwen2 model (weights drawn like a 7B's, std 0.02) and the same
synthetic trajectories:
1. bf16 numerics: --opt-steps AdamW steps at lr 1e-5 on the same batches with train_rlao's loss, in fp32,
   bf16 + Kahan-compensated AdamW (optimi, the default), plain bf16 AdamW, and bf16 + stochastic rounding
   (torchao, only when installed: not a dependency): loss after the steps (evaluated in fp32), fraction of weights that changed,
   distance of the accumulated weight change from fp32's, tokens/s.
2. train_rlao.py (a subprocess) vs a reference built on transformers' Trainer with the same weighted loss
   (compute_loss overridden; another subprocess): tokens/s over the timed steps (the first is skipped), peak RSS.
3. train_rlao.py in 1 process vs 2 processes (torchrun, FSDP2 over gloo) with the same global batch: tokens/s.
    python bench/bench_train.py                 # 8 minutes on 2 cores shared with other jobs (load ~12)
GPU mode: a Qwen2.5-7B-shaped model from its config (random bf16 weights, nothing downloaded), full
fine-tuning at 8,192 tokens with train_rlao's loss, its default bf16 optimizer (Kahan-compensated AdamW),
optimizer-in-backward and activation checkpointing. Prints peak GPU memory, tokens/s, model-FLOPs
utilisation (6 * params * tokens/s + attention, over the card's dense bf16 peak) and the time one epoch of
1,000 samples of 6k tokens would take.
    python bench/bench_train.py --gpu --num-steps 6
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM, Trainer, TrainerCallback, TrainingArguments

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import executor  # noqa: E402
import train_rlao  # noqa: E402

QWEN25_7B = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                 num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768, rope_theta=1e6,
                 tie_word_embeddings=False)
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense, SXM


def write_data(d: Path, num_states: int) -> Path:
    """Synthetic trajectories in the contract format: 3 candidates per state, rewards 1 / 0.5 / 0."""
    rows = []
    for k in range(num_states):
        state = [{"role": "system", "content": "You design agent workflows. " * 8},
                 {"role": "user", "content": f"Benchmark {k}: past workflows and feedback. " * 12}]
        cands = [{"action": f"Analysis {k}.{j}: use {j + 2} samples and vote.\n```python\n" + "def solver(agent, task):\n"
                  + f"    r = agent.call_llm(messages=[{{'role': 'user', 'content': task}}], num_of_response={j + 2})\n" * (4 + j)
                  + "    return {'answer': r[0]}\n```", "code": "", "status": "ok", "error": None, "repairs": 0,
                  "valid_acc": 0.5, "reward": [1.0, 0.5, 0.0][j], "feedback": "", "calls": 1, "cost_usd": 0.0}
                 for j in range(3)]
        rows.append({"run": "bench", "benchmark": "gsm8k", "episode": k, "turn": 0, "seed": 0, "meta_model": "m",
                     "executor_model": "e", "state": state, "candidates": cands, "best": 0})
    path = d / "trajectories.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_model(d: Path, hidden: int, layers: int, name: str = "model") -> Path:
    tok = AutoTokenizer.from_pretrained(executor.embedded_model_dir())
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=layers,
                      num_attention_heads=hidden // 64, num_key_value_heads=max(1, hidden // 256),
                      max_position_embeddings=4096, tie_word_embeddings=True)
    Qwen2ForCausalLM(cfg).save_pretrained(d / name)
    tok.save_pretrained(d / name)
    return d / name


def run_trainer_reference(a) -> None:
    """Child process: the same samples, batches of the same size, the same weighted loss, on HF Trainer."""
    tok = AutoTokenizer.from_pretrained(a.model)
    records, _ = train_rlao.read_candidates([a.data], min_reward=float("-inf"), turns=[], benchmarks=[])
    samples, _ = train_rlao.build_samples(records, tok, tau=0.4, max_len=4096, loss_on_all_tokens=False)
    mean_w = sum(s["weight"] for s in samples) / len(samples)
    for s in samples:
        s["weight"] /= mean_w

    class WeightedTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits[:, :-1]
            labels = inputs["labels"][:, 1:]
            nll = F.cross_entropy(logits.float().transpose(1, 2), labels, reduction="none", ignore_index=-100)
            mask = (labels != -100).float()
            per_sample = (nll * mask).sum(1) / mask.sum(1)
            loss = (inputs["weights"] * per_sample).mean()
            return (loss, None) if return_outputs else loss

    class Timer(TrainerCallback):
        def __init__(self):
            self.times, self.t0 = [], 0.0

        def on_step_begin(self, *args, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, *args, **kw):
            self.times.append(time.perf_counter() - self.t0)

    timer = Timer()
    targs = TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=a.batch_size, num_train_epochs=1,
                              max_steps=a.num_steps, learning_rate=1e-4, lr_scheduler_type="cosine", warmup_steps=0,
                              adam_beta2=0.95, max_grad_norm=0.0, gradient_checkpointing=True,
                              gradient_checkpointing_kwargs={"use_reentrant": False}, save_strategy="no", report_to=[],
                              logging_steps=1000, use_cpu=True, dataloader_num_workers=0, remove_unused_columns=False,
                              seed=0, disable_tqdm=True)
    model = Qwen2ForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    collator = lambda b: train_rlao.collate(b, tok.pad_token_id, "cpu")  # noqa: E731
    WeightedTrainer(model=model, args=targs, train_dataset=samples, data_collator=collator, callbacks=[timer]).train()
    # tokens per step: Trainer's batches are random, so use the mean sample length (lengths vary by < 10% here)
    num_tokens = a.num_steps * a.batch_size * sum(len(s["input_ids"]) for s in samples) / len(samples)
    print(json.dumps({"timed_s": sum(timer.times[1:]), "step_s": timer.times, "tokens": num_tokens,
                      "mean_tokens_per_step": num_tokens / a.num_steps,
                      "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}))


def optimizer_run(model_dir: Path, samples, batches, dtype, make_optimizer) -> dict:
    """Train a fresh copy of the model on `batches` (lists of samples) with train_rlao's loss; the loss of the
    result over all samples is evaluated in fp32, so only the weights differ between runs."""
    model = Qwen2ForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    start = [p.detach().to(dtype).float().clone() for p in model.parameters()]
    model.to(dtype).train()
    opt = make_optimizer(list(model.parameters()))
    t0, num_tokens = time.perf_counter(), 0
    for mb in batches:
        b = train_rlao.collate(mb, 0, "cpu")
        loss, _ = train_rlao.rwr_loss(model, b["input_ids"], b["attention_mask"], b["labels"], b["weights"], len(mb), 1024)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        num_tokens += int(b["attention_mask"].sum())
    tps = num_tokens / (time.perf_counter() - t0)
    change = torch.cat([(p.detach().float() - p0).flatten() for p, p0 in zip(model.parameters(), start)])
    model.float().eval()
    with torch.no_grad():
        b = train_rlao.collate(samples, 0, "cpu")
        _, nll = train_rlao.rwr_loss(model, b["input_ids"], b["attention_mask"], b["labels"], b["weights"], 1, 1024)
    return {"loss": nll.mean().item(), "change": change, "tokens_per_s": tps}


def bench_optimizers(a, d: Path) -> None:
    # a 512-token vocabulary and random tokens (loss on the second half of each sample): bf16 matmuls over a
    # 49k vocabulary crawl on a CPU without bf16 units, and the numerics do not depend on the vocabulary
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, tie_word_embeddings=True)
    model_dir = d / "numerics"
    Qwen2ForCausalLM(cfg).save_pretrained(model_dir)
    ids = torch.randint(0, 512, (16, 64)).tolist()
    samples = [dict(input_ids=x, labels=[-100] * 32 + x[32:], weight=1.0) for x in ids]
    batches = [samples[(i * a.batch_size) % len(samples):][:a.batch_size] for i in range(a.opt_steps)]
    kw = dict(lr=1e-5, betas=(0.9, 0.95), weight_decay=0.0)
    runs = {"fp32, torch AdamW": (torch.float32, lambda ps: train_rlao.make_optimizer(ps, "adamw", **kw)),
            "bf16, Kahan AdamW (optimi, default)": (torch.bfloat16, lambda ps: train_rlao.make_optimizer(ps, "adamw_kahan", **kw)),
            "bf16, plain torch AdamW": (torch.bfloat16, lambda ps: train_rlao.make_optimizer(ps, "adamw", **kw))}
    try:  # the measured alternative; not a dependency of train_rlao.py
        from torchao.optim import _AdamW
        runs["bf16, stochastic rounding (torchao)"] = (torch.bfloat16, lambda ps: _AdamW(ps, bf16_stochastic_round=True, eps=1e-8, **kw))
    except ImportError:
        print("bf16 + stochastic rounding: torchao not installed, row skipped (pip install torchao to add it)")
    torch.manual_seed(0)
    init = optimizer_run(model_dir, samples, [], torch.float32, lambda ps: torch.optim.SGD(ps, lr=0.0))["loss"]
    print(f"Qwen2 hidden 64, 2 layers, vocab 512 | {a.opt_steps} steps x {a.batch_size} samples at lr 1e-5 | loss before "
          f"{init:.5f} (every loss evaluated in fp32 on all {len(samples)} samples)", flush=True)
    ref = None
    for name, (dt, make) in runs.items():  # fp32 first: the reference of the others
        r = optimizer_run(model_dir, samples, batches, dt, make)
        ref = ref or r
        dev = ((r["change"] - ref["change"]).norm() / ref["change"].norm()).item()
        print(f"{name:38s}: loss {r['loss']:.5f} (drop {(init - r['loss']) / (init - ref['loss']):6.1%} of fp32's) | "
              f"weights changed {(r['change'] != 0).float().mean():6.1%} | |dW - dW_fp32| / |dW_fp32| {dev:.3f} | "
              f"{r['tokens_per_s']:6.0f} tokens/s", flush=True)


def mean_tokens_per_s(run_dir: Path) -> float:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][1:]  # first step not timed
    return sum(r["sys/tokens_per_s"] * r["sys/step_s"] for r in rows) / sum(r["sys/step_s"] for r in rows)


def bench_cpu(a) -> None:
    d = Path(tempfile.mkdtemp(prefix="bench_train_"))
    data, model = write_data(d, a.num_states), write_model(d, a.hidden, a.layers)
    torch.set_num_threads(a.num_threads)
    bench_optimizers(a, d)
    # one torch thread per run: on a shared 2-core machine, spinning OpenMP threads make timings meaningless
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(a.num_threads)}
    # ours: length-grouped batches, loss on action tokens with chunked logits, plain AdamW on CPU
    flags = ["--trajectories", str(data), "--model", str(model), "--out-dir", str(d), "--dtype", "float32", "--device", "cpu",
             "--max-steps", str(a.num_steps), "--num-epochs", "1", "--save-every", "0", "--lr", "1e-4"]
    cmd = [sys.executable, str(ROOT / "train_rlao.py"), *flags, "--run", "ours", "--batch-size", str(a.batch_size)]
    subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
    rows = [json.loads(line) for line in (d / "ours" / "metrics.jsonl").read_text().splitlines()][1:]
    ours = {"tokens_per_s": mean_tokens_per_s(d / "ours"), "peak_rss_gib": max(r["sys/peak_mem_gib"] for r in rows)}
    out = subprocess.run([sys.executable, __file__, "--trainer-child", "--data", str(data), "--model", str(model),
                          "--batch-size", str(a.batch_size), "--num-steps", str(a.num_steps)],
                         check=True, env=env, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    ref = json.loads(out)
    ref_tps = ref["mean_tokens_per_step"] * (a.num_steps - 1) / ref["timed_s"]
    print(f"model: Qwen2 hidden {a.hidden}, {a.layers} layers, vocab 49152, float32 | {a.num_states * 3} samples, "
          f"batch {a.batch_size}, {a.num_steps} steps (first not timed) | torch threads {a.num_threads} | activation checkpointing on")
    print(f"train_rlao.py : {ours['tokens_per_s']:8.0f} tokens/s | peak RSS {ours['peak_rss_gib']:.2f} GiB")
    print(f"HF Trainer    : {ref_tps:8.0f} tokens/s | peak RSS {ref['peak_rss_gib']:.2f} GiB")
    print(f"ratio (ours / Trainer): speed x{ours['tokens_per_s'] / ref_tps:.2f} | memory x{ours['peak_rss_gib'] / ref['peak_rss_gib']:.2f}")
    # the same global batch over 2 processes (FSDP2, gloo): each takes half of every micro-batch
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                    str(ROOT / "train_rlao.py"), "--", *flags, "--run", "two", "--batch-size", str(a.batch_size // 2)],
                   check=True, env=env, capture_output=True, text=True)
    two = mean_tokens_per_s(d / "two")
    print(f"train_rlao.py, 1 process : {ours['tokens_per_s']:8.0f} tokens/s (batch {a.batch_size})")
    print(f"train_rlao.py, 2 processes (FSDP2, gloo): {two:8.0f} tokens/s (batch {a.batch_size // 2} each) | x{two / ours['tokens_per_s']:.2f}")


def bench_gpu(a) -> None:
    assert torch.cuda.is_available(), "--gpu needs CUDA"
    dev = torch.device("cuda")
    cfg = Qwen2Config(**QWEN25_7B)
    torch.manual_seed(0)
    with dev:
        model = Qwen2ForCausalLM._from_config(cfg, dtype=torch.bfloat16, attn_implementation="sdpa")
    model.activation_checkpointing_enable({"use_reentrant": False})  # transformers >= 5.x name
    model.train()
    num_params = sum(p.numel() for p in model.parameters())
    grad_sq = torch.zeros((), device=dev)
    make = lambda ps: train_rlao.make_optimizer(ps, "adamw_kahan", lr=1e-5, betas=(0.9, 0.95), weight_decay=0.0)  # noqa: E731
    train_rlao.attach_optimizer_in_backward(model, make, grad_sq)
    plan = train_rlao.memory_plan(cfg, num_params, max(p.numel() for p in model.parameters()), tokens=a.seq_len,
                                  bytes_per_el=2, kahan=True, optimizer_in_backward=True, checkpointing=True,
                                  logits_chunk_tokens=1024)
    print("memory plan: " + " | ".join(f"{k} {v:.1f} GiB" for k, v in plan.items()))
    ids = torch.randint(0, cfg.vocab_size, (1, a.seq_len), device=dev)
    labels = ids.clone()
    labels[:, : a.seq_len - a.action_len] = -100  # loss on the last action_len tokens, as for a long state
    mask, w = torch.ones_like(ids), torch.ones(1, device=dev)
    times = []
    torch.cuda.reset_peak_memory_stats()
    for step in range(a.num_steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss, _ = train_rlao.rwr_loss(model, ids, mask, labels, w, 1, 1024)
        loss.backward()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        print(f"step {step + 1} | loss {loss.item():.3f} | {times[-1]:.2f}s")
    name = torch.cuda.get_device_name()
    tps = a.seq_len / (sum(times[1:]) / (len(times) - 1))
    L, h = cfg.num_hidden_layers, cfg.hidden_size
    flops_per_token = 6 * num_params + 6 * L * h * a.seq_len  # causal attention: half of 12 * L * h * T
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), float("nan"))
    print(f"{name} | {num_params / 1e9:.2f}B params | {a.seq_len} tokens | peak memory "
          f"{torch.cuda.max_memory_allocated() / 2 ** 30:.1f} GiB allocated, {torch.cuda.max_memory_reserved() / 2 ** 30:.1f} GiB "
          f"reserved | {tps:.0f} tokens/s | MFU {flops_per_token * tps / (peak * 1e12):.1%} (of {peak:.0f} TFLOP/s bf16)")
    # the paper reports about 1 GPU hour of training; one epoch of 1,000 samples of 6k tokens at this rate:
    print(f"one epoch of 1,000 samples x 6,144 tokens: {1000 * 6144 / tps / 3600:.2f} h at {tps:.0f} tokens/s "
          f"(measured at {a.seq_len} tokens; shorter samples run a little faster)")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpu", action="store_true", help="the 7B-shaped GPU benchmark")
    p.add_argument("--num-threads", type=int, default=1, help="CPU: torch threads per run")
    p.add_argument("--num-steps", type=int, default=6, help="steps per run (the first is not timed)")
    p.add_argument("--opt-steps", type=int, default=30, help="CPU: steps of the bf16-numerics comparison")
    p.add_argument("--batch-size", type=int, default=4, help="CPU: samples per step")
    p.add_argument("--num-states", type=int, default=12, help="CPU: states in the synthetic data (3 samples each)")
    p.add_argument("--hidden", type=int, default=256, help="CPU: hidden size of the small Qwen2")
    p.add_argument("--layers", type=int, default=4, help="CPU: layers of the small Qwen2")
    p.add_argument("--seq-len", type=int, default=8192, help="GPU: tokens per sample")
    p.add_argument("--action-len", type=int, default=2048, help="GPU: loss tokens per sample")
    p.add_argument("--trainer-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    a = p.parse_args()
    run_trainer_reference(a) if a.trainer_child else bench_gpu(a) if a.gpu else bench_cpu(a)

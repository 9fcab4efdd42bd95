"""Stage 2 of W4S: train the weak meta-agent on its own trajectories by reward-weighted regression (RLAO).

Reads  runs/<run>/trajectories.jsonl (one or more; written by collect.py, format in DESIGN.md).
Writes checkpoints/<run>/: train_config.json, metrics.jsonl, step_<N>/ (a Hugging Face model folder plus
       train_state.pt, written atomically every --save-every steps) and, at the end, the final model at the
       top of the folder (config, safetensors, tokenizer, generation config): `from_pretrained` and
       `vllm serve checkpoints/<run>` load it as is.

Paper: W4S section 3.3 (RLAO, reward-weighted regression). Each `ok` candidate of a turn is one sample:
prompt = the state's chat messages, target = the action (analysis + workflow code), weight = exp(r / tau),
tau = 0.4. The loss is the weighted negative log-likelihood of the action given the state.

Deliberate simplifications and choices:
1. Loss on the action tokens only (plus the template's end-of-turn token). The official trainer's collator
   rebuilt the labels and trained on every token, prompt included; `--loss-on-all-tokens` reproduces that
   for ablation and is off by default.
2. Each sample's NLL is the mean over its own action tokens (long and short actions count alike), times its
   weight, averaged over the samples of the step. Weights are divided by their mean over the training set
   (a constant, so the optimum is the paper's RWR and an SFT-sized lr still fits); `--no-normalize-weights`
   uses raw exp(r / tau).
3. Pure bf16 training: weights, gradients and AdamW moments in bf16, no fp32 master copy (see the memory
   plan below). Adam's update is ~lr per element; a bf16 weight w moves only if the update exceeds half
   its spacing, |w| * 2^-9, so at lr 1e-5 weights with |w| > ~5e-3 skip most single-step updates and the
   moments keep ~3 significant digits. Fixes that do not fit 80 GB (fp32 master weights: +28 GiB) or need
   another library (stochastic rounding) are not used. `--dtype float32` trains in full precision.
4. With `--optimizer-in-backward` (default on CUDA) each parameter has its own AdamW, stepped and its
   gradient freed in a post-accumulate-grad hook, so full gradients never coexist. That rules out gradient
   accumulation and clipping by global norm (the norm is known only after every parameter has moved); the
   grad norm is still logged.
5. Samples longer than --max-len are dropped and counted, never truncated. No packing, no KL term, no
   reference model; models whose logits are scaled or soft-capped (Gemma 2, Cohere) are rejected.

CPU smoke run (tiny model, minutes):
    python train_rlao.py --trajectories runs/smoke/trajectories.jsonl --model embedded --run smoke \
        --dtype float32 --max-len 2048 --num-epochs 1 --max-steps 4 --save-every 2
Full run (one 80 GB GPU, Qwen2.5-Coder-7B-Instruct, 8,192 tokens):
    python train_rlao.py --trajectories runs/w4s/trajectories.jsonl --run w4s --max-len 8192 \
        --batch-size 1 --lr 1e-5 --num-epochs 3 --save-every 100
Check the data and the memory plan first with `--dry-run`.
"""
import dataclasses
import importlib.util
import json
import math
import os
import random
import resource
import shutil
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from tqdm import tqdm
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

import executor


@dataclass
class Args:
    """train_rlao.py: reward-weighted regression of the meta-agent on its trajectories (stage 2 of W4S)."""
    trajectories: list[str] = field(default_factory=lambda: ["runs/w4s/trajectories.jsonl"], metadata={"help": "one or more trajectories.jsonl files"})
    model: str = field(default="Qwen/Qwen2.5-Coder-7B-Instruct", metadata={"help": "local HF folder or Hub id of the meta-agent; 'embedded' = the embedded SmolLM2-135M-Instruct"})
    run: str = field(default="w4s", metadata={"help": "run name: checkpoints go to <out-dir>/<run>/"})
    out_dir: str = field(default="checkpoints", metadata={"help": "parent folder of the run folders"})
    seed: int = field(default=0, metadata={"help": "seed for data order, held-out split and torch"})
    tau: float = field(default=0.4, metadata={"help": "temperature of the sample weight exp(reward / tau)"})
    normalize_weights: bool = field(default=True, metadata={"help": "divide weights by their training-set mean (a constant)"})
    min_reward: float = field(default=float("-inf"), metadata={"help": "drop candidates with a lower reward"})
    turns: list[int] = field(default_factory=list, metadata={"help": "turns to keep (default: all)"})
    benchmarks: list[str] = field(default_factory=list, metadata={"help": "benchmarks to keep (default: all)"})
    max_len: int = field(default=8192, metadata={"help": "max tokens per sample; longer samples are dropped and counted"})
    loss_on_all_tokens: bool = field(default=False, metadata={"help": "ABLATION ONLY: official-trainer behaviour, loss on every token, prompt included"})
    eval_fraction: float = field(default=0.0, metadata={"help": "fraction of states held out for the weighted eval loss"})
    dry_run: bool = field(default=False, metadata={"help": "print the sample statistics and the memory plan, then exit"})
    allow_no_samples: bool = field(default=False, metadata={"help": "with no training sample, export the base model unchanged instead of failing (CPU recipes)"})
    dtype: Literal["bfloat16", "float32"] = field(default="bfloat16", metadata={"help": "weights, grads and optimizer state"})
    device: Literal["auto", "cuda", "cpu"] = field(default="auto", metadata={"help": "auto = cuda when present"})
    enable_activation_checkpointing: bool = field(default=True, metadata={"help": "recompute each layer in backward"})
    optimizer_in_backward: bool | None = field(default=None, metadata={"help": "step each parameter in its grad hook (default: on for CUDA)"})
    batch_size: int = field(default=1, metadata={"help": "samples per micro-batch"})
    grad_accum_steps: int = field(default=1, metadata={"help": "micro-batches per optimizer step (needs optimizer-in-backward off)"})
    num_epochs: int = field(default=3, metadata={"help": "passes over the training samples"})
    max_steps: int = field(default=0, metadata={"help": "cap on optimizer steps, schedule included (0 = epochs decide)"})
    lr: float = field(default=1e-5, metadata={"help": "peak learning rate"})
    min_lr_ratio: float = field(default=0.1, metadata={"help": "cosine decays to lr * this"})
    warmup_frac: float = field(default=0.03, metadata={"help": "fraction of steps of linear warmup"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    beta1: float = field(default=0.9, metadata={"help": "AdamW beta1"})
    beta2: float = field(default=0.95, metadata={"help": "AdamW beta2"})
    max_grad_norm: float = field(default=0.0, metadata={"help": "clip the global grad norm (0 = off; needs optimizer-in-backward off)"})
    num_buckets_batches: int = field(default=32, metadata={"help": "length grouping: sort within shuffled buckets of this many micro-batches"})
    logits_chunk_tokens: int = field(default=1024, metadata={"help": "tokens per chunk of the output projection + loss (bounds logits memory)"})
    eval_every: int = field(default=0, metadata={"help": "held-out eval every N steps (0 = only at the end)"})
    save_every: int = field(default=200, metadata={"help": "checkpoint every N steps (0 = only at the end)"})
    num_checkpoints_kept: int = field(default=1, metadata={"help": "step_<N>/ folders kept on disk"})
    resume: bool = field(default=False, metadata={"help": "continue from the newest step_<N>/ of this run"})


# Values that fix the data order, the schedule and the model: on --resume the checkpoint's value wins.
KEPT_ON_RESUME = ("trajectories", "model", "seed", "tau", "normalize_weights", "min_reward", "turns", "benchmarks",
                  "max_len", "loss_on_all_tokens", "eval_fraction", "dtype", "batch_size", "grad_accum_steps",
                  "num_epochs", "max_steps", "num_buckets_batches", "optimizer_in_backward")


def read_candidates(paths: list[str], *, min_reward: float, turns: list[int], benchmarks: list[str]):
    """One record per `ok` candidate that passes the filters, plus counts of what was skipped."""
    records, skipped = [], Counter()
    for path in paths:
        for line in open(path):
            if not line.strip():
                continue
            turn = json.loads(line)
            for i, cand in enumerate(turn["candidates"]):
                if cand.get("status") != "ok":
                    skipped["not ok"] += 1
                elif benchmarks and turn["benchmark"] not in benchmarks:
                    skipped["benchmark filter"] += 1
                elif turns and turn["turn"] not in turns:
                    skipped["turn filter"] += 1
                elif cand["reward"] < min_reward:
                    skipped["min reward"] += 1
                else:
                    key = f'{turn.get("run")}/{turn["benchmark"]}/{turn["episode"]}/{turn["turn"]}'
                    records.append(dict(state=turn["state"], action=cand["action"], reward=float(cand["reward"]),
                                        benchmark=turn["benchmark"], state_key=key, cand=i))
    return records, skipped


def tokenize_sample(tokenizer, state: list[dict], action: str, loss_on_all_tokens: bool = False):
    """input ids and labels of one sample; labels are -100 except on the action and its end-of-turn token."""
    prompt = tokenizer.apply_chat_template(state, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    full = tokenizer.apply_chat_template(state + [{"role": "assistant", "content": action}], tokenize=True,
                                         return_dict=True)["input_ids"]
    if full[:len(prompt)] != prompt:
        at = next((i for i, (a, b) in enumerate(zip(prompt, full)) if a != b), len(full))
        raise ValueError(f"{tokenizer.name_or_path}: the chat template's generation prompt is not a prefix of the templated "
                         f"conversation (they differ at token {at}), so the action's tokens cannot be located")
    # Templates append text after the end-of-turn token (ChatML: "<|im_end|>\n"); the policy never has to
    # generate it, so trailing whitespace-only tokens get no loss.
    end = len(full)
    while end > len(prompt) + 1 and tokenizer.decode(full[end - 1:end]).strip() == "":
        end -= 1
    labels = list(full) if loss_on_all_tokens else [-100] * len(prompt) + full[len(prompt):end] + [-100] * (len(full) - end)
    return list(full), labels


def build_samples(records, tokenizer, *, tau: float, max_len: int, loss_on_all_tokens: bool):
    """Tokenise records into samples with weight exp(reward / tau); samples over max_len are dropped (counted)."""
    samples, num_too_long = [], 0
    for rec in records:
        ids, labels = tokenize_sample(tokenizer, rec["state"], rec["action"], loss_on_all_tokens)
        if len(ids) > max_len:
            num_too_long += 1
            continue
        samples.append(dict(input_ids=ids, labels=labels, weight=math.exp(rec["reward"] / tau), reward=rec["reward"],
                            benchmark=rec["benchmark"], state_key=rec["state_key"], cand=rec["cand"],
                            num_target=sum(1 for x in labels if x != -100)))
    return samples, num_too_long


def describe_samples(samples, num_too_long: int, skipped: Counter) -> str:
    """Counts per reward value and benchmark, and token statistics, as printable text."""
    if not samples:
        return f"no samples (too long: {num_too_long}, skipped: {dict(skipped)})"
    lens = np.array([len(s["input_ids"]) for s in samples])
    tgt = np.array([s["num_target"] for s in samples])
    lines = [f"samples: {len(samples)} | dropped as longer than --max-len: {num_too_long} | skipped: {dict(skipped)}",
             "per reward: " + ", ".join(f"r={r:g} (w={w:.2f}): {n}" for (r, w), n in
                                        sorted(Counter((s["reward"], s["weight"]) for s in samples).items())),
             "per benchmark: " + ", ".join(f"{b}: {n}" for b, n in sorted(Counter(s["benchmark"] for s in samples).items())),
             f"tokens per sample: mean {lens.mean():.0f} | median {np.median(lens):.0f} | max {lens.max()} | total {lens.sum()}",
             f"loss tokens per sample: mean {tgt.mean():.0f} | max {tgt.max()} | total {tgt.sum()} ({tgt.sum() / lens.sum():.1%})"]
    return "\n".join(lines)


def plan_batches(lengths: list[int], *, batch_size: int, grad_accum_steps: int, num_buckets_batches: int,
                 num_epochs: int, seed: int) -> list[list[list[int]]]:
    """The whole schedule: steps -> micro-batches -> sample indices. Length-grouped: shuffle, cut into buckets,
    sort each bucket by length, cut it into micro-batches, shuffle the micro-batches. Fixed by (seed, epoch)."""
    steps = []
    for epoch in range(num_epochs):
        rng = random.Random(seed * 1000 + epoch)
        order = list(range(len(lengths)))
        rng.shuffle(order)
        bucket = batch_size * num_buckets_batches
        micro = []
        for i in range(0, len(order), bucket):
            chunk = sorted(order[i:i + bucket], key=lambda j: lengths[j])
            micro += [chunk[k:k + batch_size] for k in range(0, len(chunk), batch_size)]
        rng.shuffle(micro)
        steps += [micro[k:k + grad_accum_steps] for k in range(0, len(micro) - grad_accum_steps + 1, grad_accum_steps)]
    return steps


def collate(samples, pad_id: int, device) -> dict:
    """Right-pad a micro-batch; padding gets attention 0 and label -100."""
    T = max(len(s["input_ids"]) for s in samples)
    ids = torch.full((len(samples), T), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), T), -100, dtype=torch.long)
    mask = torch.zeros((len(samples), T), dtype=torch.long)
    for i, s in enumerate(samples):
        n = len(s["input_ids"])
        ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(s["input_ids"]), torch.tensor(s["labels"]), 1
    weights = torch.tensor([s["weight"] for s in samples], dtype=torch.float32)
    return {k: v.to(device) for k, v in dict(input_ids=ids, labels=labels, attention_mask=mask, weights=weights).items()}


def _token_nll(h, w, b, t):
    # fp32 logits: bf16 log-softmax over a 150k vocabulary loses ~2 digits
    return F.cross_entropy(F.linear(h, w, b).float(), t, reduction="none")


def rwr_loss(model, b_input_ids, b_attention_mask, b_labels, b_weights, num_samples_in_step: int, logits_chunk_tokens: int):
    """Weighted NLL of one micro-batch, scaled so that summing it over the step's micro-batches gives
    (1 / N) * sum_i w_i * mean_t(-log p(a_i,t | s_i, a_i,<t)) over the N samples of the step.
    Returns (loss to backprop, per-sample mean NLL detached)."""
    hidden = model.base_model(input_ids=b_input_ids, attention_mask=b_attention_mask, use_cache=False).last_hidden_state  # (B, T, H)
    # position t predicts token t+1: drop the last hidden state and the first label
    hidden, targets = hidden[:, :-1], b_labels[:, 1:]  # (B, T-1, H), (B, T-1)
    mask = targets != -100  # (B, T-1)
    rows = mask.nonzero()[:, 0]  # (N,) sample of each loss token; a host sync (boolean indexing)
    h, t = hidden[mask], targets[mask]  # (N, H), (N,)
    head = model.get_output_embeddings()
    # logits only for the loss tokens, a chunk at a time, recomputed in backward: never a (T, vocab) tensor
    nll_tok = torch.cat([checkpoint(_token_nll, h[i:i + logits_chunk_tokens], head.weight, head.bias,
                                    t[i:i + logits_chunk_tokens], use_reentrant=False)
                         for i in range(0, t.numel(), logits_chunk_tokens)])  # (N,)
    # per-sample mean over its own loss tokens, so a long action weighs as much as a short one
    nll_sum = torch.zeros(targets.shape[0], device=nll_tok.device, dtype=torch.float32).index_add(0, rows, nll_tok)
    nll_sample = nll_sum / mask.sum(1).clamp(min=1)  # (B,)
    # times the sample weight, averaged over all samples of the step (not of this micro-batch)
    loss = (b_weights * nll_sample).sum() / num_samples_in_step
    return loss, nll_sample.detach()


@torch.no_grad()
def evaluate_loss(model, samples, *, batch_size: int, pad_id: int, device, logits_chunk_tokens: int) -> dict:
    """Plain and weighted NLL over held-out samples (per-sample means, averaged over samples)."""
    was_training = model.training
    model.eval()
    nll, wnll = [], []
    order = sorted(range(len(samples)), key=lambda i: len(samples[i]["input_ids"]))
    for k in range(0, len(order), batch_size):
        b = collate([samples[i] for i in order[k:k + batch_size]], pad_id, device)
        _, nll_sample = rwr_loss(model, b["input_ids"], b["attention_mask"], b["labels"], b["weights"], 1, logits_chunk_tokens)
        nll += nll_sample.tolist()
        wnll += (b["weights"] * nll_sample).tolist()
    model.train(was_training)
    return {"eval/loss": float(np.mean(nll)), "eval/weighted_loss": float(np.mean(wnll)), "eval/num_samples": len(nll)}


def memory_plan(config, num_params: int, largest_param: int, *, tokens: int, bytes_per_el: int,
                optimizer_in_backward: bool, checkpointing: bool, logits_chunk_tokens: int) -> dict:
    """Estimated GiB at the peak of a step; activations from the layer shapes (Qwen2/Llama-like decoder)."""
    GiB = 2 ** 30
    h, i, L, V = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    kv = h // config.num_attention_heads * getattr(config, "num_key_value_heads", config.num_attention_heads)
    # tensors one decoder layer keeps for backward: 2 norms, q/k/v, attention out, o_proj, 2 residuals, gate/up/act/product
    per_layer = tokens * (8 * h + 2 * kv + 4 * i) * bytes_per_el
    plan = {"parameters": num_params * bytes_per_el / GiB,
            "gradients": (largest_param if optimizer_in_backward else num_params) * bytes_per_el / GiB,
            "optimizer state (AdamW, 2 moments)": 2 * num_params * bytes_per_el / GiB}
    if checkpointing:  # layer inputs kept, one layer recomputed (x2 for its gradients)
        plan["activations"] = (L * tokens * h * bytes_per_el + 2 * per_layer) / GiB
    else:
        plan["activations"] = L * per_layer / GiB
    plan["logits (fp32 chunk, fwd+bwd)"] = 3 * min(tokens, logits_chunk_tokens) * V * 4 / GiB
    plan["total"] = sum(plan.values())
    return plan


def attach_optimizer_in_backward(model, make_optimizer, grad_sq: torch.Tensor) -> dict:
    """One AdamW per parameter, stepped as soon as its gradient is complete, then the gradient is freed.
    grad_sq accumulates the squared gradient norm for logging (it cannot be clipped: the norm comes too late)."""
    optimizers = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        optimizers[name] = make_optimizer([p])

        def step_and_free(param, opt=optimizers[name]):
            grad_sq.add_(param.grad.norm().float() ** 2)
            opt.step()
            opt.zero_grad(set_to_none=True)
        p.register_post_accumulate_grad_hook(step_and_free)
    return optimizers


def lr_lambda_factory(num_steps: int, num_warmup: int, min_lr_ratio: float):
    """Linear warmup to 1, then cosine to min_lr_ratio; the factor for step `s` (0-based)."""
    def lr_lambda(s: int) -> float:
        if s < num_warmup:
            return (s + 1) / num_warmup
        progress = min(1.0, (s - num_warmup) / max(1, num_steps - num_warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return lr_lambda


def save_checkpoint(path: Path, model, tokenizer, train_state: dict | None) -> None:
    """Write a HF model folder (+ train_state.pt) to a temp folder, then rename it into place."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)  # config.json, model.safetensors, generation_config.json
    tokenizer.save_pretrained(tmp)
    if train_state is not None:
        torch.save(train_state, tmp / "train_state.pt")
    shutil.rmtree(path, ignore_errors=True)
    os.rename(tmp, path)


def newest_checkpoint(run_dir: Path) -> Path | None:
    steps = sorted(run_dir.glob("step_*[0-9]"), key=lambda p: int(p.name.split("_")[1]))
    steps = [p for p in steps if (p / "train_state.pt").exists()]
    return steps[-1] if steps else None


def main(argv: list[str] | None = None) -> Path | None:
    args = executor.parse_args(Args, argv)

    # ---------------------------------------------------------------- setup: flags, run dir, resume, seed
    run_dir = Path(args.out_dir) / args.run
    resume_from = newest_checkpoint(run_dir) if args.resume else None
    saved = None
    if resume_from is not None:
        # our own file (RNG states are not tensors); on CPU first, so optimizer state never sits twice on the GPU
        saved = torch.load(resume_from / "train_state.pt", map_location="cpu", weights_only=False)
        for k, old in saved["args"].items():
            new = getattr(args, k, None)
            if k in ("resume", "dry_run") or old == new or (isinstance(old, float) and math.isnan(old) and math.isnan(new)):
                continue
            wins = "checkpoint" if k in KEPT_ON_RESUME else "command line"
            warnings.warn(f"--{k.replace('_', '-')}: checkpoint has {old!r}, command line has {new!r}; the {wins} wins")
            if k in KEPT_ON_RESUME:
                setattr(args, k, old)
    elif args.resume:
        print(f"--resume: no checkpoint in {run_dir}, starting from scratch")
    elif not args.dry_run and newest_checkpoint(run_dir) is not None:
        sys.exit(f"{run_dir} already holds checkpoints: pass --resume to continue it or choose another --run")
    device = torch.device(args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu")
    use_oib = args.optimizer_in_backward if args.optimizer_in_backward is not None else device.type == "cuda"
    dtype = getattr(torch, args.dtype)
    # fail early, before any model loads, naming the flag to change (as torchtune does)
    if use_oib and args.grad_accum_steps > 1:
        sys.exit("optimizer-in-backward steps during backward, so gradients cannot accumulate: "
                 "set --grad-accum-steps 1 (raise --batch-size instead) or pass --no-optimizer-in-backward")
    if use_oib and args.max_grad_norm > 0:
        sys.exit("optimizer-in-backward cannot clip by global norm (each parameter steps before the norm is known): "
                 "set --max-grad-norm 0 or pass --no-optimizer-in-backward")
    if not 0 <= args.eval_fraction < 1 or args.batch_size < 1 or args.grad_accum_steps < 1:
        sys.exit("need 0 <= --eval-fraction < 1, --batch-size >= 1 and --grad-accum-steps >= 1")
    print("config: " + json.dumps(dataclasses.asdict(args)))
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    # ---------------------------------------------------------------- data: trajectories -> weighted samples
    model_path = str(executor.embedded_model_dir()) if args.model == executor.EMBEDDED else args.model
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    records, skipped = read_candidates(args.trajectories, min_reward=args.min_reward, turns=args.turns, benchmarks=args.benchmarks)
    samples, num_too_long = build_samples(records, tokenizer, tau=args.tau, max_len=args.max_len,
                                          loss_on_all_tokens=args.loss_on_all_tokens)
    print(describe_samples(samples, num_too_long, skipped))
    # hold out whole states, so no held-out prompt is also trained on
    keys = sorted({s["state_key"] for s in samples})
    random.Random(args.seed).shuffle(keys)
    eval_keys = set(keys[:int(len(keys) * args.eval_fraction)])
    train = [s for s in samples if s["state_key"] not in eval_keys]
    held_out = [s for s in samples if s["state_key"] in eval_keys]
    if args.normalize_weights and train:
        # one constant for the whole run: same optimum as raw exp(r/tau), gradient scale of plain SFT
        mean_w = sum(s["weight"] for s in train) / len(train)
        for s in samples:
            s["weight"] /= mean_w
    print(f"train samples: {len(train)} | held-out samples: {len(held_out)} ({len(eval_keys)} states)")
    steps = plan_batches([len(s["input_ids"]) for s in train], batch_size=args.batch_size,
                         grad_accum_steps=args.grad_accum_steps, num_buckets_batches=args.num_buckets_batches,
                         num_epochs=args.num_epochs, seed=args.seed)
    num_steps = min(len(steps), args.max_steps) if args.max_steps > 0 else len(steps)
    fingerprint = [(s["state_key"], s["cand"], len(s["input_ids"])) for s in train]

    # ---------------------------------------------------------------- memory plan (shapes only: meta device)
    config = AutoConfig.from_pretrained(model_path)
    with torch.device("meta"):
        shapes = AutoModelForCausalLM.from_config(config)
    num_params = sum(p.numel() for p in shapes.parameters())
    plan = memory_plan(config, num_params, max(p.numel() for p in shapes.parameters()),
                       tokens=args.batch_size * args.max_len, bytes_per_el=dtype.itemsize, optimizer_in_backward=use_oib,
                       checkpointing=args.enable_activation_checkpointing, logits_chunk_tokens=args.logits_chunk_tokens)
    del shapes
    print(f"memory plan ({num_params / 1e9:.2f}B parameters, {args.dtype}, {args.batch_size} x {args.max_len} tokens, "
          f"optimizer-in-backward {'on' if use_oib else 'off'}, activation checkpointing "
          f"{'on' if args.enable_activation_checkpointing else 'off'}): "
          + " | ".join(f"{k} {v:.1f} GiB" for k, v in plan.items()))
    if args.dry_run:
        return None
    if (not train or num_steps == 0) and args.allow_no_samples:
        # A 135M meta-agent may write no working workflow at all: say so loudly and hand the next stage
        # the base model, so a small pipeline still runs end to end. Nothing is trained.
        print(f"NO TRAINING SAMPLES: {run_dir} gets the base model {args.model} unchanged (--allow-no-samples)")
        save_checkpoint(run_dir, AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype), tokenizer, None)
        (run_dir / "NOT_TRAINED.txt").write_text("no ok candidate in the trajectories: this is the base model\n")
        return run_dir
    if not train or num_steps == 0:
        sys.exit("no training step: no samples left after the filters, or fewer than one step's worth "
                 "(--allow-no-samples exports the base model instead)")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "train_config.json").write_text(json.dumps(dict(dataclasses.asdict(args), device=str(device),
                                               optimizer_in_backward_on=use_oib, num_steps=num_steps), indent=1))

    # ---------------------------------------------------------------- model
    flash = device.type == "cuda" and dtype == torch.bfloat16 and importlib.util.find_spec("flash_attn") is not None
    model = AutoModelForCausalLM.from_pretrained(str(resume_from or model_path), dtype=dtype, device_map=str(device),
                                                 attn_implementation="flash_attention_2" if flash else "sdpa")
    if getattr(model.config, "final_logit_softcapping", None) or getattr(model.config, "logit_scale", None) not in (None, 1, 1.0):
        sys.exit(f"{model_path}: scaled or soft-capped logits are not supported by this loss (see simplification 5)")
    if args.enable_activation_checkpointing:
        # non-reentrant: a tied embedding then accumulates its gradient once per backward, which the
        # optimizer-in-backward hooks rely on (one step per parameter per backward)
        if hasattr(model, "activation_checkpointing_enable"):  # transformers 5.x renamed gradient_checkpointing_enable
            model.activation_checkpointing_enable({"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()

    # ---------------------------------------------------------------- optimizer and schedule
    def make_optimizer(params):
        return torch.optim.AdamW(params, lr=args.lr, betas=(args.beta1, args.beta2), weight_decay=args.weight_decay)
    grad_sq = torch.zeros((), device=device)  # squared grad norm summed by the optimizer-in-backward hooks
    params = [p for p in model.parameters() if p.requires_grad]
    optimizers = list(attach_optimizer_in_backward(model, make_optimizer, grad_sq).values()) if use_oib else [make_optimizer(params)]
    lr_lambda = lr_lambda_factory(num_steps, math.ceil(args.warmup_frac * num_steps), args.min_lr_ratio)
    # one LambdaLR per optimizer: the same factor everywhere, so both modes follow one schedule
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lr_lambda) for o in optimizers]
    start_step = 0
    if saved is not None:
        if saved["fingerprint"] != fingerprint:
            sys.exit(f"the training samples differ from those of {resume_from} (trajectories changed?): resuming would "
                     "not continue the same run; start a new --run")
        # load after the schedulers exist: LambdaLR's constructor rewrites the lr that the optimizer state restores
        for o, st in zip(optimizers, saved["optimizers"], strict=True):
            o.load_state_dict(st)
        for sch, st in zip(schedulers, saved["schedulers"], strict=True):
            sch.load_state_dict(st)
        del saved["optimizers"]
        steps, start_step = saved["steps"], saved["step"]
        random.setstate(saved["rng"]["python"])
        np.random.set_state(saved["rng"]["numpy"])
        torch.set_rng_state(saved["rng"]["torch"])
        if saved["rng"]["cuda"] is not None:
            torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
        print(f"resumed from {resume_from} at step {start_step}")
    metrics_path = run_dir / "metrics.jsonl"
    if metrics_path.exists():  # drop lines logged after the checkpoint we resume from (or all, on a fresh start)
        lines = [ln for ln in metrics_path.read_text().splitlines() if ln and json.loads(ln)["step"] <= start_step]
        metrics_path.write_text("".join(ln + "\n" for ln in lines))
    metrics = open(metrics_path, "a")

    def log(row: dict) -> None:
        metrics.write(json.dumps(row) + "\n")
        metrics.flush()

    def checkpoint_now(step: int) -> None:
        state = {"step": step, "args": dataclasses.asdict(args), "optimizers": [o.state_dict() for o in optimizers],
                 "schedulers": [s.state_dict() for s in schedulers], "steps": steps,
                 "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
                         "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else None},
                 "fingerprint": fingerprint}
        save_checkpoint(run_dir / f"step_{step:06d}", model, tokenizer, state)
        for old in sorted(run_dir.glob("step_*[0-9]"), key=lambda p: int(p.name.split("_")[1]))[:-args.num_checkpoints_kept]:
            shutil.rmtree(old)

    # ---------------------------------------------------------------- train loop
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    bar = tqdm(range(start_step, num_steps), initial=start_step, total=num_steps, desc="train", dynamic_ncols=True)
    for step in bar:
        # lr: the schedulers advanced after the previous step
        lr = schedulers[0].get_last_lr()[0]
        # periodic eval, then checkpoint, before the step: step_<N>/ holds the model after N updates (and the
        # eval of step N is already logged, so a resume from it neither repeats nor loses a line)
        if held_out and args.eval_every and step > start_step and step % args.eval_every == 0:
            ev = evaluate_loss(model, held_out, batch_size=args.batch_size, pad_id=pad_id, device=device,
                               logits_chunk_tokens=args.logits_chunk_tokens)
            log({"step": step, **ev})
            tqdm.write(f"step {step} | eval loss {ev['eval/loss']:.4f} | eval weighted loss {ev['eval/weighted_loss']:.4f}")
        if args.save_every and step > start_step and step % args.save_every == 0:
            checkpoint_now(step)
        t0 = time.time()
        # batch: this step's micro-batches, fixed by the plan so a resume replays the same order
        micro = [[train[i] for i in mb] for mb in steps[step]]
        num_samples = sum(len(mb) for mb in micro)
        nll_sum = wnll_sum = 0.0
        num_tokens = 0
        for mb in micro:
            b = collate(mb, pad_id, device)
            # forward / loss
            loss, nll_sample = rwr_loss(model, b["input_ids"], b["attention_mask"], b["labels"], b["weights"],
                                        num_samples, args.logits_chunk_tokens)
            # backward; with --optimizer-in-backward every parameter is also stepped and its gradient freed here
            loss.backward()
            nll_sum += nll_sample.sum().item()  # host sync, once per micro-batch
            wnll_sum += (b["weights"] * nll_sample).sum().item()
            num_tokens += int(b["attention_mask"].sum())
        if use_oib:
            grad_norm = grad_sq.sqrt().item()
            grad_sq.zero_()
        else:
            # clip (max-grad-norm 0 = no clipping, the norm is still measured)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm if args.max_grad_norm > 0 else float("inf")).item()
            # step
            optimizers[0].step()
            optimizers[0].zero_grad(set_to_none=True)
        for sch in schedulers:
            sch.step()
        # log
        dt = time.time() - t0
        if device.type == "cuda":
            peak_gib = torch.cuda.max_memory_allocated() / 2 ** 30
            torch.cuda.reset_peak_memory_stats()
        else:  # CPU: peak resident set size of the process so far (cannot be reset)
            peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
        row = {"step": step + 1, "train/loss": nll_sum / num_samples, "train/weighted_loss": wnll_sum / num_samples,
               "train/lr": lr, "train/grad_norm": grad_norm, "sys/tokens_per_s": num_tokens / dt,
               "sys/peak_mem_gib": peak_gib, "sys/step_s": dt}
        log(row)
        tqdm.write(f"step {step + 1}/{num_steps} | loss {row['train/loss']:.4f} | weighted loss {row['train/weighted_loss']:.4f} "
                   f"| lr {lr:.2e} | grad norm {grad_norm:.3f} | tok/s {row['sys/tokens_per_s']:.0f} | mem {peak_gib:.2f} GiB "
                   f"| {dt:.2f}s")
        # stop check
        if not math.isfinite(row["train/loss"]):
            sys.exit(f"loss is {row['train/loss']} at step {step + 1}: stopping (lower --lr?)")

    # ---------------------------------------------------------------- final eval, checkpoint and export
    if held_out:
        ev = evaluate_loss(model, held_out, batch_size=args.batch_size, pad_id=pad_id, device=device,
                           logits_chunk_tokens=args.logits_chunk_tokens)
        log({"step": num_steps, **ev})
        print(f"final eval loss {ev['eval/loss']:.4f} | eval weighted loss {ev['eval/weighted_loss']:.4f}")
    if not (run_dir / f"step_{num_steps:06d}").exists():
        checkpoint_now(num_steps)
    # the final model at the top of the run folder, file by file (each os.replace is atomic)
    save_checkpoint(run_dir / "final", model, tokenizer, None)
    for f in (run_dir / "final").iterdir():
        os.replace(f, run_dir / f.name)
    (run_dir / "final").rmdir()
    metrics.close()
    print(f"done: {run_dir}")
    return run_dir


if __name__ == "__main__":
    main()

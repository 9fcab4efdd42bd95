"""Stage 2 of W4S: train the weak meta-agent on its own trajectories by reward-weighted regression (RLAO).

Reads  runs/<run>/trajectories.jsonl (one or more; written by collect.py, format in the README).
Writes checkpoints/<run>/: train_config.json, metrics.jsonl, step_<N>/ (a Hugging Face model folder plus
       train_state.pt and optimizer/, written atomically every --save-every steps) and, at the end, the final model at the
       top of the folder (config, safetensors, tokenizer, generation config): `from_pretrained` and
       `vllm serve checkpoints/<run>` load it as is.

Paper: W4S section 3.3 (RLAO, reward-weighted regression). Each `ok` candidate of a turn is one sample:
prompt = the chat messages that produced the action, target = the action (analysis + workflow code), weight = exp(r / tau),
tau = 0.4. The loss is the weighted negative log-likelihood of the action given the state.

Deliberate simplifications and choices:
1. Loss on the action tokens only (plus the template's end-of-turn token). The official trainer's collator
   rebuilt the labels and trained on every token, prompt included; `--loss-on-all-tokens` reproduces that
   for ablation and is off by default.
2. Each sample's NLL is the mean over its own action tokens (long and short actions count alike), times its
   weight, averaged over the samples of the step. Weights are divided by their mean over the training set
   (a constant, so the optimum is the paper's RWR and an SFT-sized lr still fits); `--no-normalize-weights`
   uses raw exp(r / tau).
3. bf16 weights, gradients and AdamW moments, no fp32 master copy (fp32 masters: +28 GiB at 7B). Adam's
   update is ~lr per weight, and a bf16 weight moves only if the update exceeds half its spacing,
   |w| * 2^-9: with plain AdamW at lr 1e-5 about 84% of 7B-like weights never move. So bf16 uses optimi's
   AdamW with Kahan summation (`--optimizer adamw_kahan`, the default in bf16): the update is computed in
   fp32 and what rounding to bf16 drops is kept in one more bf16 buffer per weight (+2 bytes per
   parameter) and added back at the next step. Chosen by measurement (bench/bench_train.py) over torchao's
   bf16 stochastic rounding: both follow the fp32 loss, Kahan's weights stay 3-5x closer to fp32's and are
   deterministic (resume and 1-vs-N-process runs agree); stochastic rounding would save the extra buffer.
   `--optimizer adamw` is plain torch AdamW (ablation); `--dtype float32` trains in full precision.
4. With `--optimizer-in-backward` (default on one CUDA device) each parameter has its own AdamW, stepped
   and its gradient freed in a post-accumulate-grad hook, so full gradients never coexist. That rules out
   gradient accumulation and clipping by global norm (the norm is known only after every parameter has
   moved); the grad norm is still logged.
5. Samples longer than --max-len are dropped and counted, never truncated. No packing, no KL term, no
   reference model; models whose logits are scaled or soft-capped (Gemma 2, Cohere) are rejected.
6. Prompt = the candidate's own chat messages (`messages`: for a repaired candidate the state, its earlier
   attempts and the repair prompt that produced the final action), else the turn's state (older files).
7. Several GPUs: `torchrun --nproc-per-node N train_rlao.py -- ...` shards the model with FSDP2 (one
   fully_shard per decoder layer, one for the rest); --batch-size is per process, and each process takes
   a disjoint slice of the same global micro-batch. Checkpoints: the HF folder (gathered, written by rank
   0) plus the optimizer state in torch.distributed.checkpoint format (one shard per process).

CPU smoke run (tiny model, minutes):
    python train_rlao.py --trajectories runs/smoke/trajectories.jsonl --model embedded --run smoke \
        --dtype float32 --max-len 2048 --num-epochs 1 --max-steps 4 --save-every 2
Full run (one 80 GB GPU, Qwen2.5-Coder-7B-Instruct, 8,192 tokens):
    python train_rlao.py --trajectories runs/w4s/trajectories.jsonl --run w4s --max-len 8192 \
        --batch-size 1 --lr 1e-5 --num-epochs 3 --save-every 100
Eight GPUs (FSDP2; --batch-size is per GPU, so the global batch is 8):
    torchrun --standalone --nproc-per-node 8 train_rlao.py -- --trajectories runs/w4s/trajectories.jsonl \
        --run w4s --max-len 8192 --batch-size 1 --lr 1e-5 --num-epochs 3 --save-every 100
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
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn.functional as F
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
                                                     set_optimizer_state_dict)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from torch.utils.checkpoint import checkpoint
from tqdm import tqdm
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

import executor
from meta_agent import read_jsonl


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
    optimizer: Literal["auto", "adamw_kahan", "adamw"] = field(default="auto", metadata={"help": "auto = adamw_kahan in bf16 (Kahan-compensated updates, +2 bytes/param), adamw in float32; adamw in bf16 rounds most small updates away (ablation)"})
    device: Literal["auto", "cuda", "cpu"] = field(default="auto", metadata={"help": "auto = cuda when present"})
    enable_activation_checkpointing: bool = field(default=True, metadata={"help": "recompute each layer in backward"})
    optimizer_in_backward: bool | None = field(default=None, metadata={"help": "step each parameter in its grad hook (default: on for one CUDA device)"})
    batch_size: int = field(default=1, metadata={"help": "samples per micro-batch per process (global: x the number of processes)"})
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


# Values that fix the data order, the schedule's length and the model: on --resume the checkpoint's value
# wins. Every other value (lr, schedule shape, betas, weight decay, ...) is applied from the command line.
KEPT_ON_RESUME = ("trajectories", "model", "seed", "tau", "normalize_weights", "min_reward", "turns", "benchmarks",
                  "max_len", "loss_on_all_tokens", "eval_fraction", "dtype", "optimizer", "batch_size",
                  "grad_accum_steps", "num_epochs", "max_steps", "num_buckets_batches", "optimizer_in_backward")
# optimizer hyperparameters that load_state_dict restores from the checkpoint and the command line overrides
OPTIMIZER_HPARAMS = ("betas", "beta1", "beta2", "eps", "weight_decay")


def read_candidates(paths: list[str], *, min_reward: float, turns: list[int], benchmarks: list[str]):
    """One record per `ok` candidate that passes the filters, plus counts of what was skipped."""
    records, skipped = [], Counter()
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such trajectories file")
        # a killed collect.py leaves a torn last line: skipped with a warning, the file is not touched
        for turn in read_jsonl(Path(path), cut_torn_tail=False):
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
                    # the messages that produced this action (a repair's differ from the state), else the state
                    records.append(dict(messages=cand.get("messages") or turn["state"], action=cand["action"],
                                        reward=float(cand["reward"]), benchmark=turn["benchmark"], state_key=key, cand=i))
    return records, skipped


def tokenize_sample(tokenizer, messages: list[dict], action: str, loss_on_all_tokens: bool = False):
    """input ids and labels of one sample; labels are -100 except on the action and its end-of-turn token.
    Returns None when the chat template does not render the prompt as a prefix of the conversation."""
    prompt_text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    full_text = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": action}], tokenize=False)
    if not full_text.startswith(prompt_text):
        return None
    # prompt and completion tokenised apart, as at generation time: an action starting with whitespace would
    # otherwise merge with the template's newline and the prompt's tokens would not be a prefix
    prompt = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    completion = tokenizer(full_text[len(prompt_text):], add_special_tokens=False)["input_ids"]
    # Templates append text after the end-of-turn token (ChatML: "<|im_end|>\n"); the policy never has to
    # generate it, so trailing whitespace-only tokens get no loss.
    end = len(completion)
    while end > 1 and tokenizer.decode(completion[end - 1:end]).strip() == "":
        end -= 1
    ids = prompt + completion
    labels = list(ids) if loss_on_all_tokens else [-100] * len(prompt) + completion[:end] + [-100] * (len(completion) - end)
    return ids, labels


def build_samples(records, tokenizer, *, tau: float, max_len: int, loss_on_all_tokens: bool):
    """Tokenise records into samples with weight exp(reward / tau); samples over max_len are dropped, and
    samples the chat template cannot split into prompt + action are skipped; both counted."""
    samples, dropped = [], Counter()
    for rec in records:
        tokens = tokenize_sample(tokenizer, rec["messages"], rec["action"], loss_on_all_tokens)
        if tokens is None:
            dropped["template mismatch"] += 1
            continue
        ids, labels = tokens
        if len(ids) > max_len:
            dropped["too long"] += 1
            continue
        samples.append(dict(input_ids=ids, labels=labels, weight=math.exp(rec["reward"] / tau), reward=rec["reward"],
                            benchmark=rec["benchmark"], state_key=rec["state_key"], cand=rec["cand"],
                            num_target=sum(1 for x in labels if x != -100)))
    return samples, dropped


def describe_samples(samples, dropped: Counter, skipped: Counter) -> str:
    """Counts per reward value and benchmark, and token statistics, as printable text."""
    if not samples:
        return f"no samples (dropped: {dict(dropped)}, skipped: {dict(skipped)})"
    lens = np.array([len(s["input_ids"]) for s in samples])
    tgt = np.array([s["num_target"] for s in samples])
    lines = [f"samples: {len(samples)} | dropped as longer than --max-len: {dropped['too long']} | prompt/action "
             f"not separable by the chat template: {dropped['template mismatch']} | skipped: {dict(skipped)}",
             "per reward: " + ", ".join(f"r={r:g} (w={w:.2f}): {n}" for (r, w), n in
                                        sorted(Counter((s["reward"], s["weight"]) for s in samples).items())),
             "per benchmark: " + ", ".join(f"{b}: {n}" for b, n in sorted(Counter(s["benchmark"] for s in samples).items())),
             f"tokens per sample: mean {lens.mean():.0f} | median {np.median(lens):.0f} | max {lens.max()} | total {lens.sum()}",
             f"loss tokens per sample: mean {tgt.mean():.0f} | max {tgt.max()} | total {tgt.sum()} ({tgt.sum() / lens.sum():.1%})"]
    return "\n".join(lines)


def plan_batches(lengths: list[int], *, batch_size: int, grad_accum_steps: int, num_buckets_batches: int,
                 num_epochs: int, seed: int) -> list[list[list[int]]]:
    """The whole schedule: steps -> micro-batches -> sample indices. Length-grouped: shuffle, cut into buckets,
    sort each bucket by length, cut it into micro-batches, shuffle the micro-batches. Fixed by (seed, epoch).
    Every sample is in one micro-batch per epoch; an epoch's last step may hold fewer micro-batches (the loss
    divides by the step's own sample count)."""
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
        steps += [micro[k:k + grad_accum_steps] for k in range(0, len(micro), grad_accum_steps)]  # last may be short
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


class RWRLoss(torch.nn.Module):
    """rwr_loss as a module's forward. Under FSDP2 this module is the root unit: it gathers the embedding,
    final norm and output head around the whole loss (the head is used outside the model's own forward)."""
    def __init__(self, model, logits_chunk_tokens: int):
        super().__init__()
        self.model, self.logits_chunk_tokens = model, logits_chunk_tokens

    def forward(self, input_ids, attention_mask, labels, weights, num_samples_in_step: float):
        return rwr_loss(self.model, input_ids, attention_mask, labels, weights, num_samples_in_step, self.logits_chunk_tokens)


@torch.no_grad()
def evaluate_loss(loss_module, samples, *, batch_size: int, pad_id: int, device) -> dict:
    """Plain and weighted NLL over held-out samples (per-sample means, averaged over samples). Under FSDP
    every process evaluates all of them (each forward is collective; the held-out set is small)."""
    was_training = loss_module.training
    loss_module.eval()
    nll, wnll = [], []
    order = sorted(range(len(samples)), key=lambda i: len(samples[i]["input_ids"]))
    for k in range(0, len(order), batch_size):
        b = collate([samples[i] for i in order[k:k + batch_size]], pad_id, device)
        _, nll_sample = loss_module(b["input_ids"], b["attention_mask"], b["labels"], b["weights"], 1)
        nll += nll_sample.tolist()
        wnll += (b["weights"] * nll_sample).tolist()
    loss_module.train(was_training)
    return {"eval/loss": float(np.mean(nll)), "eval/weighted_loss": float(np.mean(wnll)), "eval/num_samples": len(nll)}


def memory_plan(config, num_params: int, largest_param: int, *, tokens: int, bytes_per_el: int, kahan: bool,
                optimizer_in_backward: bool, checkpointing: bool, logits_chunk_tokens: int, num_shards: int = 1) -> dict:
    """Estimated GiB per process at the peak of a step; activations from the layer shapes (Qwen2/Llama-like
    decoder). Weights, gradients and optimizer state are divided over FSDP's num_shards; activations are not."""
    GiB = 2 ** 30
    h, i, L, V = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    kv = h // config.num_attention_heads * getattr(config, "num_key_value_heads", config.num_attention_heads)
    # tensors one decoder layer keeps for backward: 2 norms, q/k/v, attention out, o_proj, 2 residuals, gate/up/act/product
    per_layer = tokens * (8 * h + 2 * kv + 4 * i) * bytes_per_el
    shard = num_params / num_shards
    plan = {"parameters": shard * bytes_per_el / GiB,
            "gradients": (largest_param / num_shards if optimizer_in_backward else shard) * bytes_per_el / GiB,
            # AdamW's moments are kept in the weights' dtype (torch and optimi alike)
            "optimizer state (AdamW, 2 moments)": 2 * shard * bytes_per_el / GiB}
    if kahan:
        plan["Kahan compensation (1 buffer)"] = shard * bytes_per_el / GiB
    if num_shards > 1:
        # FSDP gathers the root unit (embedding, head) for the whole step with its unsharded gradient, and
        # two decoder layers at a time (one prefetched) plus one layer's unsharded gradient
        layer = 2 * h * h + 2 * h * kv + 3 * h * i
        plan["gathered by FSDP"] = (2 * (num_params - L * layer) + 3 * layer) * bytes_per_el / GiB
    if checkpointing:  # layer inputs kept, one layer recomputed (x2 for its gradients)
        plan["activations"] = (L * tokens * h * bytes_per_el + 2 * per_layer) / GiB
    else:
        plan["activations"] = L * per_layer / GiB
    plan["logits (fp32 chunk, fwd+bwd)"] = 3 * min(tokens, logits_chunk_tokens) * V * 4 / GiB
    plan["total"] = sum(plan.values())
    return plan


def make_optimizer(params, name: str, *, lr: float, betas: tuple[float, float], weight_decay: float,
                   sharded: bool = False):
    """AdamW over `params`. adamw_kahan (optimi): the update is computed in fp32 and what bf16 rounding drops is
    carried to the next step in a bf16 buffer; adamw: torch's AdamW, whose bf16 updates below half a bf16 step
    are lost. sharded: the params are FSDP2 DTensor shards."""
    if name == "adamw_kahan":
        import optimi  # lazy: only this optimizer needs it
        # optimi's Triton kernel indexes raw storage (on a DTensor: the global numel over a local shard) and
        # its foreach path wants plain tensors, so FSDP shards are pinned to its per-tensor loop of torch
        # ops, which DTensor runs on the local shard, rather than left to optimi's auto-detection
        kernels = {"triton": False, "foreach": False} if sharded else {}
        return optimi.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, eps=1e-8, kahan_sum=True, **kernels)
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, eps=1e-8)


def attach_optimizer_in_backward(model, make_optimizer, grad_sq: torch.Tensor) -> dict:
    """One AdamW per parameter, stepped as soon as its gradient is complete, then the gradient is freed.
    grad_sq accumulates the squared gradient norm for logging (it cannot be clipped: the norm comes too late);
    under FSDP each process sums its own shards (the caller all-reduces once per step)."""
    optimizers = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        optimizers[name] = make_optimizer([p])

        def step_and_free(param, opt=optimizers[name]):
            g = param.grad.to_local() if isinstance(param.grad, DTensor) else param.grad
            grad_sq.add_(g.float().norm() ** 2)
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


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def save_checkpoint(path: Path, model, tokenizer, train_state: dict | None, optimizers=None, rank: int = 0) -> None:
    """Write a HF model folder (+ train_state.pt, + the optimizer state under optimizer/) to a temp folder,
    then rename it into place. Every process calls it: FSDP gathers the weights, rank 0 writes them, and
    torch.distributed.checkpoint writes each process's optimizer shard."""
    tmp = path.with_name(path.name + ".tmp")
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))  # collective
    if model.config.get_text_config().tie_word_embeddings:  # gathered copies are no longer one tensor: keep one name
        full = {k: v for k, v in full.items() if k not in (getattr(model, "_tied_weights_keys", None) or ())}
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp, state_dict=full)  # config.json, model.safetensors, generation_config.json
        tokenizer.save_pretrained(tmp)
        if train_state is not None:
            torch.save(train_state, tmp / "train_state.pt")
    del full
    if optimizers is not None:
        barrier()  # tmp exists before any process writes into it
        dcp.save(get_optimizer_state_dict(model, optimizers), checkpoint_id=tmp / "optimizer", no_dist=not dist.is_initialized())
    barrier()
    if rank == 0:
        shutil.rmtree(path, ignore_errors=True)
        os.rename(tmp, path)
    barrier()


def export_model(run_dir: Path, model, tokenizer, rank: int = 0, trained: bool = True) -> None:
    """The model at the top of the run folder, written once (rank 0): saved whole into final/, moved file by
    file (each os.replace is atomic) with config.json last, NOT_TRAINED.txt set or cleared, then final/
    removed. So a folder with config.json and no final/ holds a complete export (make train's test); a
    killed export leaves final/ behind and a rerun exports again. Checkpoints and metrics are left as they are."""
    save_checkpoint(run_dir / "final", model, tokenizer, None, rank=rank)
    if rank == 0:
        for f in sorted((run_dir / "final").iterdir(), key=lambda f: f.name == "config.json"):
            os.replace(f, run_dir / f.name)
        if trained:  # a base model exported here before (--allow-no-samples) is replaced: its marker would lie
            (run_dir / "NOT_TRAINED.txt").unlink(missing_ok=True)
        else:
            (run_dir / "NOT_TRAINED.txt").write_text("no ok candidate in the trajectories: this is the base model\n")
        (run_dir / "final").rmdir()


def newest_checkpoint(run_dir: Path) -> Path | None:
    steps = sorted(run_dir.glob("step_*[0-9]"), key=lambda p: int(p.name.split("_")[1]))
    steps = [p for p in steps if (p / "train_state.pt").exists()]
    return steps[-1] if steps else None


def main(argv: list[str] | None = None) -> Path | None:
    argv = sys.argv[1:] if argv is None else argv
    # `torchrun ... train_rlao.py -- --run x`: torchrun's own parser takes --run for its --run-path, so the
    # launch line separates our flags with "--"
    args = executor.parse_args(Args, argv[1:] if argv[:1] == ["--"] else argv)

    # ---------------------------------------------------------------- setup: processes, flags, run dir, resume, seed
    # torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; a plain `python train_rlao.py` is one process without FSDP
    world_size, rank, local_rank = (int(os.environ.get(k, d)) for k, d in (("WORLD_SIZE", 1), ("RANK", 0), ("LOCAL_RANK", 0)))
    device = torch.device(args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if world_size > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    say = print if rank == 0 else (lambda *a, **k: None)  # one copy of the console output
    if rank != 0:
        warnings.simplefilter("ignore")
    run_dir = Path(args.out_dir) / args.run
    resume_from = newest_checkpoint(run_dir) if args.resume else None
    saved = None
    if resume_from is not None:
        # our own file (RNG states are not tensors); the optimizer state is loaded later, shard by shard
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
        say(f"--resume: no checkpoint in {run_dir}, starting from scratch")
    elif not args.dry_run and newest_checkpoint(run_dir) is not None:
        sys.exit(f"{run_dir} already holds checkpoints: pass --resume to continue it or choose another --run")
    # FSDP shards gradients already, so optimizer-in-backward is on by default only for one CUDA process
    use_oib = args.optimizer_in_backward if args.optimizer_in_backward is not None else device.type == "cuda" and world_size == 1
    dtype = getattr(torch, args.dtype)
    optimizer_name = args.optimizer if args.optimizer != "auto" else "adamw_kahan" if dtype == torch.bfloat16 else "adamw"
    # fail early, before any model loads, naming the flag to change (as torchtune does)
    if use_oib and args.grad_accum_steps > 1:
        sys.exit("optimizer-in-backward steps during backward, so gradients cannot accumulate: "
                 "set --grad-accum-steps 1 (raise --batch-size instead) or pass --no-optimizer-in-backward")
    if use_oib and args.max_grad_norm > 0:
        sys.exit("optimizer-in-backward cannot clip by global norm (each parameter steps before the norm is known): "
                 "set --max-grad-norm 0 or pass --no-optimizer-in-backward")
    if not 0 <= args.eval_fraction < 1 or args.batch_size < 1 or args.grad_accum_steps < 1:
        sys.exit("need 0 <= --eval-fraction < 1, --batch-size >= 1 and --grad-accum-steps >= 1")
    say("config: " + json.dumps(dataclasses.asdict(args)))
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    # ---------------------------------------------------------------- data: trajectories -> weighted samples
    # every process reads and plans the same data; each trains its own slice of every micro-batch
    model_path = str(executor.embedded_model_dir()) if args.model == executor.EMBEDDED else args.model
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    records, skipped = read_candidates(args.trajectories, min_reward=args.min_reward, turns=args.turns, benchmarks=args.benchmarks)
    samples, dropped = build_samples(records, tokenizer, tau=args.tau, max_len=args.max_len,
                                     loss_on_all_tokens=args.loss_on_all_tokens)
    say(describe_samples(samples, dropped, skipped))
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
    say(f"train samples: {len(train)} | held-out samples: {len(held_out)} ({len(eval_keys)} states)")
    # the plan holds global micro-batches (batch size x processes), so N processes see the batches of one
    steps = plan_batches([len(s["input_ids"]) for s in train], batch_size=args.batch_size * world_size,
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
                       tokens=args.batch_size * args.max_len, bytes_per_el=dtype.itemsize,
                       kahan=optimizer_name == "adamw_kahan" and dtype == torch.bfloat16, optimizer_in_backward=use_oib,
                       checkpointing=args.enable_activation_checkpointing, logits_chunk_tokens=args.logits_chunk_tokens,
                       num_shards=world_size)
    del shapes
    say(f"memory plan per process ({num_params / 1e9:.2f}B parameters, {args.dtype}, {optimizer_name}, "
        f"{args.batch_size} x {args.max_len} tokens, {world_size} process(es), optimizer-in-backward "
        f"{'on' if use_oib else 'off'}, activation checkpointing {'on' if args.enable_activation_checkpointing else 'off'}): "
        + " | ".join(f"{k} {v:.1f} GiB" for k, v in plan.items()))
    if args.dry_run:
        return None
    if (not train or num_steps == 0) and args.allow_no_samples:
        # Refused, not exported, over trained work: its trajectories gave samples, so these are other ones
        # (--resume would stop on them too), and the base model on top would pass the run off as untrained
        trained = [p.name for p in sorted(run_dir.glob("step_*[0-9]"))]
        if (run_dir / "model.safetensors").exists() and not (run_dir / "NOT_TRAINED.txt").exists():
            trained.append("model.safetensors")
        if trained:
            sys.exit(f"{run_dir} holds trained work ({', '.join(trained)}) but these trajectories give no training "
                     "sample: nothing exported, nothing deleted; check --trajectories and the filters, or choose another --run")
        # A 135M meta-agent may write no working workflow at all: say so loudly and hand the next stage
        # the base model, so a small pipeline still runs end to end. Nothing is trained.
        say(f"NO TRAINING SAMPLES: {run_dir} gets the base model {args.model} unchanged (--allow-no-samples)")
        export_model(run_dir, AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype), tokenizer, rank,
                     trained=False)
        return run_dir
    if not train or num_steps == 0:
        sys.exit("no training step: no samples left after the filters, or fewer than one step's worth "
                 "(--allow-no-samples exports the base model instead)")
    run_dir.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        (run_dir / "train_config.json").write_text(json.dumps(dict(dataclasses.asdict(args), device=str(device),
                                                   world_size=world_size, optimizer_used=optimizer_name,
                                                   optimizer_in_backward_on=use_oib, num_steps=num_steps), indent=1))

    # ---------------------------------------------------------------- model
    flash = device.type == "cuda" and dtype == torch.bfloat16 and importlib.util.find_spec("flash_attn") is not None
    # under FSDP each process loads the full model on the CPU; fully_shard moves only its shards to the device
    model = AutoModelForCausalLM.from_pretrained(str(resume_from or model_path), dtype=dtype,
                                                 device_map=str(device) if world_size == 1 else "cpu",
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
    loss_module = RWRLoss(model, args.logits_chunk_tokens)
    if world_size > 1:
        # FSDP2: one unit per decoder layer (HF lists the layer classes that must not be split), then the root
        # (embedding, final norm, head) around the loss; gradients are averaged over the processes
        mesh = init_device_mesh(device.type, (world_size,))
        for m in model.modules():
            if type(m).__name__ in model._no_split_modules:
                fully_shard(m, mesh=mesh)
        fully_shard(loss_module, mesh=mesh)
    model.train()

    # ---------------------------------------------------------------- optimizer and schedule
    def new_optimizer(params):
        return make_optimizer(params, optimizer_name, lr=args.lr, betas=(args.beta1, args.beta2), weight_decay=args.weight_decay,
                              sharded=world_size > 1)
    grad_sq = torch.zeros((), device=device)  # squared grad norm summed by the optimizer-in-backward hooks
    params = [p for p in model.parameters() if p.requires_grad]  # after fully_shard: the local shards
    optimizers = list(attach_optimizer_in_backward(model, new_optimizer, grad_sq).values()) if use_oib else [new_optimizer(params)]
    start_step = 0
    if saved is not None:
        if saved["fingerprint"] != fingerprint:
            sys.exit(f"the training samples differ from those of {resume_from} (trajectories changed?): resuming would "
                     "not continue the same run; start a new --run")
        # every process reads its own shard of the optimizer state (moments, Kahan buffers, step counts)
        optimizer_state = get_optimizer_state_dict(model, optimizers)
        dcp.load(optimizer_state, checkpoint_id=resume_from / "optimizer", no_dist=not dist.is_initialized())
        set_optimizer_state_dict(model, optimizers, optimizer_state)
        del optimizer_state
        # load_state_dict restored the checkpoint's hyperparameters: the command line's win (see KEPT_ON_RESUME)
        for o in optimizers:
            for g in o.param_groups:
                g.update({k: o.defaults[k] for k in OPTIMIZER_HPARAMS if k in g})
        steps, start_step = saved["steps"], saved["step"]
        rng = saved["rng"][rank % len(saved["rng"])]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"])
        say(f"resumed from {resume_from} at step {start_step}")
    # the schedule is a function of the step: built here at start_step from --lr, so a changed --lr (or warmup,
    # min-lr-ratio) on --resume is applied; one LambdaLR per optimizer, the same factor everywhere
    lr_lambda = lr_lambda_factory(num_steps, math.ceil(args.warmup_frac * num_steps), args.min_lr_ratio)
    for o in optimizers:
        for g in o.param_groups:
            g["lr"] = g["initial_lr"] = args.lr
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lr_lambda, last_epoch=start_step - 1) for o in optimizers]
    metrics_path = run_dir / "metrics.jsonl"
    if rank == 0 and metrics_path.exists():  # drop lines logged after the checkpoint we resume from (or all, on a fresh start)
        # read as every log is (a torn last line, a killed write, is dropped), rewritten whole by a rename
        rows = [r for r in read_jsonl(metrics_path, cut_torn_tail=False) if r["step"] <= start_step]
        tmp = metrics_path.with_name(metrics_path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.replace(tmp, metrics_path)
    metrics = open(metrics_path, "a") if rank == 0 else None

    def log(row: dict) -> None:
        if metrics is not None:
            metrics.write(json.dumps(row) + "\n")
            metrics.flush()

    def checkpoint_now(step: int) -> None:
        rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None}
        rngs = [rng]
        if world_size > 1:  # every process's RNG, restored per rank on --resume
            rngs = [None] * world_size
            dist.all_gather_object(rngs, rng)
        state = {"step": step, "args": dataclasses.asdict(args), "steps": steps, "rng": rngs, "fingerprint": fingerprint,
                 "world_size": world_size}
        save_checkpoint(run_dir / f"step_{step:06d}", model, tokenizer, state, optimizers, rank)
        if rank == 0:
            for old in sorted(run_dir.glob("step_*[0-9]"), key=lambda p: int(p.name.split("_")[1]))[:-args.num_checkpoints_kept]:
                shutil.rmtree(old)

    # ---------------------------------------------------------------- train loop
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    bar = tqdm(range(start_step, num_steps), initial=start_step, total=num_steps, desc="train", dynamic_ncols=True,
               disable=rank != 0)
    for step in bar:
        # lr: the schedulers advanced after the previous step
        lr = schedulers[0].get_last_lr()[0]
        # periodic eval, then checkpoint, before the step: step_<N>/ holds the model after N updates (and the
        # eval of step N is already logged, so a resume from it neither repeats nor loses a line)
        if held_out and args.eval_every and step > start_step and step % args.eval_every == 0:
            ev = evaluate_loss(loss_module, held_out, batch_size=args.batch_size, pad_id=pad_id, device=device)
            log({"step": step, **ev})
            say(f"step {step} | eval loss {ev['eval/loss']:.4f} | eval weighted loss {ev['eval/weighted_loss']:.4f}")
        if args.save_every and step > start_step and step % args.save_every == 0:
            checkpoint_now(step)
        t0 = time.time()
        # batch: this step's global micro-batches, fixed by the plan so a resume replays the same order; this
        # process takes every world_size-th sample (disjoint slices; lengths stay balanced)
        micro = [[train[i] for i in mb] for mb in steps[step]]
        num_samples = sum(len(mb) for mb in micro)  # global
        nll_sum = wnll_sum = 0.0
        num_tokens = 0
        for mb in micro:
            mine = mb[rank::world_size]
            # a process left without a sample still runs forward/backward (FSDP's collectives need every
            # process): it trains on a copy of one sample with weight 0, which adds nothing to the gradient
            b = collate(mine or [dict(mb[0], weight=0.0)], pad_id, device)
            # forward / loss: each process divides by the global sample count; FSDP averages the gradients over
            # the world_size processes, so the loss is scaled back up by world_size
            loss, nll_sample = loss_module(b["input_ids"], b["attention_mask"], b["labels"], b["weights"],
                                           num_samples / world_size)
            # backward; with --optimizer-in-backward every parameter is also stepped and its gradient freed here
            loss.backward()
            if mine:
                nll_sum += nll_sample.sum().item()  # host sync, once per micro-batch
                wnll_sum += (b["weights"] * nll_sample).sum().item()
                num_tokens += int(b["attention_mask"].sum())
        if use_oib:
            if world_size > 1:  # the hooks summed this process's shards
                dist.all_reduce(grad_sq)
            grad_norm = grad_sq.sqrt().item()
            grad_sq.zero_()
        else:
            # clip (max-grad-norm 0 = no clipping, the norm is still measured)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm if args.max_grad_norm > 0 else float("inf"))
            grad_norm = (grad_norm.full_tensor() if isinstance(grad_norm, DTensor) else grad_norm).item()
            # step
            optimizers[0].step()
            optimizers[0].zero_grad(set_to_none=True)
        for sch in schedulers:
            sch.step()
        # log: sums over the processes
        if world_size > 1:
            sums = torch.tensor([nll_sum, wnll_sum, num_tokens], dtype=torch.float64, device=device)
            dist.all_reduce(sums)
            nll_sum, wnll_sum, num_tokens = sums.tolist()
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
        say(f"step {step + 1}/{num_steps} | loss {row['train/loss']:.4f} | weighted loss {row['train/weighted_loss']:.4f} "
            f"| lr {lr:.2e} | grad norm {grad_norm:.3f} | tok/s {row['sys/tokens_per_s']:.0f} | mem {peak_gib:.2f} GiB "
            f"| {dt:.2f}s", flush=True)
        # stop check
        if not math.isfinite(row["train/loss"]):
            sys.exit(f"loss is {row['train/loss']} at step {step + 1}: stopping (lower --lr?)")

    # ---------------------------------------------------------------- final eval, checkpoint and export
    if held_out:
        ev = evaluate_loss(loss_module, held_out, batch_size=args.batch_size, pad_id=pad_id, device=device)
        log({"step": num_steps, **ev})
        say(f"final eval loss {ev['eval/loss']:.4f} | eval weighted loss {ev['eval/weighted_loss']:.4f}")
    if not (run_dir / f"step_{num_steps:06d}").exists():
        checkpoint_now(num_steps)
    export_model(run_dir, model, tokenizer, rank)
    if rank == 0:
        metrics.close()
    say(f"done: {run_dir}")
    if world_size > 1:
        dist.destroy_process_group()
    return run_dir


if __name__ == "__main__":
    main()

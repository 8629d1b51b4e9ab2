"""The training recipe (training child only): LoRA or full fine-tune of a causal LM.

A plain loop, chosen over ``transformers.Trainer`` for throughput and a small surface:

- loss only on completion tokens, each token's loss scaled by its sample's weight and
  summed over the optimizer step's target tokens (so weights change how much a sample
  counts); logits are computed only at target positions (no vocabulary-wide logits for
  prompt or padding tokens);
- each optimizer step takes ``batch_size * gradient_accumulation_steps`` random samples and
  runs them longest first in forward passes of at most ``micro_batch_tokens`` padded
  tokens, without an attention mask (on a CPU one sample per pass: no padding), or packed
  (see ``batching``);
- eval loss of the untrained model (step 0), at ``eval_steps`` and at each checkpoint, and
  at the end; checkpoints under ``checkpoints/step-N/`` every ``save_steps`` (at most
  ``save_total_limit``, the best by eval loss always kept);
- the artifact is the best state by eval loss: ``adapter/`` (LoRA, peft safetensors) or
  ``model/`` (full, safetensors), each with the tokenizer; ``--merge`` also writes the
  adapter merged into the base under ``model/``.

bf16 and gradient checkpointing ``auto``: on only on a CUDA device (bf16 where supported,
gradient checkpointing for models of 2B parameters and more). On a CPU both stay off unless
set to true: fp32 is exact and, at CPU batch sizes, memory is not the limit.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from services.training.batching import (
    IGNORE,
    Batch,
    Example,
    collate,
    collate_packed,
    encode,
    packed_rows,
    plan_steps,
    split_step,
)
from services.training.config import ResolvedConfig, TrainingConfig
from services.training.dataset_reader import Selection
from services.training.errors import BadInputError
from services.training.progress import ProgressWriter

log = structlog.get_logger(__name__)

# Config attributes of models whose logits are more than ``lm_head(hidden)``.
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")
VARLEN_ATTENTION = ("flash_attention_2", "flash_attention_3")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise BadInputError("--device cuda: no CUDA device is available")
    return torch.device(name)


class TokenLoss:
    """Cross-entropy at every target position: (losses, weights), both 1-D."""

    def __init__(self, model: torch.nn.Module, base: Any):
        self.model = model
        self.decoder = base.get_decoder()
        self.head = base.get_output_embeddings()
        config = base.config.get_text_config()
        self.fast = (
            self.decoder is not base
            and self.head is not None
            and not any(getattr(config, k, None) for k in LOGIT_TRANSFORMS)
        )

    def __call__(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        targets = batch.labels[:, 1:]
        keep = targets != IGNORE
        if self.fast:
            hidden = self.decoder(
                input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False
            ).last_hidden_state
            logits = self.head(hidden[:, :-1][keep])
        else:
            out = self.model(
                input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False
            )
            logits = out.logits[:, :-1][keep]
        losses = F.cross_entropy(logits.float(), targets[keep], reduction="none")
        return losses, batch.weights[:, 1:][keep]


def lr_lambda(scheduler: str, warmup: int, total: int) -> Callable[[int], float]:
    """The learning rate factor of step ``s`` (0-based): linear warm-up, then the schedule."""

    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / (warmup + 1)
        progress = (s - warmup) / max(1, total - warmup)
        if scheduler == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        if scheduler == "linear":
            return max(0.0, 1 - progress)
        return 1.0

    return factor


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loss: TokenLoss,
    batches: list[Batch],
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]],
) -> float | None:
    """Mean cross-entropy per completion token (unweighted); None without eval data."""
    if not batches:
        return None
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        with autocast():
            losses, _ = loss(batch.to(device))
        total += float(losses.sum())
        count += losses.numel()
    model.train(was_training)
    return total / max(count, 1)


def packing_works(loss: TokenLoss, examples: list[Example], device: torch.device) -> bool:
    """Whether the model keeps packed samples apart: the token losses of two samples packed
    into one row must equal their losses computed apart (the packed row masks the second
    sample's first token, which has no context within its sample, so the counts match)."""
    pair = [Example(e.input_ids[:32], 0, 1.0) for e in examples[:2]]
    if len(pair) < 2:
        return False
    was_training = loss.model.training
    loss.model.eval()
    with torch.no_grad():
        apart = torch.cat([loss(collate([e], 0).to(device))[0] for e in pair])
        packed = loss(collate_packed([pair], 0).to(device))[0]
    loss.model.train(was_training)
    return packed.shape == apart.shape and torch.allclose(packed, apart, atol=1e-4)


@dataclass
class Plan:
    """The optimizer steps of each epoch, each step a list of micro-batches (see ``batching``):
    lists of example indices, or with packing lists of rows of example indices."""

    examples: list[Example]
    cfg: TrainingConfig
    packing: bool
    budget: int  # padded tokens per micro-batch

    @property
    def per_step(self) -> int:
        return self.cfg.batch_size * self.cfg.gradient_accumulation_steps

    def total_steps(self) -> int:
        if self.cfg.max_steps is not None:
            return self.cfg.max_steps
        return self.cfg.num_epochs * -(-len(self.examples) // self.per_step)

    def steps(self) -> Iterator[tuple[int, list[Any]]]:
        lengths = [len(e) for e in self.examples]
        for epoch in itertools.count():
            rng = random.Random(self.cfg.seed + epoch)
            for step in plan_steps(len(lengths), self.per_step, rng):
                yield epoch, self._split(step, lengths)

    def _split(self, step: list[int], lengths: list[int]) -> list[Any]:
        if not self.packing:
            return split_step(step, lengths, self.budget)
        step_lengths = [lengths[i] for i in step]
        rows = [
            [step[j] for j in row] for row in packed_rows(step_lengths, self.cfg.max_seq_length)
        ]
        row_lengths = [sum(lengths[i] for i in row) for row in rows]
        groups = split_step(range(len(rows)), row_lengths, self.budget)
        return [[rows[r] for r in group] for group in groups]

    def collate(self, group: Any, pad_id: int) -> Batch:
        if self.packing:
            return collate_packed([[self.examples[i] for i in row] for row in group], pad_id)
        return collate([self.examples[i] for i in group], pad_id)


class Checkpoints:
    """``checkpoints/step-N/`` directories, at most ``limit``, the best by eval loss kept.
    Checkpoints an earlier attempt left in the run directory are removed first."""

    def __init__(self, root: Path, limit: int):
        shutil.rmtree(root, ignore_errors=True)
        self.root = root
        self.limit = limit
        self.saved: list[tuple[int, Path, float | None]] = []

    def best(self) -> tuple[int, Path, float | None] | None:
        scored = [c for c in self.saved if c[2] is not None]
        return min(scored, key=lambda c: (c[2], -c[0])) if scored else None

    def save(self, model: Any, step: int, eval_loss: float | None) -> Path:
        path = self.root / f"step-{step}"
        model.save_pretrained(path)
        self.saved.append((step, path, eval_loss))
        best = self.best()
        while len(self.saved) > self.limit:
            victim = next(c for c in self.saved if c is not best)
            shutil.rmtree(victim[1], ignore_errors=True)
            self.saved.remove(victim)
        return path


def load_model(
    base_dir: Path,
    kind: str,
    cfg: TrainingConfig,
    device: torch.device,
    dtype: torch.dtype,
    checkpointing: bool,
) -> tuple[Any, Any]:
    """(the model to train, the transformers model under it): for LoRA a peft model whose
    adapters are the only trainable weights, for a full fine-tune the model itself."""
    base: Any = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
    base.to(device)
    model: Any = base
    if kind == "lora":
        from peft import LoraConfig, get_peft_model

        lora = cfg.lora
        config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora.target_modules,
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(base, config)
    if checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, base


def write_artifact(
    run_dir: Path, kind: str, model: Any, tokenizer: Any, checkpoint: Path | None
) -> Path:
    """``adapter/`` or ``model/`` with the tokenizer: a copy of ``checkpoint`` when given,
    else the model's current state. Written beside, then renamed into place."""
    artifact = run_dir / ("adapter" if kind == "lora" else "model")
    tmp = run_dir / f".{artifact.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if checkpoint is not None:
        shutil.copytree(checkpoint, tmp)
    else:
        model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(artifact, ignore_errors=True)
    os.rename(tmp, artifact)
    return artifact


def train(
    *,
    run_dir: Path,
    kind: str,
    base_dir: Path,
    resolved: ResolvedConfig,
    selection: Selection,
    device_name: str,
    merge: bool,
    progress: ProgressWriter,
) -> tuple[Path, dict[str, Any]]:
    """Train, write the artifact, emit progress events; return the artifact's path and the
    ``done`` metrics."""
    cfg = resolved.config
    started = time.perf_counter()
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    device = pick_device(device_name)
    cuda = device.type == "cuda"
    bf16 = cfg.bf16 if isinstance(cfg.bf16, bool) else cuda and torch.cuda.is_bf16_supported()
    checkpointing = (
        cfg.gradient_checkpointing
        if isinstance(cfg.gradient_checkpointing, bool)
        else cuda and resolved.model.category not in ("tiny", "small")
    )

    warnings = list(selection.warnings)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    train_examples, truncated = encode(selection.train, tokenizer, cfg.max_seq_length)
    eval_examples, eval_truncated = encode(selection.eval, tokenizer, cfg.max_seq_length)

    dtype = torch.bfloat16 if bf16 and cuda and kind == "lora" else torch.float32
    model, base = load_model(base_dir, kind, cfg, device, dtype, checkpointing)
    model.train()
    loss_fn = TokenLoss(model, base)

    if cfg.packing is True or (
        cfg.packing == "auto" and base.config._attn_implementation in VARLEN_ATTENTION
    ):
        packing = packing_works(loss_fn, train_examples, device)
        if not packing:
            warnings.append("packing asked for but this model mixes packed samples: not packed")
    else:
        packing = False

    def autocast() -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    if isinstance(cfg.micro_batch_tokens, int):
        budget = cfg.micro_batch_tokens
    else:  # a CPU runs fastest one sample per pass: no padding at all
        budget = cfg.batch_size * cfg.max_seq_length if cuda else 1
    plan = Plan(train_examples, cfg, packing, budget)
    total = plan.total_steps()
    order = sorted(range(len(eval_examples)), key=lambda i: len(eval_examples[i]))
    eval_batches = [
        collate([eval_examples[i] for i in order[j : j + cfg.batch_size]], pad_id)
        for j in range(0, len(order), cfg.batch_size)
    ]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=cfg.learning_rate,
    )
    warmup = math.ceil(cfg.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(cfg.lr_scheduler, warmup, total)
    )

    strategy = "packed" if packing else "length-sorted"
    progress.emit(
        "start",
        total_steps=total,
        kind=kind,
        n_train=len(train_examples),
        n_eval=len(eval_examples),
        device=device.type,
        bf16=bf16,
        gradient_checkpointing=checkpointing,
        strategy=strategy,
        micro_batch_tokens=budget,
        trainable_params=sum(p.numel() for p in params),
        total_params=sum(p.numel() for p in model.parameters()),
        truncated=truncated + eval_truncated,
    )
    log.info("training", kind=kind, steps=total, train=len(train_examples), strategy=strategy)

    def run_eval(step: int) -> float | None:
        value = evaluate(model, loss_fn, eval_batches, device, autocast)
        if value is not None:
            progress.emit("eval", step=step, eval_loss=value)
            log.info("eval", step=step, eval_loss=round(value, 4))
        return value

    initial_eval = run_eval(0)
    checkpoints = Checkpoints(run_dir / "checkpoints", cfg.save_total_limit)
    tokens = slots = 0
    train_seconds = train_cpu_seconds = 0.0
    step, loss_value, epoch = 0, float("nan"), 0
    steps = plan.steps()
    while step < total:
        epoch, group = next(steps)
        tick, cpu_tick = time.perf_counter(), time.process_time()
        batches = [plan.collate(g, pad_id).to(device) for g in group]
        n_targets = max(1, sum(b.n_targets for b in batches))
        loss_sum, loss_count = 0.0, 0
        for batch in batches:
            with autocast():
                losses, weights = loss_fn(batch)
            ((losses * weights).sum() / n_targets).backward()
            loss_sum += float(losses.detach().sum())
            loss_count += losses.numel()
            tokens += batch.n_tokens
            slots += batch.n_slots
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        train_seconds += time.perf_counter() - tick
        train_cpu_seconds += time.process_time() - cpu_tick
        loss_value = loss_sum / max(loss_count, 1)
        progress.emit(
            "step",
            step=step,
            epoch=epoch,
            loss=loss_value,
            lr=lr,
            grad_norm=grad_norm,
            tokens_per_s=tokens / train_seconds,
            eta_s=(total - step) * train_seconds / step,
        )
        log.info("step", step=f"{step}/{total}", loss=round(loss_value, 4), lr=f"{lr:.3g}")
        if step == total:
            break
        if step % cfg.save_steps == 0:
            value = run_eval(step)
            path = checkpoints.save(model, step, value)
            progress.emit("checkpoint", step=step, path=str(path), eval_loss=value)
        elif cfg.eval_steps is not None and step % cfg.eval_steps == 0:
            run_eval(step)

    final_eval = run_eval(step)
    best = checkpoints.best()
    from_checkpoint = (
        best is not None and final_eval is not None and best[2] is not None and best[2] < final_eval
    )
    if from_checkpoint and best is not None:
        best_step, best_eval, checkpoint = best[0], best[2], best[1]
    else:
        best_step, best_eval, checkpoint = step, final_eval, None
    artifact = write_artifact(run_dir, kind, model, tokenizer, checkpoint)
    log.info("artifact written", path=str(artifact), best_step=best_step)

    metrics: dict[str, Any] = {
        "kind": kind,
        "steps": step,
        "epochs": epoch + 1,
        "train_loss": loss_value,
        "eval_loss": best_eval,
        "eval_loss_initial": initial_eval,
        "eval_loss_final": final_eval,
        "best_step": best_step,
        "n_train": len(train_examples),
        "n_eval": len(eval_examples),
        "truncated": truncated + eval_truncated,
        "train_tokens": tokens,
        "tokens_per_s": tokens / train_seconds if train_seconds else None,
        "padding_share": 1 - tokens / slots if slots else 0.0,
        "strategy": strategy,
        "device": device.type,
        "bf16": bf16,
        "gradient_checkpointing": checkpointing,
        "train_seconds": train_seconds,
        "train_cpu_seconds": train_cpu_seconds,
        "warnings": warnings,
    }
    if kind == "lora" and (merge or cfg.merge_lora):
        from services.training.merge import merge_adapter

        del model, base, optimizer
        gc.collect()
        metrics["merged"] = str(merge_adapter(base_dir, artifact, run_dir / "model"))
    metrics["total_seconds"] = time.perf_counter() - started
    return artifact, metrics

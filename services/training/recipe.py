"""The training recipe (training child only): LoRA or full fine-tune of a causal LM.

:class:`FineTuneRecipe` runs one run's training in the order the child calls it:
:meth:`~FineTuneRecipe.setup` (seed, device and precision, tokenizer and examples, model,
step plan, optimizer and learning rate schedule; the ``start`` event),
:meth:`~FineTuneRecipe.train` (the optimizer steps with their evaluations and checkpoints,
then the artifact and the ``done`` metrics), :meth:`~FineTuneRecipe.cleanup`.

A plain loop, chosen over ``transformers.Trainer`` for throughput and a small surface:

- loss only on completion tokens, each token's loss scaled by its sample's weight and
  summed over the optimizer step's target tokens (so weights change how much a sample
  counts); logits are computed only at target positions (no vocabulary-wide logits for
  prompt or padding tokens; see ``loss``);
- each optimizer step takes ``batch_size * gradient_accumulation_steps`` random samples and
  runs them longest first in forward passes of at most ``micro_batch_tokens`` padded
  tokens, without an attention mask (on a CPU one sample per pass: no padding), or packed
  (see ``plan`` and ``batching``);
- eval loss of the untrained model (step 0), at ``eval_steps`` and at each checkpoint, and
  at the end; checkpoints under ``checkpoints/step-N/`` every ``save_steps`` (at most
  ``save_total_limit``, the best by eval loss always kept; see ``checkpoints``);
- the artifact is the best state by eval loss: ``adapter/`` (LoRA, peft safetensors) or
  ``model/`` (full, safetensors), each with the tokenizer; ``--merge`` also writes the
  adapter merged into the base under ``model/``, after ``lora.scale`` kept its share of the
  adapter (``adapter_scale``; the ``done`` metrics' ``adapter_scale`` says what was kept);
- ``lora.anchor``: each step also pays a penalty for drifting from the base on a general
  conversation (``anchor``; the ``step`` events' ``anchor_kl``).

bf16 and gradient checkpointing ``auto``: on only on a CUDA device (bf16 where supported,
gradient checkpointing for models of 2B parameters and more). On a CPU both stay off unless
set to true: fp32 is exact and, at CPU batch sizes, memory is not the limit.
"""

from __future__ import annotations

import contextlib
import gc
import random
import time
from pathlib import Path
from typing import Any

import structlog
import torch
from transformers import AutoTokenizer

from services.training.adapter_scale import scale_adapter
from services.training.anchor import AnchorLoss, anchor_loss
from services.training.batching import Batch, Example, collate, encode
from services.training.checkpoints import Checkpoints, write_artifact
from services.training.config import ResolvedConfig
from services.training.dataset_reader import Selection
from services.training.errors import BadInputError
from services.training.inference import pick_device
from services.training.loss import TokenLoss, eval_loss, packing_works
from services.training.memory_plan import STRATEGIES
from services.training.model_load import load_model
from services.training.plan import Plan, lr_lambda, warmup_steps
from services.training.progress import ProgressWriter, Tally

log = structlog.get_logger(__name__)

VARLEN_ATTENTION = ("flash_attention_2", "flash_attention_3")


def _lower(a: float | None, b: float | None) -> bool:
    """Whether both losses are known and ``a`` is the lower."""
    return a is not None and b is not None and a < b


class FineTuneRecipe:
    """One run's fine-tune: :meth:`setup`, :meth:`train`, :meth:`cleanup` (see the module
    docstring). Progress events go to ``progress``."""

    device: torch.device
    bf16: bool
    checkpointing: bool
    tokenizer: Any
    pad_id: int
    train_examples: list[Example]
    eval_examples: list[Example]
    eval_batches: list[Batch]
    truncated: int
    packing: bool
    plan: Plan
    total: int
    params: list[torch.nn.Parameter]
    checkpoints: Checkpoints

    def __init__(
        self,
        *,
        run_dir: Path,
        kind: str,
        base_dir: Path,
        resolved: ResolvedConfig,
        selection: Selection,
        device_name: str,
        merge: bool,
        progress: ProgressWriter,
    ):
        self.run_dir = run_dir
        self.kind = kind
        self.base_dir = base_dir
        self.resolved = resolved
        self.cfg = resolved.config
        self.selection = selection
        self.device_name = device_name
        self.merge = merge
        self.progress = progress
        self.warnings = list(selection.warnings)
        self.tally = Tally()
        self.started = time.perf_counter()
        self.model: Any = None
        self.base: Any = None
        self.loss_fn: TokenLoss | None = None
        self.anchor: AnchorLoss | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None

    # -- setup ---------------------------------------------------------------------------

    def setup(self) -> None:
        """Everything the loop needs, then the ``start`` event."""
        self.started = time.perf_counter()
        random.seed(self.cfg.seed)
        torch.manual_seed(self.cfg.seed)
        self._setup_device()
        self._setup_data()
        self._setup_model()
        self._setup_plan()
        self._setup_optimizer()
        self._emit_start()

    def _setup_device(self) -> None:
        cfg = self.cfg
        self.device = pick_device(self.device_name)
        cuda = self.device.type == "cuda"
        self.bf16 = (
            cfg.bf16 if isinstance(cfg.bf16, bool) else cuda and torch.cuda.is_bf16_supported()
        )
        self.checkpointing = (
            cfg.gradient_checkpointing
            if isinstance(cfg.gradient_checkpointing, bool)
            else cuda and self.resolved.model.category not in ("tiny", "small")
        )

    def _setup_data(self) -> None:
        """The tokenizer, the tokenized train and eval examples, the eval batches (shortest
        first, ``batch_size`` each)."""
        cfg = self.cfg
        self.tokenizer = tokenizer = AutoTokenizer.from_pretrained(self.base_dir)
        pad_id = tokenizer.pad_token_id
        if pad_id is None:
            pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.pad_id = pad_id
        train, truncated = encode(self.selection.train, tokenizer, cfg.max_seq_length)
        held, eval_truncated = encode(self.selection.eval, tokenizer, cfg.max_seq_length)
        self.train_examples, self.eval_examples = train, held
        self.truncated = truncated + eval_truncated
        order = sorted(range(len(held)), key=lambda i: len(held[i]))
        self.eval_batches = [
            collate([held[i] for i in order[j : j + cfg.batch_size]], pad_id)
            for j in range(0, len(order), cfg.batch_size)
        ]

    @property
    def memory_strategy(self) -> str:
        """The memory plan's strategy (``memory_plan``): full, full-8bit, lora or qlora."""
        plan = self.resolved.plan or {}
        strategy = str(plan.get("strategy") or self.kind)
        if strategy not in STRATEGIES[self.kind]:
            raise BadInputError(f"memory plan {strategy!r} does not train a {self.kind}")
        return strategy

    def _setup_model(self) -> None:
        """The model (bf16 weights only for LoRA on CUDA; 4-bit for QLoRA), its loss, and
        whether to pack."""
        lowered = self.bf16 and self.device.type == "cuda" and self.kind == "lora"
        dtype = torch.bfloat16 if lowered else torch.float32
        self.model, self.base = load_model(
            self.base_dir,
            self.kind,
            self.cfg,
            self.device,
            dtype,
            self.checkpointing,
            self.memory_strategy,
        )
        self.model.train()
        self.loss_fn = TokenLoss(self.model, self.base)
        self.anchor = anchor_loss(self)
        packing = self.cfg.packing
        if packing is True or (
            packing == "auto" and self.base.config._attn_implementation in VARLEN_ATTENTION
        ):
            self.packing = packing_works(self.loss_fn, self.train_examples, self.device)
            if not self.packing:
                self.warnings.append(
                    "packing asked for but this model mixes packed samples: not packed"
                )
        else:
            self.packing = False

    def _setup_plan(self) -> None:
        cfg = self.cfg
        if isinstance(cfg.micro_batch_tokens, int):
            budget = cfg.micro_batch_tokens
        elif self.device.type == "cuda":
            budget = cfg.batch_size * cfg.max_seq_length
        else:  # a CPU runs fastest one sample per pass: no padding at all
            budget = 1
        self.plan = Plan(self.train_examples, cfg, self.packing, budget)
        self.total = self.plan.total_steps()

    def _setup_optimizer(self) -> None:
        """AdamW (no weight decay on biases and norms) and the warm-up + schedule."""
        cfg = self.cfg
        self.params = params = [p for p in self.model.parameters() if p.requires_grad]
        adamw: Any = torch.optim.AdamW
        if self.memory_strategy == "full-8bit":
            from services.training.quantized import optimizer_class

            adamw = optimizer_class(self.device)
        self.optimizer = adamw(
            [
                {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
                {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
            ],
            lr=cfg.learning_rate,
        )
        warmup = warmup_steps(cfg, self.total)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(cfg.lr_scheduler, warmup, self.total)
        )

    @property
    def strategy(self) -> str:
        return "packed" if self.packing else "length-sorted"

    def _emit_start(self) -> None:
        self.progress.emit(
            "start",
            total_steps=self.total,
            kind=self.kind,
            n_train=len(self.train_examples),
            n_eval=len(self.eval_examples),
            device=self.device.type,
            bf16=self.bf16,
            gradient_checkpointing=self.checkpointing,
            strategy=self.strategy,
            micro_batch_tokens=self.plan.budget,
            memory_strategy=self.memory_strategy,
            optimizer=type(self.optimizer).__name__,
            quantized_layers=self._quantized_layers(),
            trainable_params=sum(p.numel() for p in self.params),
            total_params=sum(p.numel() for p in self.model.parameters()),
            truncated=self.truncated,
        )
        log.info(
            "training",
            kind=self.kind,
            steps=self.total,
            train=len(self.train_examples),
            strategy=self.strategy,
        )

    def _quantized_layers(self) -> int:
        if self.memory_strategy != "qlora":
            return 0
        from services.training.quantized import quantized_layers

        return quantized_layers(self.model)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    # -- training ------------------------------------------------------------------------

    def train(self) -> tuple[Path, dict[str, Any]]:
        """The optimizer steps (evaluations and checkpoints on the way), the final
        evaluation, the artifact; the model is released before the LoRA merge (when asked
        for). Returns the artifact's path and the ``done`` metrics."""
        initial_eval = self.evaluate(0)
        self.checkpoints = Checkpoints(self.run_dir / "checkpoints", self.cfg.save_total_limit)
        steps = self.plan.steps()
        while self.tally.step < self.total:
            epoch, group = next(steps)
            self._train_step(epoch, group)
            if self.tally.step == self.total:
                break
            self._between_steps(self.tally.step)
        final_eval = self.evaluate(self.tally.step)
        artifact, best_step, best_eval = self.save_artifact(final_eval)
        metrics = self._metrics(initial_eval, final_eval, best_step, best_eval)
        self._release()
        if self.kind == "lora" and self.cfg.lora.scale != 1.0:
            metrics["adapter_scale"] = scale_adapter(
                artifact,
                self.base_dir,
                self.cfg.lora.scale,
                self.run_dir,
                self.device.type,
                self.cfg.max_seq_length,
            )
        if self.kind == "lora" and (self.merge or self.cfg.merge_lora):
            from services.training.merge import merge_adapter

            merged = merge_adapter(self.base_dir, artifact, self.run_dir / "model")
            metrics["merged"] = str(merged)
        metrics["total_seconds"] = time.perf_counter() - self.started
        return artifact, metrics

    def _train_step(self, epoch: int, group: list[Any]) -> None:
        """One optimizer step over the micro-batches of ``group``; the ``step`` event."""
        assert self.optimizer is not None and self.scheduler is not None
        tally = self.tally
        tick, cpu_tick = time.perf_counter(), time.process_time()
        batches = [self.plan.collate(g, self.pad_id).to(self.device) for g in group]
        loss_value = self._backward(batches)
        anchor_kl = self.anchor.step() if self.anchor else None
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm))
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        tally.step += 1
        tally.epoch = epoch
        tally.seconds += time.perf_counter() - tick
        tally.cpu_seconds += time.process_time() - cpu_tick
        tally.loss = loss_value
        self.progress.emit(
            "step",
            step=tally.step,
            epoch=epoch,
            loss=loss_value,
            lr=lr,
            grad_norm=grad_norm,
            **({} if anchor_kl is None else {"anchor_kl": anchor_kl}),
            tokens_per_s=tally.tokens / tally.seconds,
            eta_s=(self.total - tally.step) * tally.seconds / tally.step,
        )
        log.info(
            "step", step=f"{tally.step}/{self.total}", loss=round(loss_value, 4), lr=f"{lr:.3g}"
        )

    def _backward(self, batches: list[Batch]) -> float:
        """Accumulate the gradients of the step's micro-batches, each token's loss weighted
        and divided by the step's target tokens; return the step's mean token loss."""
        assert self.loss_fn is not None
        n_targets = max(1, sum(b.n_targets for b in batches))
        loss_sum, loss_count = 0.0, 0
        for batch in batches:
            with self._autocast():
                losses, weights = self.loss_fn(batch)
            ((losses * weights).sum() / n_targets).backward()
            loss_sum += float(losses.detach().sum())
            loss_count += losses.numel()
            self.tally.tokens += batch.n_tokens
            self.tally.slots += batch.n_slots
        return loss_sum / max(loss_count, 1)

    def _between_steps(self, step: int) -> None:
        """A checkpoint every ``save_steps``, else an evaluation every ``eval_steps``."""
        if step % self.cfg.save_steps == 0:
            self.save_checkpoint(step)
        elif self.cfg.eval_steps is not None and step % self.cfg.eval_steps == 0:
            self.evaluate(step)

    # -- evaluation and saving -----------------------------------------------------------

    def evaluate(self, step: int) -> float | None:
        """The eval loss of the model as it stands (an ``eval`` event); None without eval
        samples."""
        assert self.loss_fn is not None
        value = eval_loss(self.model, self.loss_fn, self.eval_batches, self.device, self._autocast)
        if value is not None:
            self.progress.emit("eval", step=step, eval_loss=value)
            log.info("eval", step=step, eval_loss=round(value, 4))
        return value

    def save_checkpoint(self, step: int) -> Path:
        """Evaluate and save ``checkpoints/step-N/`` (a ``checkpoint`` event)."""
        value = self.evaluate(step)
        path = self.checkpoints.save(self.model, step, value)
        self.progress.emit("checkpoint", step=step, path=str(path), eval_loss=value)
        return path

    def save_artifact(self, final_eval: float | None) -> tuple[Path, int, float | None]:
        """Write the artifact from the best checkpoint when it scored below the final state,
        else from the final state; return (its path, its step, its eval loss)."""
        best = self.checkpoints.best()
        if best is not None and _lower(best[2], final_eval):
            step, path, value = best
            return self._write_artifact(path, step), step, value
        return self._write_artifact(None, self.tally.step), self.tally.step, final_eval

    def _write_artifact(self, checkpoint: Path | None, step: int) -> Path:
        artifact = write_artifact(self.run_dir, self.kind, self.model, self.tokenizer, checkpoint)
        log.info("artifact written", path=str(artifact), best_step=step)
        return artifact

    def _metrics(
        self,
        initial_eval: float | None,
        final_eval: float | None,
        best_step: int,
        best_eval: float | None,
    ) -> dict[str, Any]:
        """The ``done`` event's metrics (``merged`` and ``total_seconds`` come after)."""
        tally = self.tally
        return {
            "kind": self.kind,
            "steps": tally.step,
            "epochs": tally.epoch + 1,
            "train_loss": tally.loss,
            "eval_loss": best_eval,
            "eval_loss_initial": initial_eval,
            "eval_loss_final": final_eval,
            "best_step": best_step,
            "n_train": len(self.train_examples),
            "n_eval": len(self.eval_examples),
            "truncated": self.truncated,
            "train_tokens": tally.tokens,
            "tokens_per_s": tally.tokens / tally.seconds if tally.seconds else None,
            "padding_share": 1 - tally.tokens / tally.slots if tally.slots else 0.0,
            "strategy": self.strategy,
            "device": self.device.type,
            "bf16": self.bf16,
            "gradient_checkpointing": self.checkpointing,
            "memory_strategy": self.memory_strategy,
            "train_seconds": tally.seconds,
            "train_cpu_seconds": tally.cpu_seconds,
            "warnings": self.warnings,
        }

    # -- cleanup -------------------------------------------------------------------------

    def _release(self) -> None:
        """Drop the model, its loss, the optimizer and the schedule, and collect them."""
        self.model = self.base = self.loss_fn = self.optimizer = self.scheduler = self.anchor = None
        self.params = []
        gc.collect()

    def cleanup(self) -> None:
        """Release whatever the recipe still holds (after a failed run too) and return the
        accelerator's cached memory; safe to call more than once."""
        self._release()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

"""The training recipe across the ranks of a torchrun job (training child only).

:class:`DistributedRecipe` is :class:`~services.training.recipe.FineTuneRecipe` with the
step's work shared out: each optimizer step's micro-batches (the same on every rank: the
plan is seeded) go round-robin to the ranks, each token's loss is still divided by the
step's target tokens over all ranks, and the gradients are summed across the ranks, so a
step computes the same update as one process would with the same effective batch
(``batch_size * gradient_accumulation_steps`` samples) and seed.

- LoRA: data parallel, the DDP way: the weights are replicated (rank 0's broadcast at the
  start), each rank back-propagates its micro-batches and the trainable gradients are
  all-reduced once per optimizer step (in one flat buffer), before clipping. The loop's
  loss runs the decoder and the head directly (logits only at target positions), which a
  ``DistributedDataParallel`` wrapper's forward hooks would not see, and a step's
  micro-batches need not split evenly, so the all-reduce is explicit.
- Full fine-tunes: FSDP2 (``torch.distributed.fsdp.fully_shard``): each decoder layer and
  then the whole model are sharded; every rank runs the same number of forward and
  backward passes (a rank short of micro-batches repeats one with weight 0) and gradients
  are reduce-scattered at the step's last pass only. Saving gathers the full state dict.

Rank 0 alone writes checkpoints and the artifact; evaluation runs on every rank (the same
batches, the same result) so that the sharded model's collectives stay in step.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from services.training.batching import Batch
from services.training.checkpoints import write_artifact
from services.training.ranks import Ranks
from services.training.recipe import FineTuneRecipe


def init_process_group(ranks: Ranks, device_name: str) -> str:
    """Join the job's process group: gloo on a CPU, NCCL on CUDA. Returns the device
    name this rank trains on (``cuda:<local rank>`` or ``cpu``)."""
    cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(ranks.local_rank)
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return "cuda" if cuda else "cpu"


def close_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class _Saver:
    """What ``Checkpoints.save`` and ``write_artifact`` call ``save_pretrained`` on: the
    model with a gathered full state dict (FSDP), writing only on rank 0."""

    def __init__(self, model: Any, state: dict[str, Any] | None, main: bool):
        self.model, self.state, self.main = model, state, main

    def save_pretrained(self, path: Path) -> None:
        if not self.main:
            return
        if self.state is None:
            self.model.save_pretrained(path)
        else:
            self.model.save_pretrained(path, state_dict=self.state)


class DistributedRecipe(FineTuneRecipe):
    """One rank's share of the run (see the module docstring)."""

    def __init__(self, *, ranks: Ranks, **kwargs: Any):
        super().__init__(**kwargs)
        self.ranks = ranks
        self.sharded = self.kind == "full"

    def _setup_device(self) -> None:
        super()._setup_device()
        if self.device.type == "cuda":
            self.device = torch.device("cuda", self.ranks.local_rank)

    def _setup_model(self) -> None:
        super()._setup_model()
        if self.sharded:
            from torch.distributed.fsdp import fully_shard

            layers = set(getattr(self.base, "_no_split_modules", None) or ())
            for module in self.base.modules():
                if type(module).__name__ in layers:
                    fully_shard(module)
            fully_shard(self.base)
            # The root's hooks gather the embeddings and the head: go through its forward.
            assert self.loss_fn is not None
            self.loss_fn.fast = False
        else:
            for p in self.model.parameters():
                if p.requires_grad:
                    dist.broadcast(p.data, src=0)

    def _backward(self, batches: list[Batch]) -> float:
        """This rank's micro-batches of the step (every ``world``-th), their gradients
        summed over the ranks; returns the step's mean token loss over all ranks."""
        assert self.loss_fn is not None
        world, rank = self.ranks.world, self.ranks.rank
        n_targets = max(1, sum(b.n_targets for b in batches))
        mine: list[Batch | None] = list(batches[rank::world])
        if self.sharded:  # the same number of passes on every rank
            mine += [None] * (math.ceil(len(batches) / world) - len(mine))
        # FSDP averages gradients over the ranks; the step wants their sum.
        scale = float(world) if self.sharded else 1.0
        totals = [0.0, 0.0, 0.0, 0.0]  # loss sum, count, tokens, slots
        for i, batch in enumerate(mine):
            if self.sharded:
                self.model.set_requires_gradient_sync(i == len(mine) - 1)
            with self._autocast():
                losses, weights = self.loss_fn(batch or batches[0])
            factor = scale if batch is not None else 0.0
            ((losses * weights).sum() * factor / n_targets).backward()
            if batch is not None:
                counted = (
                    float(losses.detach().sum()),
                    losses.numel(),
                    batch.n_tokens,
                    batch.n_slots,
                )
                totals = [t + v for t, v in zip(totals, counted, strict=True)]
        if not self.sharded:
            self._sum_gradients()
        summed = torch.tensor(totals, dtype=torch.float64, device=self.device)
        dist.all_reduce(summed)  # NCCL reduces only tensors on the rank's GPU
        loss_sum, count, tokens, slots = summed.tolist()
        self.tally.tokens += int(tokens)
        self.tally.slots += int(slots)
        return loss_sum / max(count, 1.0)

    def _sum_gradients(self) -> None:
        """All-reduce the trainable gradients (a rank without micro-batches sends zeros)."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        offset = 0
        for p in self.params:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n

    def _saver(self) -> _Saver:
        """The model to save; for FSDP the full state dict, gathered on every rank."""
        state = None
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_model_state_dict,
            )

            state = get_model_state_dict(
                self.base, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
            )
        return _Saver(self.model, state, self.ranks.main)

    def save_checkpoint(self, step: int) -> Path:
        value = self.evaluate(step)
        path = self.checkpoints.save(self._saver(), step, value)
        if self.ranks.main:
            self.progress.emit("checkpoint", step=step, path=str(path), eval_loss=value)
        dist.barrier()
        return path

    def _write_artifact(self, checkpoint: Path | None, step: int) -> Path:
        saver = self._saver() if checkpoint is None else _Saver(None, None, self.ranks.main)
        artifact = self.run_dir / ("adapter" if self.kind == "lora" else "model")
        if self.ranks.main:
            write_artifact(self.run_dir, self.kind, saver, self.tokenizer, checkpoint)
        dist.barrier()
        return artifact

    def train(self) -> tuple[Path, dict[str, Any]]:
        if not self.ranks.main:
            self.merge = False
            # rank 0 alone writes the artifact, then scales (lora.scale) and merges it
            lora = self.cfg.lora.model_copy(update={"scale": 1.0})
            self.cfg = self.cfg.model_copy(update={"merge_lora": False, "lora": lora})
        artifact, metrics = super().train()
        metrics["ranks"] = self.ranks.world
        return artifact, metrics

"""What the optimizer steps of a run hold, and its learning rate schedule (training child
only: the batches are torch tensors).

:class:`Plan` draws each optimizer step's ``batch_size * gradient_accumulation_steps``
samples at random (seeded per epoch) and cuts them into micro-batches (see ``batching``);
:func:`lr_lambda` is the learning rate factor of each step.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from services.training.batching import (
    Batch,
    Example,
    collate,
    collate_packed,
    packed_rows,
    plan_steps,
    split_step,
)
from services.training.config_model import TrainingConfig

WARMUP_MAX_SHARE = 0.1  # warmup_steps take at most this share of a run's optimizer steps


def warmup_steps(cfg: TrainingConfig, total: int) -> int:
    """The run's warm-up in optimizer steps: ``warmup_steps`` when set (at most
    :data:`WARMUP_MAX_SHARE` of ``total``), else ``warmup_ratio`` of ``total``."""
    if cfg.warmup_steps is not None:
        return min(cfg.warmup_steps, math.floor(WARMUP_MAX_SHARE * total))
    return math.ceil(cfg.warmup_ratio * total)


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

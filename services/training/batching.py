"""Tokenized examples and the batches built from them (training child only: imports torch).

Labels follow the transformers convention: aligned with ``input_ids``, -100 where no loss
is taken (prompt tokens, padding, and the first token of each packed sample); the loss
shifts them by one. ``weights`` holds each sample's weight where its labels are set.

An optimizer step takes ``batch_size * gradient_accumulation_steps`` samples drawn at
random, as plain batching does, so the objective is the same; how they are cut into
forward passes (micro-batches) is a matter of speed and memory only:

- length-sorted (default): the step's samples sorted by length and cut into micro-batches
  of at most ``micro_batch_tokens`` padded tokens (a longer sample goes alone), right-padded.
  No attention mask is passed: with right padding and causal attention no real token can
  see a pad token, so the result is exact and attention takes the fast unmasked path.
- packed: the step's samples packed into rows of ``max_seq_length`` with ``position_ids``
  restarting at each sample, so that attention stays within a sample (transformers derives
  the block mask from the position ids). Only worth it with a variable-length attention
  kernel (flash attention); with SDPA on a CPU the block mask costs more than the padding
  it saves.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from services.training.dataset_reader import Record

IGNORE = -100


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    n_prompt: int
    weight: float

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class Batch:
    input_ids: torch.Tensor
    labels: torch.Tensor
    weights: torch.Tensor
    position_ids: torch.Tensor | None
    n_tokens: int  # real tokens (no padding)

    @property
    def n_slots(self) -> int:
        return self.input_ids.numel()

    @property
    def n_targets(self) -> int:
        return int((self.labels[:, 1:] != IGNORE).sum())

    def to(self, device: torch.device) -> Batch:
        pos = None if self.position_ids is None else self.position_ids.to(device)
        return Batch(
            self.input_ids.to(device),
            self.labels.to(device),
            self.weights.to(device),
            pos,
            self.n_tokens,
        )


def encode(records: Sequence[Record], tokenizer: Any, max_len: int) -> tuple[list[Example], int]:
    """Tokenize prompt and completion separately (so the label boundary is exact); return the
    examples and how many were truncated. A sample longer than ``max_len`` keeps the end of its
    prompt (at most half of ``max_len`` when the completion needs the room) and the start of
    its completion."""
    examples: list[Example] = []
    truncated = 0
    for r in records:
        p = tokenizer(r.prompt, add_special_tokens=False)["input_ids"] if r.prompt else []
        c = tokenizer(r.completion, add_special_tokens=False)["input_ids"]
        if len(p) + len(c) > max_len:
            truncated += 1
            keep_c = min(len(c), max_len - min(len(p), max_len // 2))
            c = c[:keep_c]
            p = p[len(p) - (max_len - keep_c) :] if max_len > keep_c else []
        examples.append(Example(list(p) + list(c), len(p), r.weight))
    return examples, truncated


def plan_steps(n: int, per_step: int, rng: random.Random) -> list[list[int]]:
    """One epoch: the indices ``0..n-1`` shuffled and cut into steps of ``per_step``."""
    order = list(range(n))
    rng.shuffle(order)
    return [order[i : i + per_step] for i in range(0, n, per_step)]


def split_step(items: Sequence[int], lengths: Sequence[int], budget: int) -> list[list[int]]:
    """``items`` longest first, cut into micro-batches whose padded size (count x longest)
    stays within ``budget`` tokens; an item longer than ``budget`` goes alone."""
    micro: list[list[int]] = []
    current: list[int] = []
    for i in sorted(items, key=lambda i: -lengths[i]):
        if current and (len(current) + 1) * lengths[current[0]] > budget:
            micro.append(current)
            current = []
        current.append(i)
    if current:
        micro.append(current)
    return micro


def packed_rows(lengths: Sequence[int], max_len: int) -> list[list[int]]:
    """Rows of indices whose lengths sum to at most ``max_len`` (first fit, longest first)."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(max_len - lengths[i])
    return rows


def _labels(ex: Example, first_masked: bool) -> list[int]:
    labels = [IGNORE] * ex.n_prompt + ex.input_ids[ex.n_prompt :]
    if first_masked and labels:
        labels[0] = IGNORE
    return labels


def collate(examples: Sequence[Example], pad_id: int) -> Batch:
    """One right-padded row per example."""
    width = max(len(e) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    weights = torch.zeros((len(examples), width), dtype=torch.float32)
    for row, ex in enumerate(examples):
        n = len(ex)
        ids[row, :n] = torch.tensor(ex.input_ids)
        labels[row, :n] = torch.tensor(_labels(ex, first_masked=False))
        weights[row, ex.n_prompt : n] = ex.weight
    return Batch(ids, labels, weights, None, sum(len(e) for e in examples))


def collate_packed(rows: Sequence[Sequence[Example]], pad_id: int) -> Batch:
    """Several examples per row; ``position_ids`` restart at each example."""
    width = max(sum(len(e) for e in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    weights = torch.zeros((len(rows), width), dtype=torch.float32)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    n_tokens = 0
    for r, row in enumerate(rows):
        at = 0
        for ex in row:
            n = len(ex)
            ids[r, at : at + n] = torch.tensor(ex.input_ids)
            labels[r, at : at + n] = torch.tensor(_labels(ex, first_masked=True))
            weights[r, at + ex.n_prompt : at + n] = ex.weight
            pos[r, at : at + n] = torch.arange(n)
            at += n
        # Padding continues the last sample's positions: it comes after it and is never seen.
        last = len(row[-1])
        pos[r, at:] = torch.arange(last, last + width - at)
        n_tokens += at
    return Batch(ids, labels, weights, pos, n_tokens)

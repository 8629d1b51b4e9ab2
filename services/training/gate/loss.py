"""The evaluation gate's loss: the mean weighted completion-token loss of a model on a set.

Scored with the training loss (``services.training.loss.TokenLoss``), each model with its
own tokenizer; torch is imported inside :func:`weighted_loss`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.training.dataset_reader import Record
from services.training.gate.sets import EvalSample

TOKEN_BUDGET = 4096  # tokens (rows x width) per loss batch


@dataclass(frozen=True)
class LossStat:
    """Summed completion-token losses of one model on one set."""

    weighted_sum: float
    weight_total: float
    loss_sum: float
    tokens: int
    samples: int
    truncated: int

    @property
    def loss(self) -> float:
        """Mean weighted loss per completion token."""
        return self.weighted_sum / self.weight_total if self.weight_total else math.nan

    @property
    def unweighted(self) -> float:
        return self.loss_sum / self.tokens if self.tokens else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "loss": self.loss,
            "unweighted_loss": self.unweighted,
            "samples": self.samples,
            "tokens": self.tokens,
            "truncated": self.truncated,
        }

    @staticmethod
    def combine(stats: Sequence[LossStat]) -> LossStat:
        return LossStat(
            sum(s.weighted_sum for s in stats),
            sum(s.weight_total for s in stats),
            sum(s.loss_sum for s in stats),
            sum(s.tokens for s in stats),
            sum(s.samples for s in stats),
            sum(s.truncated for s in stats),
        )


def _groups(lengths: Sequence[int]) -> list[list[int]]:
    """Indices shortest first, cut into batches of at most :data:`TOKEN_BUDGET` padded
    tokens (a longer sample goes alone)."""
    groups: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        if groups and (len(groups[-1]) + 1) * lengths[i] <= TOKEN_BUDGET:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def weighted_loss(
    model: Any, tokenizer: Any, samples: Sequence[EvalSample], max_len: int
) -> LossStat:
    """Completion-token cross-entropy of ``model`` on ``samples``, in length-sorted batches of
    at most :data:`TOKEN_BUDGET` tokens, logits only at completion tokens."""
    import torch

    from services.training.batching import collate, encode
    from services.training.loss import TokenLoss

    records = [Record(s.id, s.prompt, s.completion, s.weight, "eval") for s in samples]
    examples, truncated = encode(records, tokenizer, max_len)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    token_loss = TokenLoss(model, base)
    device = next(model.parameters()).device
    weighted = weight_total = loss_sum = 0.0
    tokens = 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for group in _groups([len(e) for e in examples]):
            batch = collate([examples[i] for i in group], pad_id).to(device)
            losses, weights = token_loss(batch)
            weighted += float((losses * weights).sum())
            weight_total += float(weights.sum())
            loss_sum += float(losses.sum())
            tokens += losses.numel()
    model.train(was_training)
    return LossStat(weighted, weight_total, loss_sum, tokens, len(samples), truncated)

"""The training loss (training child only: imports torch).

:class:`TokenLoss` is the cross-entropy at the completion tokens of a batch (logits only
at those positions), with each token's sample weight; :func:`eval_loss` its unweighted
mean over eval batches; :func:`packing_works` tells whether a model keeps packed samples
apart. The evaluation gate (``services.training.gate``) scores with the same loss.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from services.training.batching import IGNORE, Batch, Example, collate, collate_packed

# Config attributes of models whose logits are more than ``lm_head(hidden)``.
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


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


@torch.no_grad()
def eval_loss(
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

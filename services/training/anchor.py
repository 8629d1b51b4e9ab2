"""Holding a LoRA near its base on general text while it learns the person: ``lora.anchor``.

A small profile's LoRA learns its person's facts only when it trains hard, and training
that hard also moves the model away from its base on everything else (the drift that
``lora.scale`` gives back afterwards, at a cost in what was learned). With
``lora.anchor`` > 0, each optimizer step also asks a general conversation of
``etc/train/anchors.jsonl`` (none of the gate's regression set's prompts, nor the
calibration set's that ``lora.scale auto`` chooses on) and adds ``anchor`` x the mean KL
divergence, per answer token, of the base's next-token distribution from the model's
(the base being the same model with its adapter disabled), so the adapter learns what
the person's samples teach and little else. Training child only (imports torch).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from services.shipped import etc_dir
from services.training.adapter_scale import answer_log_softmax, encoded_answers, kl_sum
from services.training.errors import BadInputError

ANCHOR_SET = etc_dir() / "train" / "anchors.jsonl"


class AnchorLoss:
    """The drift penalty of one step: ``weight`` x KL(base || model) per answer token of the
    next anchor conversation, back-propagated; returns the KL."""

    def __init__(
        self,
        model: Any,
        examples: list[tuple[torch.Tensor, int]],
        weight: float,
        autocast: Callable[[], Any],
    ) -> None:
        if not examples:
            raise BadInputError("lora.anchor: the anchor set has no conversation with an answer")
        self.model = model
        self.examples = examples
        self.weight = weight
        self.autocast = autocast
        self.next = 0

    def step(self) -> float:
        ids, start = self.examples[self.next % len(self.examples)]
        self.next += 1
        with torch.no_grad(), self.model.disable_adapter(), self.autocast():
            base = answer_log_softmax(self.model, ids, start)
        with self.autocast():
            model = answer_log_softmax(self.model, ids, start)
        kl = kl_sum(base, model) / base.shape[0]
        (self.weight * kl).backward()
        return float(kl.detach())


def anchor_loss(recipe: Any) -> AnchorLoss | None:
    """A :class:`~services.training.recipe.FineTuneRecipe`'s drift penalty (a LoRA's
    ``lora.anchor`` > 0), else None."""
    cfg, model = recipe.cfg, recipe.model
    if not cfg.lora.anchor or recipe.kind != "lora" or not hasattr(model, "disable_adapter"):
        return None
    examples = anchor_examples(recipe.run_dir, recipe.tokenizer, recipe.device, cfg.max_seq_length)
    return AnchorLoss(model, examples, cfg.lora.anchor, recipe._autocast)


def anchor_examples(
    run_dir: Path, tokenizer: Any, device: torch.device, max_len: int, path: Path = ANCHOR_SET
) -> list[tuple[torch.Tensor, int]]:
    """The anchor conversations in the run's chat format, tokenized as training tokenizes
    its samples: (input ids, prompt length) each."""
    from services.training.gate.sets import chat_renderer, read_eval_set

    render = chat_renderer(run_dir, tokenizer)
    if render is None:
        raise BadInputError("lora.anchor: no chat format to render the anchor set in")
    return encoded_answers(read_eval_set(path, render), tokenizer, device, max_len)

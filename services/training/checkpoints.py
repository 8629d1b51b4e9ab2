"""What a run writes of its model: checkpoints while it trains, the artifact at the end.

``checkpoints/step-N/`` every ``save_steps`` (at most ``save_total_limit``, the best by eval
loss always kept); the artifact ``adapter/`` (LoRA, peft safetensors) or ``model/`` (full,
safetensors), each with the tokenizer, written beside and renamed into place.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any


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

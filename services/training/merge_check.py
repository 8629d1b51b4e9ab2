"""Whether a merged model scores as its adapter did (child only: imports torch).

After :func:`services.training.merge.merge_adapter` folds a LoRA (or QLoRA) adapter into
its base loaded in full precision, the run's eval samples are scored twice: the adapter on
that base, before the merge, and the merged model. They must agree within
:data:`TOLERANCE`; ``merge_check.json`` in the run directory records both, and the loss the
training run measured (for QLoRA: the adapter on the 4-bit base), so the cost of training
on a quantized base shows.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import torch

from services import durable
from services.training.batching import collate, encode
from services.training.config import CONFIG_FILE, ResolvedConfig
from services.training.dataset_reader import DATASET_FILE, read_dataset, select
from services.training.loss import TokenLoss, eval_loss

TOLERANCE = 0.01  # relative
CHECK_FILE = "merge_check.json"


class EvalSet:
    """A run's eval samples, tokenized once; :meth:`loss` scores a model on them."""

    def __init__(self, run_dir: Path, tokenizer: Any):
        resolved = ResolvedConfig.read(run_dir / CONFIG_FILE)
        cfg = resolved.config
        selection = select(read_dataset(run_dir / DATASET_FILE), cfg)
        pad = tokenizer.pad_token_id
        pad = pad if pad is not None else (tokenizer.eos_token_id or 0)
        examples, _ = encode(selection.eval, tokenizer, cfg.max_seq_length)
        self.batches = [collate([e], pad) for e in examples]

    def loss(self, model: Any, base: Any) -> float | None:
        model.eval()
        return eval_loss(
            model, TokenLoss(model, base), self.batches, torch.device("cpu"), contextlib.nullcontext
        )


def eval_set(adapter_dir: Path, tokenizer: Any) -> EvalSet | None:
    """The eval set of the run the adapter came from (its parent directory), if any."""
    run_dir = adapter_dir.parent
    if not ((run_dir / CONFIG_FILE).is_file() and (run_dir / DATASET_FILE).is_file()):
        return None
    evals = EvalSet(run_dir, tokenizer)
    return evals if evals.batches else None


def training_eval_loss(run_dir: Path) -> float | None:
    """The eval loss of the artifact as its training run reported it (``done`` event)."""
    path = run_dir / "progress.jsonl"
    if not path.is_file():
        return None
    value = None
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError, AttributeError):
            event = json.loads(line)
            if event.get("event") == "done":
                value = (event.get("metrics") or {}).get("eval_loss")
    return value


def record(adapter_dir: Path, adapter_loss: float, merged_loss: float) -> dict[str, Any]:
    """Write ``merge_check.json`` next to the adapter; return it. ``ok``: the two agree."""
    run_dir = adapter_dir.parent
    plan: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError, KeyError):
        plan = json.loads((run_dir / CONFIG_FILE).read_text()).get("plan") or {}
    difference = abs(merged_loss - adapter_loss) / max(abs(adapter_loss), 1e-9)
    check = {
        "adapter_eval_loss": adapter_loss,
        "merged_eval_loss": merged_loss,
        "relative_difference": difference,
        "tolerance": TOLERANCE,
        "training_eval_loss": training_eval_loss(run_dir),
        "memory_strategy": plan.get("strategy"),
    }
    check["ok"] = difference <= TOLERANCE
    durable.write_json(run_dir / CHECK_FILE, check)
    return check

"""Reading a run's ``fine_tune_dataset.jsonl`` for training (no torch: fails fast on bad input).

Each line is one object; training uses ``prompt`` (the chat-rendered prompt through the
generation prompt), ``completion`` (the assistant turn through its end-of-turn tokens),
``weight`` (> 0, default 1.0: scales the sample's loss) and ``split`` (``train`` or
``eval``, default ``train``). A line with ``text`` but no ``prompt``/``completion`` trains
on all of ``text``. ``mode`` (the cognitive mode) is kept for the evaluation gate's tag
probe. Other keys are ignored. Lines are read with ``services.jsonl``; :func:`sample_fields`
validates the fields a training line and an evaluation-set line share.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.jsonl import read_objects
from services.training.config_model import TrainingConfig
from services.training.errors import BadInputError

DATASET_FILE = "fine_tune_dataset.jsonl"
SPLITS = ("train", "eval")


@dataclass(frozen=True)
class Record:
    id: str
    prompt: str
    completion: str
    weight: float
    split: str
    mode: str | None = None  # the cognitive mode, when the line names one


def read_dataset(path: Path) -> list[Record]:
    """Every record of the file, validated; :class:`BadInputError` names the line at fault."""
    records = [
        _record(obj, where)
        for where, obj in read_objects(path, what="dataset", error=BadInputError)
    ]
    if not records:
        raise BadInputError(f"dataset is empty: {path}")
    return records


def _record(obj: dict[str, Any], where: str) -> Record:
    prompt, completion, weight = sample_fields(obj, where)
    split = obj.get("split", "train")
    if split not in SPLITS:
        raise BadInputError(f"{where}: 'split' must be 'train' or 'eval', not {split!r}")
    mode = obj.get("mode")
    return Record(
        str(obj.get("id", where)),
        prompt,
        completion,
        weight,
        split,
        mode if isinstance(mode, str) else None,
    )


def sample_fields(
    obj: dict[str, Any], where: str, otherwise: Callable[[], tuple[str, str]] | None = None
) -> tuple[str, str, float]:
    """(prompt, completion, weight) of one line: ``prompt`` and ``completion``, or ``text``
    (all of it the completion), or, for a line with none of them, what ``otherwise()`` makes
    of it (the evaluation gate renders ``messages``); ``weight`` a positive number, 1.0 when
    absent. :class:`BadInputError` names ``where``. Serves the training dataset and the
    gate's evaluation sets alike."""
    prompt, completion = obj.get("prompt"), obj.get("completion")
    if prompt is None and completion is None:
        text = obj.get("text")
        if otherwise is not None and not isinstance(text, str):
            prompt, completion = otherwise()
        else:
            prompt, completion = "", text
    if not isinstance(prompt, str) or not isinstance(completion, str):
        raise BadInputError(f"{where}: 'prompt' and 'completion' (or 'text') must be strings")
    if not completion.strip():
        raise BadInputError(f"{where}: empty completion")
    weight = obj.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
        raise BadInputError(f"{where}: 'weight' must be a number")
    if weight <= 0:
        raise BadInputError(f"{where}: 'weight' must be positive, not {weight}")
    return prompt, completion, float(weight)


def split_records(
    records: list[Record], *, eval_fraction: float, seed: int
) -> tuple[list[Record], list[Record]]:
    """(train, eval): the file's own split, or, when it has no eval records, a seeded hold-out
    of ``eval_fraction`` (at least one record when there are 10 or more)."""
    train = [r for r in records if r.split == "train"]
    held = [r for r in records if r.split == "eval"]
    if held or eval_fraction <= 0 or len(train) < 10:
        return train, held
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(len(train) * eval_fraction))
    chosen = set(order[:n_eval])
    return (
        [r for i, r in enumerate(train) if i not in chosen],
        [r for i, r in enumerate(train) if i in chosen],
    )


@dataclass(frozen=True)
class Selection:
    train: list[Record]
    eval: list[Record]
    warnings: list[str]


def select(records: list[Record], cfg: TrainingConfig) -> Selection:
    """The train and eval records a run uses under ``cfg`` (split, ``dataset.max_samples``);
    :class:`BadInputError` below ``dataset.required_samples``, warnings below
    ``min_samples`` / ``recommended_samples`` and without eval data."""
    train, held = split_records(records, eval_fraction=cfg.eval_fraction, seed=cfg.seed)
    req = cfg.dataset
    if req.max_samples is not None:
        train = train[: req.max_samples]
    if len(train) < req.required_samples:
        raise BadInputError(
            f"{len(train)} training samples; at least {req.required_samples} are required "
            "(dataset.required_samples)"
        )
    warnings = [
        f"{len(train)} training samples, fewer than {name} ({n})"
        for name, n in (
            ("min_samples", req.min_samples),
            ("recommended_samples", req.recommended_samples),
        )
        if len(train) < n
    ]
    if not held:
        warnings.append("no eval samples: the final state is the artifact, unscored")
    return Selection(train, held, warnings)

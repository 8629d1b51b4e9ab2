"""Reading a run's ``fine_tune_dataset.jsonl`` for training (no torch: fails fast on bad input).

Each line is one object; training uses ``prompt`` (the chat-rendered prompt through the
generation prompt), ``completion`` (the assistant turn through its end-of-turn tokens),
``weight`` (> 0, default 1.0: scales the sample's loss) and ``split`` (``train`` or
``eval``, default ``train``). A line with ``text`` but no ``prompt``/``completion`` trains
on all of ``text``. Other keys are carried along and ignored.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from services.training.config import TrainingConfig
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


def read_dataset(path: Path) -> list[Record]:
    """Every record of the file, validated; :class:`BadInputError` names the line at fault."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise BadInputError(f"dataset not found: {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"dataset unreadable: {path}: {exc}") from exc
    records = [_record(line, f"{path}:{n}") for n, line in enumerate(lines, 1) if line.strip()]
    if not records:
        raise BadInputError(f"dataset is empty: {path}")
    return records


def _record(line: str, where: str) -> Record:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{where}: not JSON: {exc.msg}") from exc
    if not isinstance(obj, dict):
        raise BadInputError(f"{where}: not a JSON object")
    prompt, completion = obj.get("prompt"), obj.get("completion")
    if prompt is None and completion is None:
        prompt, completion = "", obj.get("text")
    if not isinstance(prompt, str) or not isinstance(completion, str):
        raise BadInputError(f"{where}: 'prompt' and 'completion' (or 'text') must be strings")
    if not completion.strip():
        raise BadInputError(f"{where}: empty completion")
    weight = obj.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
        raise BadInputError(f"{where}: 'weight' must be a number")
    if weight <= 0:
        raise BadInputError(f"{where}: 'weight' must be positive, not {weight}")
    split = obj.get("split", "train")
    if split not in SPLITS:
        raise BadInputError(f"{where}: 'split' must be 'train' or 'eval', not {split!r}")
    return Record(str(obj.get("id", where)), prompt, completion, float(weight), split)


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

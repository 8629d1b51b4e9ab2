"""What a job trains on, and when it is skipped for too little data."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from services.curation import Sample
from services.settings import TriggerSettings

REGRESSION_MAX = 200  # held-out older samples in a run's regression set


@dataclass(frozen=True)
class ProfileHistory:
    """What the ledger knows of a profile's training: the input of a LoRA's plan."""

    current_base: str | None  # the latest full fine-tune's model; None: the original base
    base_job: int | None  # the job that trained it
    cut: str | None  # when the last successful job's dataset was taken
    new: Sequence[dict[str, Any]]  # sample records curated after the cut, oldest first
    old: Sequence[dict[str, Any]]  # sample records curated before it, oldest first


@dataclass(frozen=True)
class JobPlan:
    """A job's base model spec, its samples (None: the whole eligible corpus), the
    held-out older samples of its regression check, and ``summary``: what was decided,
    recorded in the job's result as its ``plan``."""

    base: str
    samples: list[Sample] | None
    regression: list[Sample]
    summary: dict[str, Any]


def select_lora_samples(
    new: Sequence[Sample],
    old: Sequence[Sample],
    *,
    replay_fraction: float,
    replay_max: int,
    replay_min_quality: float,
    seed: str,
) -> tuple[list[Sample], int]:
    """The LoRA's samples: every eligible new one, then ``replay_fraction`` of that
    many (at most ``replay_max``) older eligible samples of quality >= the minimum,
    picked deterministically by ``seed``. Returns (samples, replayed count)."""
    fresh = [s for s in new if s.eligible]
    pool = [s for s in old if s.eligible and s.quality >= replay_min_quality]
    want = min(replay_max, math.ceil(len(fresh) * replay_fraction), len(pool))
    pool.sort(key=lambda s: hashlib.sha256(f"{seed}:{s.memory_id}".encode()).hexdigest())
    return fresh + pool[:want], want


def plan_full(original_base: str, requested_base: str | None = None) -> JobPlan:
    """A full fine-tune trains all weights on the whole eligible corpus from the
    profile's original base model, or from the base the job names."""
    if requested_base is not None:
        return JobPlan(requested_base, None, [], {"base": requested_base, "base_requested": True})
    return JobPlan(original_base, None, [], {"base": original_base})


def plan_lora(
    history: ProfileHistory,
    *,
    job_id: int,
    original_base: str,
    triggers: TriggerSettings,
    everything: bool = False,
    requested_base: str | None = None,
) -> JobPlan:
    """A LoRA trains on the current base with the samples curated since the cut, plus a
    replay share of older high-quality samples (picked by the job's id); the older
    held-out samples (at most :data:`REGRESSION_MAX`, the newest) check for regressions.
    With ``everything`` (``train --all``) it trains on the profile's whole eligible
    corpus instead, and its held-out samples are the dataset's own eval split.

    A job that names another base (``train --base-model M``) trains its LoRA on that
    base, on the whole eligible corpus (nothing the profile learned sits on ``M``); the
    adapter stays on ``M``: a later full fine-tune does not make it stale."""
    base = history.current_base or original_base
    if requested_base is not None and requested_base != base:
        named: dict[str, Any] = {"base": requested_base, "base_job": None, "since": None}
        return JobPlan(requested_base, None, [], {**named, "all": True, "base_requested": True})
    if everything:
        summary = {"base": base, "base_job": history.base_job, "since": None, "all": True}
        return JobPlan(base, None, [], summary)
    samples, replayed = select_lora_samples(
        [Sample.from_record(r) for r in history.new],
        [Sample.from_record(r) for r in history.old],
        replay_fraction=triggers.replay_fraction,
        replay_max=triggers.replay_max,
        replay_min_quality=triggers.replay_min_quality,
        seed=f"job{job_id}",
    )
    older = [Sample.from_record(r) for r in history.old if r.get("split") == "eval"]
    summary = {
        "base": base,
        "base_job": history.base_job,
        "since": history.cut,
        "replayed": replayed,
    }
    return JobPlan(base, samples, older[-REGRESSION_MAX:], summary)


def minimum_reason(n_train: int, minimum: int, what: str) -> str | None:
    """Why a job must be skipped for too little data, or None."""
    if n_train >= minimum:
        return None
    return (
        f"{n_train} training samples, below the {what} minimum of {minimum}; "
        "add memories, or train anyway with --force"
    )


def skip_reason(
    kind: str,
    mode: str | None,
    n_train: int,
    *,
    triggers: TriggerSettings,
    mode_minimum: Callable[[str], int],
    force: bool = False,
    required: int = 1,
    everything: bool = False,
) -> str | None:
    """Why a prepared job ends ``skipped`` instead of training, or None. A dataset with
    fewer than ``required`` training samples (``dataset.required_samples``: nothing to
    train on) is skipped even when forced. Otherwise (never when forced) a LoRA needs
    ``triggers.lora_min_samples``; a full fine-tune of one mode that mode's full
    fine-tune ``min_samples`` (``mode_minimum(mode)``), of all modes
    ``triggers.full_min_samples``."""
    if n_train < required:
        where = (
            "in the profile's eligible corpus"
            if kind == "full" or everything
            else ("since the last training")
        )
        hint = (
            ""
            if kind == "full" or everything
            else ("; to retrain on everything, use personad train PROFILE --all")
        )
        mode_text = f" of mode {mode}" if mode else ""
        return (
            f"{n_train} training samples{mode_text} {where}, fewer than the "
            f"{required} a run needs (dataset.required_samples){hint}"
        )
    if force:
        return None
    if kind == "lora":
        return minimum_reason(
            n_train, triggers.lora_min_samples, "LoRA (triggers.lora_min_samples)"
        )
    if mode:
        return minimum_reason(
            n_train, mode_minimum(mode), f"{mode} mode's full fine-tune (dataset.full.min_samples)"
        )
    return minimum_reason(n_train, triggers.full_min_samples, "full (triggers.full_min_samples)")

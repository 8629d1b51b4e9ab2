"""What queues a job on its own: the sample threshold (a LoRA) and the schedules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Eligibility:
    """A profile's standing for training, as the ledger tells it."""

    may_train: bool  # neither the profile nor everything is paused
    since_cut: int  # eligible samples curated since the last successful job's dataset
    total: int  # eligible samples of the profile


def threshold_reason(*, may_train: bool, since_cut: int, threshold: int) -> str | None:
    """The reason a LoRA is queued after an ingest, or None when none is due: the
    eligible samples since the last training reached ``triggers.lora_threshold``."""
    if not may_train or since_cut < threshold:
        return None
    return f"threshold ({since_cut} new)"


def schedule_qualifies(kind: str, standing: Eligibility, *, full_min_samples: int) -> bool:
    """A scheduled LoRA is for a profile with anything new since its last training; a
    scheduled full fine-tune for one with at least ``triggers.full_min_samples``."""
    if not standing.may_train:
        return False
    if kind == "lora":
        return standing.since_cut > 0
    return standing.total >= full_min_samples


def schedule_targets(
    kind: str, profiles: Mapping[str, Eligibility], *, full_min_samples: int
) -> list[str]:
    """The profiles a ``kind`` schedule queues a job for, in the order given."""
    return [
        name
        for name, standing in profiles.items()
        if schedule_qualifies(kind, standing, full_min_samples=full_min_samples)
    ]

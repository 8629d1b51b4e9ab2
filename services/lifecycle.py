"""The model lifecycle's rules: what a job trains on, when it is skipped, when a
schedule is due. Pure functions of their arguments (the clock included).

- A **full** fine-tune trains all weights on the whole eligible corpus (best first,
  capped by ``training.max_samples``) from the profile's original base model; its
  result becomes the profile's current base.
- A **LoRA** trains on the current base with the samples curated since the last
  successful job's dataset was taken, plus a replay share of older high-quality
  samples against forgetting.
- A job whose dataset is below its minimum ends ``skipped`` (not failed), with the
  reason, unless forced.
- A schedule missed while the daemon was down runs once at start-up when its most
  recent fire time is within the grace window and later than its last recorded run.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from services.curation import Sample
from services.errors import PersonadError


class LifecycleError(PersonadError):
    """A lifecycle setting (e.g. a cron expression) is invalid."""


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


def minimum_reason(n_train: int, minimum: int, what: str) -> str | None:
    """Why a job must be skipped for too little data, or None."""
    if n_train >= minimum:
        return None
    return (
        f"{n_train} training samples, below the {what} minimum of {minimum}; "
        "add memories, or train anyway with --force"
    )


def cron_trigger(expr: str, timezone: str | None = None) -> Any:
    """An APScheduler CronTrigger from a crontab line; a sixth leading field is seconds."""
    from apscheduler.triggers.cron import CronTrigger

    fields = expr.split()
    try:
        if len(fields) == 5:
            return CronTrigger.from_crontab(expr, timezone=timezone)
        if len(fields) == 6:
            second, minute, hour, day, month, dow = fields
            return CronTrigger(
                second=second,
                minute=minute,
                hour=hour,
                day=day,
                month=month,
                day_of_week=dow,
                timezone=timezone,
            )
    except (ValueError, LookupError) as exc:
        raise LifecycleError(f"invalid schedule {expr!r}: {exc}") from exc
    raise LifecycleError(
        f"invalid schedule {expr!r}: expected 5 crontab fields (or 6 with seconds first)"
    )


def missed_fire(
    trigger: Any, last_run: datetime | None, now: datetime, grace: timedelta
) -> datetime | None:
    """The fire time to catch up on at start-up, or None.

    The most recent fire time in (now - grace, now] that is later than the last
    recorded run; with no recorded run there is nothing to catch up on.
    """
    if last_run is None:
        return None
    start = max(now - grace, last_run)
    found: datetime | None = None
    t = trigger.get_next_fire_time(None, start)
    while t is not None and t <= now:
        if t > last_run:
            found = t
        t = trigger.get_next_fire_time(t, t + timedelta(microseconds=1))
    return found

"""What queues training jobs on its own: the sample threshold and the schedules.

Both only put jobs into the ledger's queue (which coalesces duplicates); the
supervisor runs them. APScheduler (3.x, a background thread) keeps time for the
schedules; each run is recorded in the ledger, so a schedule missed while the daemon
was down is caught up once at start-up when it is within the grace window.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from services.ledger import Ledger
from services.lifecycle import (
    Eligibility,
    cron_trigger,
    missed_fire,
    schedule_targets,
    threshold_reason,
)
from services.settings import Settings

log = structlog.get_logger(__name__)

KINDS = ("lora", "full")


class Triggers:
    def __init__(
        self, settings: Settings, on_queued: Callable[[], None], now: Callable[[], datetime]
    ) -> None:
        self.settings = settings
        self.on_queued = on_queued
        self.now = now
        self._lock = threading.Lock()

    # -- the threshold ------------------------------------------------------------------
    def after_ingest(self, ledger: Ledger, profile: str) -> int | None:
        """Queue a LoRA when the profile's eligible samples since its last training reach
        the threshold; returns the job id when one was queued."""
        since = ledger.eligible_since(profile, ledger.last_training_cut(profile))
        reason = threshold_reason(
            may_train=ledger.may_train(profile),
            since_cut=since,
            threshold=self.settings.triggers.lora_threshold,
        )
        if reason is None:
            return None
        job, created = ledger.enqueue_job(profile, "lora", reason=reason)
        if created:
            log.info("threshold reached: LoRA queued", profile=profile, new=since, job_id=job.id)
            self.on_queued()
            return job.id
        return None

    # -- the schedules ------------------------------------------------------------------
    def expressions(self) -> dict[str, str]:
        t = self.settings.triggers
        found = {"lora": t.lora_schedule, "full": t.full_schedule}
        return {k: v for k, v in found.items() if v}

    def fire(self, ledger: Ledger, kind: str, when: datetime | None = None) -> list[int]:
        """A schedule's run: queue ``kind`` for every profile that qualifies."""
        with self._lock:
            when = when or self.now()
            targets = schedule_targets(
                kind,
                {p: _eligibility(ledger, p) for p in ledger.profiles()},
                full_min_samples=self.settings.triggers.full_min_samples,
            )
            queued: list[int] = []
            for profile in targets:
                job, created = ledger.enqueue_job(profile, kind, reason="schedule")
                if created:
                    queued.append(job.id)
            ledger.set_schedule_run(kind, when.astimezone(UTC).isoformat())
            log.info("schedule ran", kind=kind, queued=queued)
            if queued:
                self.on_queued()
            return queued

    def catch_up(self, ledger: Ledger) -> dict[str, list[int]]:
        """At start-up: run once each schedule missed while the daemon was down."""
        now = self.now()
        grace = timedelta(seconds=self.settings.triggers.misfire_grace_s)
        out: dict[str, list[int]] = {}
        for kind, expr in self.expressions().items():
            last = ledger.schedule_last_run(kind)
            if last is None:
                # First start with this schedule: nothing was missed.
                ledger.set_schedule_run(kind, now.astimezone(UTC).isoformat())
                continue
            trigger = cron_trigger(expr, self.settings.triggers.timezone)
            missed = missed_fire(trigger, datetime.fromisoformat(last), now, grace)
            if missed is not None:
                log.info("catching up on a missed schedule", kind=kind, missed=missed.isoformat())
                out[kind] = self.fire(ledger, kind, when=now)
        return out


def _eligibility(ledger: Ledger, profile: str) -> Eligibility:
    return Eligibility(
        may_train=ledger.may_train(profile),
        since_cut=ledger.eligible_since(profile, ledger.last_training_cut(profile)),
        total=ledger.eligible_since(profile, None),
    )


class Schedules:
    """APScheduler in a background thread, firing :meth:`Triggers.fire`."""

    def __init__(self, settings: Settings, triggers: Triggers) -> None:
        self.settings = settings
        self.triggers = triggers
        self._scheduler = BackgroundScheduler(
            timezone=settings.triggers.timezone or None,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60},
        )

    def start(self) -> None:
        for kind, expr in self.triggers.expressions().items():
            self._scheduler.add_job(
                self._fire,
                trigger=cron_trigger(expr, self.settings.triggers.timezone),
                args=[kind],
                id=kind,
                name=f"{kind} schedule",
            )
        self._scheduler.start()

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def _fire(self, kind: str) -> None:
        try:
            with Ledger(self.settings.ledger_path, migrate=False) as ledger:
                self.triggers.fire(ledger, kind)
        except Exception:
            log.exception("schedule failed", kind=kind)

    def describe(self) -> list[dict[str, Any]]:
        out = []
        for job in self._scheduler.get_jobs():
            nxt = job.next_run_time
            out.append(
                {
                    "name": job.id,
                    "kind": job.id,
                    "cron": self.triggers.expressions().get(job.id),
                    "next_run": nxt.isoformat() if nxt else None,
                }
            )
        return out

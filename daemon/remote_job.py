"""A training job on a Ray cluster (``training.backend = "ray"``), followed from the daemon.

:func:`submit` starts the training child as a Ray job (``services.ray_jobs``); the ledger
keeps its submission id, so :class:`RemoteJob` can follow it from any daemon process, a
restarted one included. It reads the run's ``progress.jsonl`` on the shared storage as the
job writes it (the same events a local child sends on its pipe), watches the job's status,
stops it (``stop_job``) on cancel and on the time limit, and ends as a local child ends
(:class:`daemon.child.ChildEnd`). A daemon that stops leaves the job running: the next
start re-attaches to it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from daemon.child import ChildEnd, TimeLimit, apply_event
from services.ray_jobs import FINAL, RayJobError, RayJobs
from services.training.command import ExitCode
from services.training.progress import DoneEvent, ErrorEvent, ProgressParser

log = structlog.get_logger(__name__)

POLL_S = 0.5
# How long a stop may wait for an unreachable head (beyond training.stop_grace_s).
UNREACHABLE_GRACE_S = 60.0
PROGRESS_FILE = "progress.jsonl"


@dataclass(frozen=True)
class Detached:
    """The daemon is stopping: the job runs on, for the next start to re-attach."""

    submission_id: str


class RemoteJob:
    """Follow the Ray job ``submission_id`` training ``run_dir`` until it ends."""

    def __init__(
        self,
        jobs: RayJobs,
        submission_id: str,
        run_dir: Path,
        *,
        time_limit: TimeLimit,
        started: float,
        heartbeat_s: float = 1.0,
    ) -> None:
        self.jobs = jobs
        self.submission_id = submission_id
        self.run_dir = run_dir
        self.time_limit = time_limit
        self.started = started
        self.heartbeat_s = heartbeat_s
        self._offset = 0
        self._parser = ProgressParser()

    def follow(
        self,
        progress: dict[str, Any],
        *,
        stop_requested: Callable[[], bool],
        detach_requested: Callable[[], bool],
        heartbeat: Callable[[], object] = lambda: None,
    ) -> ChildEnd | Detached:
        seen: dict[str, Any] = {"done": None, "error": None, "code": None}
        stop_sent: float | None = None
        asked = 0.0  # when a stop was first asked for
        timed_out = False
        last_beat = 0.0
        status = "PENDING"
        while True:
            self._read(progress, seen)
            try:
                status = self.jobs.status(self.submission_id)
            except RayJobError as exc:  # the head is away: keep the job, try again
                log.warning("cannot read the Ray job's status", error=str(exc))
                status = "UNREACHABLE"
            if status in FINAL or status == "UNKNOWN":
                break
            now = time.monotonic()
            if detach_requested() and stop_sent is None:
                return Detached(self.submission_id)
            if stop_sent is None and (stop_requested() or self._expired(now)):
                timed_out = not stop_requested()
                asked = asked or now
                if now - asked > self.time_limit.grace_s + UNREACHABLE_GRACE_S:
                    break  # the head does not answer: the job is given up
                log.info("stopping the Ray job", submission_id=self.submission_id)
                try:
                    self.jobs.stop(self.submission_id)
                    stop_sent = now
                except RayJobError as exc:
                    log.warning("cannot stop the Ray job", error=str(exc))
            if now - last_beat > self.heartbeat_s:
                heartbeat()
                last_beat = now
            time.sleep(POLL_S)
        self._read(progress, seen)
        self._parser.close()
        return self._end(status, seen, timed_out)

    def _expired(self, now: float) -> bool:
        return self.time_limit.expired(now - self.started)

    def _read(self, progress: dict[str, Any], seen: dict[str, Any]) -> None:
        """The progress events the job appended since the last look."""
        try:
            with open(self.run_dir / PROGRESS_FILE, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except OSError:
            return
        self._offset += len(chunk)
        for ev in self._parser.feed(chunk):
            if isinstance(ev, DoneEvent):
                seen["done"] = ev
            elif isinstance(ev, ErrorEvent) and seen["error"] is None:
                seen["error"], seen["code"] = ev.message, ev.code
            apply_event(progress, ev)

    def _end(self, status: str, seen: dict[str, Any], timed_out: bool) -> ChildEnd:
        last_error = seen["error"]
        if status == "SUCCEEDED":
            code = int(ExitCode.OK)
        elif status == "STOPPED":
            code = int(ExitCode.CANCELLED)
        else:
            code = seen["code"] if seen["code"] else int(ExitCode.ERROR)
            if last_error is None:
                last_error = (
                    "the Ray cluster no longer knows the job"
                    if status == "UNKNOWN"
                    else self.jobs.last_log_line(self.submission_id)
                )
        return ChildEnd(
            code, seen["done"], last_error, self.time_limit.timeout_s if timed_out else None
        )

"""A job's hub base fetched before its run is prepared: the daemon starts
``python -m services.training.hub_download`` as a child process (never downloading in its
own), under the job's time limit, and follows its ``download`` progress events into the
job's progress (``status``, ``jobs`` and ``train --wait`` show "downloading ORG/NAME: x of
y GB"). A cancel or a daemon stop ends it like a training child; the files it completed
are kept for the next attempt."""

from __future__ import annotations

import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import structlog

from daemon.child import Outcome, TimeLimit, TrainingChild, classify_exit
from services.errors import PersonadError
from services.ledger import Job, Ledger
from services.settings import Settings
from services.training.base_model import parse_spec

log = structlog.get_logger(__name__)


def missing_hub_base(spec: str, cache_dir: Path) -> str | None:
    """The repo id of a hub base that is not downloaded yet; None for any other spec (a
    bad one included: preparing the run reports it)."""
    from services.training.hub_download import cached_snapshot

    try:
        parsed = parse_spec(spec)
    except PersonadError:
        return None
    if parsed.kind != "hub" or cached_snapshot(parsed.location, cache_dir) is not None:
        return None
    return parsed.location


class Run(Protocol):
    """What the supervisor knows of the running job (``daemon.supervisor.Running``)."""

    job: Job
    run_dir: Path
    progress: dict[str, Any]
    cancel: bool
    base: str | None
    started: float


def download_base(
    settings: Settings,
    ledger: Ledger,
    run: Run,
    python: str | None,
    stopping: threading.Event,
) -> Outcome | None:
    """Download the run's base into ``<state>/base-models/hub`` when it is a hub id not
    downloaded yet; None when there is nothing (left) to download, else the job's outcome
    (failed with the reason, cancelled, interrupted)."""
    t = settings.training
    cache_dir = settings.state_dir / "base-models"
    repo_id = missing_hub_base(run.base or t.base_model, cache_dir)
    if repo_id is None:
        return None

    def command(progress_fd: int) -> list[str]:
        return [
            python or t.python or sys.executable,
            "-m",
            "services.training.hub_download",
            "--repo",
            repo_id,
            "--cache-dir",
            str(cache_dir),
            "--run-dir",
            str(run.run_dir),
            "--progress-fd",
            str(progress_fd),
        ]

    run.progress.update(
        phase="downloading", download={"repo": repo_id, "done_bytes": 0, "total_bytes": 0}
    )
    ledger.try_set_progress(run.job.id, run.progress)
    child = TrainingChild(
        run.run_dir,
        command,
        time_limit=TimeLimit(t.job_timeout_s, t.stop_grace_s),
        started=run.started,
    )
    pid = child.spawn()
    log.info("downloading the base model", repo=repo_id, pid=pid)
    end = child.supervise(
        run.progress,
        stop_requested=lambda: run.cancel or stopping.is_set(),
        heartbeat=lambda: ledger.try_set_progress(run.job.id, run.progress),
    )
    run.progress.pop("download", None)
    if end.returncode == 0 and end.done is not None:
        log.info("base model downloaded", repo=repo_id, path=end.done.artifact)
        return None
    outcome = classify_exit(
        end.returncode,
        done=None,
        last_error=end.last_error,
        cancelled=run.cancel,
        timed_out=end.timed_out,
        stopping=stopping.is_set(),
    )
    if outcome.state == "failed" and end.timed_out is None:
        why = end.last_error or f"the download process failed (exit {end.returncode})"
        outcome = replace(outcome, reason=f"cannot download the base model: {why}", error=why)
    return outcome

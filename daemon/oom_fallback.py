"""The supervisor's out-of-memory fallback: one more attempt with the next cheaper plan
(``services.training.oom_retry``), on record in the job's ledger row."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import structlog

from daemon.child import Outcome
from services.ledger import Job, Ledger
from services.training.command import ExitCode
from services.training.oom_retry import cheaper_plan

log = structlog.get_logger(__name__)


class Run(Protocol):
    job: Job
    run_dir: Path
    progress: dict[str, Any]


def retry_cheaper(
    ledger: Ledger, run: Run, failed: Outcome, train: Callable[[], Outcome], stopped: bool
) -> Outcome:
    """When ``failed`` ran out of memory (and the job was not stopped): ``train()`` again
    with the next cheaper memory plan (a smaller micro-batch, then QLoRA or 8-bit AdamW)
    written into the run; the plans stay in ``oom_fallback.json`` and the job's progress,
    then its result. Else, or when there is no cheaper plan, ``failed`` itself."""
    if failed.exit_code != ExitCode.OOM or stopped:
        return failed
    retry = cheaper_plan(run.run_dir, failed.error or failed.reason)
    if retry is None:
        return failed
    log.warning("out of memory: retrying with a cheaper plan", **retry.note)
    run.progress.clear()
    run.progress.update(phase="retrying", plan=retry.plan, oom_fallback=retry.note)
    ledger.set_progress(run.job.id, run.progress)
    outcome = train()
    return replace(outcome, result={**(outcome.result or {}), "oom_fallback": retry.note})


def with_note(outcome: Outcome) -> Outcome:
    """The outcome's reason says that it was retried after running out of memory."""
    fallback = (outcome.result or {}).get("oom_fallback")
    if not fallback:
        return outcome
    note = f"retried after running out of memory: {fallback['from']} -> {fallback['to']}"
    return replace(outcome, reason=f"{outcome.reason} ({note})")

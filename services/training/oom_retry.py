"""The retry of a run that ran out of memory: its next cheaper plan (no torch).

:func:`cheaper_plan` reads the run's ``config.json``, asks the planner for the plan after
the one that failed (``memory_plan.fallback``: half the micro-batch, else QLoRA after LoRA
or 8-bit AdamW after a full fine-tune), writes it back as the run's configuration, clears
what the failed attempt left (checkpoints, progress) and records both plans in
``oom_fallback.json``. A run is retried once: a configuration that already came from a
fallback has none.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from services import durable
from services.errors import PersonadError
from services.training.config import CONFIG_FILE, ResolvedConfig
from services.training.job_memory import plan_fallback

log = structlog.get_logger(__name__)

FALLBACK_FILE = "oom_fallback.json"
LEFTOVERS = ("checkpoints", "adapter", "model")


@dataclass(frozen=True)
class Retry:
    plan: dict[str, Any]  # the new plan (as in config.json)
    note: dict[str, Any]  # what the ledger records: error, from, to


def _label(plan: dict[str, Any]) -> str:
    return f"{plan['strategy']} micro-batch {plan['micro_batch']}"


def cheaper_plan(run_dir: Path, error: str) -> Retry | None:
    """The run's configuration with its next cheaper plan, written; None when there is none
    (or the run was already retried)."""
    try:
        resolved = ResolvedConfig.read(run_dir / CONFIG_FILE)
        if not resolved.plan or resolved.plan.get("fallback_from"):
            return None
        cheaper = plan_fallback(resolved)
    except (PersonadError, OSError, KeyError, TypeError, ValueError) as exc:
        log.warning("no cheaper plan", error=str(exc))
        return None
    if cheaper is None or cheaper.plan is None:
        return None
    note = {
        "error": error,
        "from": _label(resolved.plan),
        "to": _label(cheaper.plan),
        "failed_plan": resolved.plan,
        "plan": cheaper.plan,
    }
    durable.write_json(run_dir / FALLBACK_FILE, note)
    cheaper.write(run_dir)
    for name in LEFTOVERS:
        shutil.rmtree(run_dir / name, ignore_errors=True)
    (run_dir / "progress.jsonl").unlink(missing_ok=True)
    short = {k: v for k, v in note.items() if k in ("error", "from", "to")}
    return Retry(cheaper.plan, short)

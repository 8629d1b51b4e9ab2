"""Bounded growth of the run directories: weights go, summaries stay.

A finished run keeps its summaries, evaluation and report (``run-summary.json``,
``eval.json``, ``fidelity.json``, ``progress.jsonl``, logs, ``report.*``, the dataset
files). Its weights are pruned by :func:`prune_run_weights`:

- ``checkpoints/`` of every finished run (the artifact holds the best state);
- ``adapter/`` and ``model/`` of a run whose candidate was not published (rejected,
  failed, cancelled, skipped) or whose version has left the registry (retired), except
  for the newest ``keep_unpublished`` such runs of the profile;
- a run whose version is still in the registry (active or retained) keeps its artifact.

Runs of queued or running jobs, and runs no job records, are never touched.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from services.ledger import Ledger
from services.settings import Settings

WEIGHTS = ("adapter", "model")
CHECKPOINTS = "checkpoints"
# Interrupted jobs are left alone: their retry may still be queued.
FINISHED = ("succeeded", "failed", "rejected", "cancelled", "skipped")


@dataclass
class Pruned:
    dirs: list[str] = field(default_factory=list)
    freed_bytes: int = 0


def tree_bytes(path: Path) -> int:
    """Bytes of the regular files below ``path`` (links not followed)."""
    if path.is_symlink() or not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _remove(path: Path, pruned: Pruned) -> None:
    if path.is_dir() and not path.is_symlink():
        size = tree_bytes(path)
        shutil.rmtree(path, ignore_errors=True)
        pruned.dirs.append(str(path))
        pruned.freed_bytes += size


def prune_run_weights(
    ledger: Ledger, state_dir: Path, profile: str, keep_unpublished: int
) -> Pruned:
    """Prune the weights of the profile's finished runs (see the module's docstring)."""
    runs_root = (state_dir / "runs").resolve()
    registered = _registered(ledger, state_dir, profile)
    rows = ledger.db.query(
        "SELECT run_dir FROM jobs WHERE profile = ? AND run_dir IS NOT NULL AND state IN "
        f"({', '.join('?' * len(FINISHED))}) ORDER BY COALESCE(finished_at, created_at) DESC",
        [profile, *FINISHED],
    )
    pruned, kept = Pruned(), 0
    for row in rows:
        run = Path(str(row["run_dir"]))
        if not run.is_dir() or not run.resolve().is_relative_to(runs_root):
            continue
        _remove(run / CHECKPOINTS, pruned)
        if str(run) in registered or not any((run / w).is_dir() for w in WEIGHTS):
            continue
        if kept < keep_unpublished:
            kept += 1
            continue
        for weights in WEIGHTS:
            _remove(run / weights, pruned)
    return pruned


def _registered(ledger: Ledger, state_dir: Path, profile: str) -> set[str]:
    """Run directories of the profile's versions still in the local registry."""
    out = set()
    for r in ledger.db.query(
        "SELECT version, run_dir FROM model_versions WHERE profile = ? AND run_dir IS NOT NULL",
        [profile],
    ):
        if (state_dir / "models" / profile / f"v{r['version']}").is_dir():
            out.add(str(r["run_dir"]))
    return out


def remove_partial_outputs(run_dir: Path) -> Pruned:
    """A run that failed for a full disk: its checkpoints and weights, half written
    perhaps, go; its summaries and logs (which say what happened) stay."""
    pruned = Pruned()
    for name in (CHECKPOINTS, *WEIGHTS):
        _remove(run_dir / name, pruned)
    return pruned


def tidy_after_job(ledger: Ledger, settings: Settings, job_id: int, disk_full: bool) -> Pruned:
    """As a job ends (before it is recorded): a disk-full failure's partial outputs,
    then the retention of the runs finished before it."""
    pruned = Pruned()
    job = ledger.job(job_id)
    if job is None:
        return pruned
    if disk_full and job.run_dir:
        pruned = remove_partial_outputs(Path(job.run_dir))
    t = settings.training
    if t.prune_run_weights:
        more = prune_run_weights(
            ledger, settings.state_dir, job.profile, t.keep_unpublished_weights
        )
        pruned.dirs += more.dirs
        pruned.freed_bytes += more.freed_bytes
    return pruned

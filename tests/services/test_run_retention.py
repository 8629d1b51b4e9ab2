"""Run directories keep summaries, evaluation and report; weights of unpublished or
retired runs go by the retention setting, and so do every finished run's checkpoints."""

from __future__ import annotations

import time
from pathlib import Path

from services.ledger import Ledger
from services.run_retention import prune_run_weights

SUMMARIES = ("run-summary.json", "eval.json", "progress.jsonl", "report.md")


def _run(state: Path, ledger: Ledger, state_name: str, n: int) -> Path:
    run = state / "runs" / "alice" / "2026-11-29" / f"lora-job{n}"
    for part in ("checkpoints/step-2", "adapter"):
        (run / part).mkdir(parents=True)
        (run / part / "adapter_model.safetensors").write_bytes(b"w" * 1000)
    for name in SUMMARIES:
        (run / name).write_text("{}")
    job, _ = ledger.enqueue_job("alice", "lora", args={"n": n})
    ledger.start_job(job.id, str(run))
    if state_name != "running":
        ledger.finish_job(job.id, state_name)
    time.sleep(0.002)  # finished_at orders them
    return run


def test_weights_of_unpublished_and_retired_runs_go_summaries_stay(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ledger = Ledger(state / "ledger.sqlite3")
    published = _run(state, ledger, "succeeded", 1)  # v1, still in the registry
    retired = _run(state, ledger, "succeeded", 2)  # v2, retired from the registry
    rejected = _run(state, ledger, "rejected", 3)
    failed = _run(state, ledger, "failed", 4)  # the newest unpublished run
    running = _run(state, ledger, "running", 5)
    (state / "models" / "alice" / "v1").mkdir(parents=True)
    for version, run in ((1, published), (2, retired)):
        ledger.add_version(
            "alice", version, kind="lora", job_id=None, run_dir=str(run), path=None, base="b"
        )
    pruned = prune_run_weights(ledger, state, "alice", keep_unpublished=1)
    assert not (published / "checkpoints").exists() and (published / "adapter").is_dir()
    assert (failed / "adapter").is_dir() and not (failed / "checkpoints").exists()
    for gone in (retired, rejected):
        assert not (gone / "adapter").exists() and not (gone / "checkpoints").exists()
    assert (running / "checkpoints").is_dir() and (running / "adapter").is_dir()
    for run in (published, retired, rejected, failed, running):
        assert all((run / name).is_file() for name in SUMMARIES)
    assert pruned.freed_bytes == 6 * 1000  # four checkpoints, two adapters
    # Nothing kept: the newest unpublished run's weights go too; a second pass is a no-op.
    assert prune_run_weights(ledger, state, "alice", keep_unpublished=0).freed_bytes == 1000
    assert prune_run_weights(ledger, state, "alice", keep_unpublished=0).dirs == []

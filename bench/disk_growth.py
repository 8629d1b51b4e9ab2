"""Disk used per month at 100 memories a day with a daily LoRA on SmolLM2, before and
after run-weight retention, from the sizes of one measured day.

Runs one real day on this machine: a daemon (local embedder, no Ollama) on the embedded
SmolLM2-135M-Instruct, 100 memories dropped in, one LoRA job (4 optimizer steps with a
checkpoint every 2: the default save_total_limit of 2 checkpoints), with pruning off.
It measures the ledger and index bytes per memory, the run directory (checkpoints,
adapter, the rest) and the published version, then computes 30 days:

- before: every run keeps its checkpoints and adapter (training.prune_run_weights false);
- after: runs keep their summaries; the weights kept are bounded (the registry's
  ollama.keep_versions versions with their runs' adapters, and
  training.keep_unpublished_weights unpublished runs), so they do not grow with time.

    .venv/bin/python bench/disk_growth.py [--json-out F]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DAYS = 30
PER_DAY = 100
MB = 1024 * 1024


def _memories(folder: Path, day: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "prompt": f"What did you notice on day {day}, hour {i % 24}, moment {i}?",
            "completion": f"On day {day} at moment {i} I watched the tide turn by the old "
            f"harbour wall and wrote down the colour of the water, number {i * 7 % 31}.",
            "quality_score": 8 + i % 2,
        }
        for i in range(PER_DAY)
    ]
    (folder / f"day-{day:03d}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def measure(root: Path) -> dict[str, Any]:
    from services.run_retention import tree_bytes
    from tests.reliability.backups import local_daemon

    env = {
        "PERSONAD_TRAINING__PRUNE_RUN_WEIGHTS": "false",
        "PERSONAD_TRAINING__DEVICE": "cpu",
        "PERSONAD_TRAINING__CONFIG": json.dumps(
            {"max_steps": 4, "save_steps": 2, "gate.fidelity_probes": 0}
        ),
        "PERSONAD_TRIGGERS__LORA_THRESHOLD": "1000000",
        "PERSONAD_TRIGGERS__LORA_SCHEDULE": "",
        "PERSONAD_TRIGGERS__FULL_SCHEDULE": "",
    }
    with local_daemon(root, env) as d:
        status = lambda: d.call("status")["profiles"].get("alice", {})  # noqa: E731
        before = tree_bytes(d.state_dir)
        _memories(d.profiles_dir / "alice" / "memory", 1)
        d.wait_for(lambda: status().get("indexed") == PER_DAY, 300)
        time.sleep(2)
        ledger_index = tree_bytes(d.state_dir / "index") + sum(
            tree_bytes(p) for p in d.state_dir.glob("ledger.sqlite3*")
        )
        started = time.monotonic()
        job = d.call("train", {"profile": "alice", "force": True})["job"]
        done = d.wait_for(
            lambda: next(
                (
                    j
                    for j in d.call("jobs")["jobs"]
                    if j["id"] == job["id"] and j["state"] not in ("queued", "running")
                ),
                None,
            ),
            3600,
            interval=2,
        )
        run = Path(done["run_dir"])
        parts = {p.name: tree_bytes(p) for p in run.iterdir() if p.is_dir()}
        total = tree_bytes(run)
        version = d.state_dir / "models" / "alice" / "v1"
        return {
            "job": {"state": done["state"], "reason": done.get("reason")},
            "job_seconds": round(time.monotonic() - started, 1),
            "state_before_bytes": before,
            "ledger_and_index_bytes_per_memory": round(ledger_index / PER_DAY),
            "run_bytes": total,
            "run_parts_bytes": parts,
            "run_summaries_bytes": total
            - sum(parts.get(n, 0) for n in ("checkpoints", "adapter", "model")),
            "version_bytes": tree_bytes(version) if version.is_dir() else 0,
        }


def month(m: dict[str, Any], keep_versions: int = 3, keep_unpublished: int = 1) -> dict[str, Any]:
    memories = DAYS * PER_DAY * m["ledger_and_index_bytes_per_memory"]
    summaries = DAYS * m["run_summaries_bytes"]
    weights = m["run_parts_bytes"].get("checkpoints", 0) + m["run_parts_bytes"].get("adapter", 0)
    adapter = m["run_parts_bytes"].get("adapter", 0)
    registry = min(DAYS, keep_versions) * m["version_bytes"]
    before = memories + summaries + DAYS * weights + registry
    bounded = registry + (keep_versions + keep_unpublished) * adapter
    after = memories + summaries + bounded
    return {
        "days": DAYS,
        "memories_per_day": PER_DAY,
        "before_mb_per_month": round(before / MB, 1),
        "after_first_month_mb": round(after / MB, 1),
        "after_growth_mb_per_month": round((memories + summaries) / MB, 1),
        "after_weights_bounded_mb": round(bounded / MB, 1),
        "parts_mb": {
            "memories (ledger + index)": round(memories / MB, 1),
            "run summaries": round(summaries / MB, 1),
            "run weights before": round(DAYS * weights / MB, 1),
            "registry (keep_versions)": round(registry / MB, 1),
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--json-out", type=Path)
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="pdg-"))
    measured = measure(root)
    result = {"measured_day": measured, "month": month(measured)}
    print(json.dumps(result, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

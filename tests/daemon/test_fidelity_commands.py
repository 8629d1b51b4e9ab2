"""status and versions show each published version's persona fidelity (from its gate
verdict), and `personad versions` prints it."""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.commands import Commands
from daemon.runtime import IngestState
from services.generation_pool import WorkerPool
from services.ledger import Ledger
from services.settings import Settings, load_settings
from tests.fidelity_scores import fidelity_scores


@dataclass
class StillRuntime:
    """A daemon with nothing running: the ledger and files are the real ones."""

    settings: Settings
    state: str = "running"
    started_monotonic: float = field(default_factory=time.monotonic)
    index: Any = None
    supervisor: Any = None
    generation_pool: WorkerPool = field(default_factory=WorkerPool)

    def queue_depth(self, profile: str | None = None) -> int:
        return 0

    def ingest_state(self) -> IngestState:
        return IngestState("idle", 0, 0, 0, None)

    def request_reindex(self, profile: str) -> Future[int] | None:
        return None

    def describe_schedules(self) -> list[dict[str, Any]]:
        return []

    def http_info(self) -> dict[str, Any] | None:
        return None

    def http_token(self) -> str:
        return ""


def test_versions_and_status_carry_fidelity(tmp_path: Path) -> None:
    settings = load_settings(overrides={"state_dir": str(tmp_path / "state")})
    runs = []
    for n, recall in ((1, 0.4), (2, 0.7)):
        run = tmp_path / "runs" / f"lora-job{n}"
        run.mkdir(parents=True)
        verdict = {
            "passed": True,
            "fidelity": {
                "passed": True,
                "probes": 10,
                "transfer_against": "base",
                "candidate": fidelity_scores(recall, 0.9, 0.8),
                "reference": fidelity_scores(0.0, 0.3, None),
            },
        }
        (run / "eval.json").write_text(json.dumps(verdict))
        runs.append(run)
    with Ledger(settings.ledger_path) as ledger:
        ledger.ensure_profile("alice")
        for n, run in enumerate(runs, 1):
            ledger.add_version(
                "alice", n, kind="lora", job_id=n, run_dir=str(run), path=None, base="b"
            )
        ledger.add_version(
            "alice", 3, kind="lora", job_id=3, run_dir=None, path=None, base="b", activate=False
        )
    commands = Commands(StillRuntime(settings))
    try:
        known = asyncio.run(commands.versions({"profile": "alice"}))
        status = asyncio.run(commands.status({}))
    finally:
        commands.close()
    got = {v["version"]: v["fidelity"] for v in known["versions"]}
    assert got[1]["recall"] == 0.4 and got[2]["recall"] == 0.7
    assert got[2]["recall_with_retrieval"] == 0.9 and got[2]["reference"]["recall"] == 0.0
    assert got[3] is None  # no verdict recorded
    alice = status["profiles"]["alice"]
    assert alice["active_version"] == "v2"
    assert alice["active_fidelity"]["recall"] == 0.7

    # What a person reads.
    from daemon import render

    with render.console.capture() as captured:
        render.versions(known, None)  # type: ignore[arg-type]
    rows = [line for line in captured.get().splitlines() if line.startswith("│ v")]
    cells = [[c.strip() for c in row.strip("│").split("│")] for row in rows]
    assert [c[5:8] for c in cells] == [["40%", "90%", "80%"], ["70%", "90%", "80%"], ["-"] * 3]
    with render.console.capture() as captured:
        render.status(status, None)  # type: ignore[arg-type]
    assert "alice v2: recall 70% (with memories 90%), style 80%" in captured.get()

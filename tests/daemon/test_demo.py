"""`personad demo`: the whole cycle, here on the tiny model so it runs in seconds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from services.demo_persona import PROFILE
from tests.daemon_process import REPO

FAST = {
    "max_steps": 6,
    "batch_size": 4,
    "gradient_accumulation_steps": 1,
    "learning_rate": 0.01,
    "max_seq_length": 256,
}


def test_demo_runs_the_whole_cycle(short_tmp: Path, tiny_model: Path) -> None:
    root = short_tmp / "demo"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "daemon.cli",
            "demo",
            "--dir",
            str(root),
            "--base-model",
            str(tiny_model),
            "--family",
            "smollm",
            "--train-config",
            json.dumps(FAST),
            "--json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for step in (
        "ingesting and indexing",
        "search:",
        "the LoRA threshold was crossed",
        "ask:",
        "run report",
        "demo complete",
    ):
        assert step in done.stderr
    # Off a terminal, training progress comes as plain lines, one per step.
    assert f"job 1 running: step {FAST['max_steps']}/{FAST['max_steps']}" in done.stderr
    result = json.loads(done.stdout)
    assert result["memories"] == 154
    assert result["job"]["state"] == "succeeded"
    assert result["active_version"] == "v1"
    assert (root / "state" / "models" / PROFILE / "active").resolve().name == "v1"
    # The gate compared the candidate with the base on held-out samples.
    gate = result["gate"]
    assert gate["passed"] is True
    assert gate["heldout"]["candidate"] < gate["heldout"]["reference"]
    # Search found the sailing memories; ask answered with both models.
    assert "sailing" in result["search"][0]["text"]
    assert set(result["answers"]) == {"v1", "base"}
    assert all(isinstance(a["text"], str) for a in result["answers"].values())
    assert Path(result["report"]).is_file()
    # The persona's own held-out questions were written beside its memories, and the gate
    # asked them of the base and the fine-tuned model, without and with memories.
    probes = (root / "profiles" / PROFILE / "probes.jsonl").read_text().splitlines()
    assert len(probes) == 10
    fidelity = result["fidelity"]
    assert fidelity["probes"] == 10
    for model in (fidelity, fidelity["reference"]):
        assert 0.0 <= model["recall"] <= 1.0 and 0.0 <= model["recall_with_retrieval"] <= 1.0
    assert 0.0 <= fidelity["transfer"] <= 1.0
    assert "persona fidelity, fine-tuned: recall" in done.stderr
    # A second demo into the same directory is refused, not mixed in.
    again = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "demo", "--dir", str(root)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 1 and "already holds a demo" in again.stderr

"""`personad dataset`: from the ledger to a run directory, without a daemon."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from services.curation import load_rules
from services.ingest import Ingestor, make_curator
from services.ledger import Ledger
from tests.daemon_process import REPO


def _mixed_profile(root: Path) -> Path:
    mem = root / "profiles" / "alice" / "memory"
    mem.mkdir(parents=True)
    (mem / "pc.jsonl").write_text(
        "\n".join(
            json.dumps(
                {
                    "prompt": f"Question {i}: how was the hike on trail {i}?",
                    "completion": f"Trail {i} was steep but the view over the valley made every "
                    f"step worth it, and we stopped for tea at the top.",
                    "quality_score": 7 + (i % 3),
                }
            )
            for i in range(80)
        )
    )
    for i in range(40):
        (mem / f"evt-{i}.json").write_text(
            json.dumps(
                {
                    "id": f"evt-2025110612{i:04d}",
                    "timestamp": "2025-11-06T12:00:00Z",
                    "type": "inner_dialogue",
                    "importance": 0.9,
                    "content": f"I keep wondering whether moving to the coast {i} is right, "
                    "given how much I value quiet mornings and the sound of the sea.",
                }
            )
        )
    for i in range(30):
        (mem / f"tool-{i}.json").write_text(
            json.dumps(
                {
                    "id": f"evt-2025110613{i:04d}",
                    "timestamp": "2025-11-06T13:00:00Z",
                    "type": "tool_use",
                    "importance": 0.8,
                    "content": f"Add 'buy rope {i}' to the shopping list",
                    "response": "Added it to the list for Saturday.",
                    "metadata": {
                        "toolName": "shopping_list.add",
                        "toolInputs": {"item": f"rope {i}"},
                        "toolOutputs": {"ok": True},
                    },
                }
            )
        )
    return mem


def _ingest(state: Path, mem: Path) -> Ledger:
    ledger = Ledger(state / "ledger.sqlite3")
    ingestor = Ingestor(ledger, None, max_file_bytes=10**7, curate=make_curator(load_rules()))
    for path in sorted(mem.iterdir()):
        ingestor.ingest_file("alice", path)
    return ledger


def _cli_argv(state: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "daemon.cli", "dataset", "--state-dir", str(state), *args]


def _cli(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _cli_argv(state, *args),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_dataset_of_a_mixed_profile(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _ingest(state, _mixed_profile(tmp_path))
    out = tmp_path / "run"
    done = _cli(state, "alice", "--max", "100", "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["status"] == "ok"
    assert summary["dataset"]["counts"]["selected"] == 100
    for name in (
        "curated_memories.json",
        "formatted_samples.json",
        "schema_applied.json",
        "fine_tune_dataset.jsonl",
        "run-summary.json",
    ):
        assert (out / name).is_file()
    lines = [
        json.loads(line) for line in (out / "fine_tune_dataset.jsonl").read_text().splitlines()
    ]
    assert len(lines) == 100
    assert {line["mode"] for line in lines} == {"emulation", "dual", "agent"}
    assert {line["weight"] for line in lines} <= {1.0, 1.5, 2.0}
    # Best first: every 2.0 sample comes before any 1.0 sample.
    weights = [line["weight"] for line in lines]
    assert weights == sorted(weights, reverse=True)
    for line in lines:
        assert line["text"] == line["prompt"] + line["completion"]
        assert line["prompt"].endswith("<|im_start|>assistant\n")  # SmolLM2's own template
    agent = next(line for line in lines if line["mode"] == "agent")
    assert "<instruction>" in agent["prompt"] and '"shopping_list.add"' in agent["completion"]
    # The persona's head, as training would build it; the profile's own system.txt wins.
    assert json.loads((out / "persona.json").read_text())["source"] == "derived"
    own = tmp_path / "profiles" / "alice" / "system.txt"
    own.parent.mkdir(parents=True, exist_ok=True)
    own.write_text("You are Alice, a sailor. Be brief.")
    again = subprocess.run(
        [*_cli_argv(state, "alice", "--out", str(tmp_path / "own"), "--json")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PERSONAD_PROFILES_DIR": str(tmp_path / "profiles")},
    )
    assert again.returncode == 0, again.stderr
    first = json.loads((tmp_path / "own" / "fine_tune_dataset.jsonl").open().readline())
    assert first["messages"][0]["content"].startswith("You are Alice, a sailor. Be brief.")
    # For people: the metrics and the verdict.
    shown = _cli(state, "alice", "--mode", "dual", "--family", "qwen")
    assert shown.returncode == 0, shown.stderr
    assert "contamination none" in shown.stdout
    assert "dual 40" in shown.stdout


def test_contaminated_dataset_fails_with_ids_and_tags(tmp_path: Path) -> None:
    state = tmp_path / "state"
    mem = tmp_path / "profiles" / "alice" / "memory"
    mem.mkdir(parents=True)
    (mem / "bad.jsonl").write_text(
        json.dumps(
            {
                "prompt": "What did you think?",
                "completion": "<thought>I was unsure</thought> but I said yes in the end, happily.",
                "quality_score": 9,
            }
        )
    )
    ledger = _ingest(state, mem)
    [memory_id] = ledger.memory_ids("alice")
    out = tmp_path / "run"
    done = _cli(state, "alice", "--out", str(out))
    assert done.returncode == 1
    assert memory_id in done.stderr and "<thought>" in done.stderr
    assert json.loads((out / "run-summary.json").read_text())["status"] == "failed"
    assert not (out / "fine_tune_dataset.jsonl").exists()


def test_unknown_profile_and_empty_state(tmp_path: Path) -> None:
    done = _cli(tmp_path / "nothing", "alice")
    assert done.returncode == 1 and "nothing ingested yet" in done.stderr
    state = tmp_path / "state"
    _ingest(state, _mixed_profile(tmp_path))
    done = _cli(state, "bob")
    assert done.returncode == 1 and "no profile 'bob' (known: alice)" in done.stderr

"""Ctrl-C and SIGTERM to `status --watch`, `ask`, `train --wait` and `personad demo`: each
ends within 2 s with one line saying what was stopped, and leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import time
from pathlib import Path

import pytest

from tests.daemon_process import DaemonProcess
from tests.reliability.fuzz import fuzz_daemon
from tests.reliability.interruption import Interruption, demo_args, has_socket, interrupt_cli

FAKE_TRAINER = Path(__file__).resolve().parents[1] / "daemon" / "fake_trainer.py"


def assert_clean(result: Interruption, sig: int) -> None:
    said = "\n".join(result.stderr)
    assert result.seconds < 2.0, result.summary()
    assert result.returncode == 128 + sig, result.summary()
    assert "Traceback" not in said and "KeyboardInterrupt" not in said, said
    assert len(result.lines) == 1, result.summary()
    assert f"interrupted ({signal.Signals(sig).name})" in result.lines[0]
    assert result.left == [], result.summary()


def _memories(d: DaemonProcess, n: int) -> None:
    folder = d.profiles_dir / "alice" / "memory"
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "prompt": f"Question {i}?",
            "completion": f"Answer {i}, said with care.",
            "quality_score": 9,
        }
        for i in range(n)
    ]
    (folder / "pc.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    d.wait_for(lambda: _counts(d).get("indexed") == _counts(d).get("eligible_samples") == n, 60)


def _counts(d: DaemonProcess) -> dict:
    return d.call("status")["profiles"].get("alice", {})


def _cli(d: DaemonProcess, *args: str) -> list[str]:
    return [*args, "--socket", str(d.socket)]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_status_watch_ends_with_one_line(short_tmp: Path, sig: int) -> None:
    with fuzz_daemon(short_tmp, indexed=True) as d:
        result = interrupt_cli(
            _cli(d, "status", "--watch", "--interval", "0.2"),
            d.env,
            lambda proc, err: has_socket(proc.pid) and time.sleep(0.5) is None,
            sig,
            settle_s=0.5,
        )
        assert_clean(result, sig)
        assert "status --watch interrupted" in result.lines[0]


def test_ask_ends_with_one_line_while_the_answer_is_under_way(
    short_tmp: Path, tiny_model: Path
) -> None:
    env = {"PERSONAD_TRAINING__BASE_MODEL": str(tiny_model), "PERSONAD_TRAINING__FAMILY": "smollm"}
    with fuzz_daemon(short_tmp, env, indexed=True) as d:
        _memories(d, 3)
        # No version yet: the base model answers, from a worker the daemon starts (seconds).
        result = interrupt_cli(
            _cli(d, "ask", "alice", "Which question was third?"),
            d.env,
            lambda proc, err: has_socket(proc.pid),
            signal.SIGINT,
            settle_s=0.5,
        )
        assert_clean(result, signal.SIGINT)
        assert "ask interrupted (SIGINT)" in result.lines[0]
        assert d.call("ping")["pong"]  # the daemon goes on


def test_train_wait_cancels_the_job_it_queued(short_tmp: Path) -> None:
    python = short_tmp / "fake-python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_TRAINER}" "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    env = {
        "FAKE_TRAINER": "hang",
        "PERSONAD_TRAINING__PYTHON": str(python),
        "PERSONAD_TRAINING__FAMILY": "smollm",
        "PERSONAD_TRAINING__STOP_GRACE_S": "1",
    }
    with fuzz_daemon(short_tmp / "d", env, indexed=True) as d:
        _memories(d, 12)
        result = interrupt_cli(
            _cli(d, "train", "alice", "--wait"),
            d.env,
            lambda proc, err: "job 1 running: step 1" in err,
            signal.SIGTERM,
        )
        assert_clean(result, signal.SIGTERM)
        assert "train --wait interrupted (SIGTERM); job 1 cancelling" in result.lines[0]
        job = d.wait_for(
            lambda: next(j for j in d.call("jobs")["jobs"] if j["state"] != "running"), 30
        )
        assert job["state"] == "cancelled"
        run_dir = Path(job["run_dir"])
        trainer = int((run_dir / "fake.pid").read_text())
        assert not Path(f"/proc/{trainer}").exists() or "Z" in _state(trainer)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


FAST = {"batch_size": 4, "gradient_accumulation_steps": 1, "max_seq_length": 256}


@pytest.mark.parametrize(
    ("moment", "sig"),
    [("ingesting and indexing", signal.SIGTERM), ("job 1 running: step ", signal.SIGINT)],
)
def test_demo_stops_its_daemon_and_training_child(
    short_tmp: Path, tiny_model: Path, moment: str, sig: int
) -> None:
    # Many steps: the demo is still training when the signal comes.
    config = json.dumps({**FAST, "max_steps": 100_000})
    result = interrupt_cli(
        demo_args(short_tmp / "demo", tiny_model, config),
        {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        lambda proc, err: moment in err,
        sig,
    )
    assert_clean(result, sig)
    line = result.lines[0]
    name = signal.Signals(sig).name
    assert "stopped its daemon" in line and "nothing is left running" in line
    doing = "ingesting" if moment.startswith("ingesting") else "training"
    assert f"demo interrupted ({name}) while {doing}; stopped its daemon" in line
    if doing == "training":  # the daemon and the training child it ran
        assert any("services.training" in cmd for cmd in result.tree.values()), result.tree

"""Training jobs through the real daemon: the CLI, a crash mid-job, the retry."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path

from tests.daemon_process import DaemonProcess

HERE = Path(__file__).resolve().parent


def _setup(root: Path, behaviour: str) -> DaemonProcess:
    python = root / "fake-python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{HERE / "fake_trainer.py"}" "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    d = DaemonProcess(
        root,
        env={
            "FAKE_TRAINER": behaviour,
            "PERSONAD_TRAINING__PYTHON": str(python),
            "PERSONAD_TRAINING__FAMILY": "smollm",
            "PERSONAD_TRAINING__STOP_GRACE_S": "1",
        },
    )
    mem = d.profiles_dir / "alice" / "memory"
    mem.mkdir(parents=True)
    (mem / "pc.jsonl").write_text(
        "\n".join(
            json.dumps(
                {
                    "prompt": f"Question {i}?",
                    "completion": f"Answer {i}, said with care.",
                    "quality_score": 9,
                }
            )
            for i in range(12)
        )
    )
    return d


def _eligible(d: DaemonProcess) -> bool:
    return d.call("status")["profiles"].get("alice", {}).get("eligible_samples") == 12


def test_train_wait_follows_the_job_to_its_end(short_tmp: Path) -> None:
    d = _setup(short_tmp, "ok").start()
    try:
        d.wait_for(lambda: _eligible(d))
        done = d.cli("train", "alice", "--wait")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "job 1 succeeded" in done.stdout
        jobs = d.cli_json("jobs")["jobs"]
        assert [(j["id"], j["state"]) for j in jobs] == [(1, "succeeded")]
        bad = d.cli("train", "nobody")
        assert bad.returncode == 1 and "no profile 'nobody'" in bad.stderr
    finally:
        assert d.stop() == 0


def test_daemon_killed_mid_job_marks_it_interrupted_and_retries(short_tmp: Path) -> None:
    d = _setup(short_tmp, "hang").start()
    d.wait_for(lambda: _eligible(d))
    job = d.call("train", {"profile": "alice"})["job"]
    running = d.wait_for(
        lambda: next(
            (
                j
                for j in d.call("jobs")["jobs"]
                if j["id"] == job["id"] and j["state"] == "running" and j.get("pid")
            ),
            None,
        )
    )
    child = running["pid"]
    d.kill()  # SIGKILL: no chance to clean up; the training child is orphaned
    assert os.path.exists(f"/proc/{child}")
    d.start()
    try:
        jobs = {j["id"]: j for j in d.call("jobs")["jobs"]}
        assert jobs[job["id"]]["state"] == "interrupted"
        retry = next(j for j in jobs.values() if j["retry_of"] == job["id"])
        assert retry["reason"].startswith("retry 2 of 3")
        assert retry["state"] in ("queued", "running")
        # The orphan was ended at start-up.
        deadline = time.monotonic() + 5
        while os.path.exists(f"/proc/{child}") and time.monotonic() < deadline:
            status = Path(f"/proc/{child}/stat").read_text().split()[2]
            if status == "Z":
                break
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{child}") or status == "Z"
        d.call("cancel", {"job": retry["id"]})
        d.wait_for(
            lambda: (
                next(j for j in d.call("jobs")["jobs"] if j["id"] == retry["id"])["state"]
                == "cancelled"
            )
        )
    finally:
        assert d.stop() == 0

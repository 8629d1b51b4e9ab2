"""The job supervisor against real child processes that misbehave."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.curation import load_rules
from services.ingest import Ingestor, make_curator
from services.ledger import Ledger
from services.settings import Settings, load_settings
from tests.daemon.jobs_harness import Harness


def _profile(state: Path, profiles: Path, n: int = 24) -> None:
    mem = profiles / "alice" / "memory"
    mem.mkdir(parents=True)
    (mem / "pc.jsonl").write_text(
        "\n".join(
            json.dumps(
                {
                    "prompt": f"question number {i} about the world?",
                    "completion": f"answer number {i}: hello world, the question and the answer.",
                    "quality_score": 9,
                }
            )
            for i in range(n)
        )
    )
    ledger = Ledger(state / "ledger.sqlite3")
    Ingestor(ledger, None, max_file_bytes=10**7, curate=make_curator(load_rules())).ingest_file(
        "alice", mem / "pc.jsonl"
    )
    ledger.close()


def _settings(root: Path, model: Path, **training: object) -> Settings:
    return load_settings(
        overrides={
            "state_dir": str(root / "state"),
            "profiles_dir": str(root / "profiles"),
            "training": {"base_model": str(model), **training},
        }
    )


@pytest.fixture
def harness(tmp_path: Path, tiny_model: Path, fake_python: str) -> Iterator[Harness]:
    _profile(tmp_path / "state", tmp_path / "profiles")
    h = Harness(_settings(tmp_path, tiny_model, job_timeout_s=3, stop_grace_s=1), fake_python)
    h.supervisor.start()
    yield h
    h.supervisor.stop(10)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie is gone too.
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def test_garbage_and_oversized_progress_lines_are_tolerated(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAINER", "ok")
    job = harness.run()
    assert job.state == "succeeded", job
    assert job.result is not None and job.result["artifact"].endswith("/adapter")
    assert job.progress is not None
    assert (job.progress["step"], job.progress["total_steps"]) == (4, 4)
    assert job.progress["eval_loss"] == 0.5
    run_dir = Path(job.run_dir or "")
    # The run dir was prepared before the child ran.
    assert (run_dir / "fine_tune_dataset.jsonl").is_file()
    assert json.loads((run_dir / "config.json").read_text())


@pytest.mark.parametrize(
    ("behaviour", "state", "reason"),
    [
        ("crash", "failed", "CUDA error: device-side assert"),
        ("crash-silent", "failed", "Segmentation fault in libtorch"),
        ("oom", "failed", "out of memory: CUDA out of memory"),
        ("bad-input", "failed", "bad input: dataset is empty"),
    ],
)
def test_failures_are_classified(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, behaviour: str, state: str, reason: str
) -> None:
    monkeypatch.setenv("FAKE_TRAINER", behaviour)
    job = harness.run()
    assert job.state == state
    assert reason in (job.reason or "")
    assert job.exit_code != 0


def test_a_hung_child_times_out_and_its_group_is_gone(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAINER", "hang")
    job = harness.run()
    assert job.state == "failed"
    assert "timed out after 3s" in (job.reason or "")
    pid = int((Path(job.run_dir or "") / "fake.pid").read_text())
    assert _gone(pid)


def test_a_child_ignoring_sigterm_is_killed(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAINER", "ignore-term")
    started = time.monotonic()
    job = harness.run()
    assert job.state == "failed" and "timed out" in (job.reason or "")
    assert time.monotonic() - started < 15
    assert _gone(int((Path(job.run_dir or "") / "fake.pid").read_text()))


def test_a_grandchild_holding_the_pipe_goes_with_the_job(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAINER", "grandchild")
    job = harness.run()
    assert job.state == "failed"
    assert "without reporting a result" in (job.reason or "")
    grandchild = int((Path(job.run_dir or "") / "grandchild.pid").read_text())
    deadline = time.monotonic() + 5
    while not _gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(grandchild)


def test_cancel_a_running_job(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_TRAINER", "hang")
    harness.settings.training.job_timeout_s = 60
    job, _ = harness.ledger.enqueue_job("alice", "lora")
    harness.supervisor.wake()
    harness.wait(job.id, states=("running",))
    deadline = time.monotonic() + 20
    while not harness.supervisor.cancel(job.id) and time.monotonic() < deadline:
        time.sleep(0.05)
    done = harness.wait(job.id)
    assert done.state == "cancelled"


def test_queued_jobs_coalesce_and_run_one_at_a_time(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAINER", "ok")
    first, created = harness.ledger.enqueue_job("alice", "lora")
    again, created_again = harness.ledger.enqueue_job("alice", "lora")
    full, created_full = harness.ledger.enqueue_job("alice", "full", args={"force": True})
    assert created and not created_again and again.id == first.id
    assert created_full and full.id != first.id
    harness.supervisor.wake()
    a, b = harness.wait(first.id), harness.wait(full.id)
    assert a.state == b.state == "succeeded"
    assert a.finished_at is not None and b.started_at is not None
    assert b.started_at >= a.finished_at  # never two jobs of one profile at once


def test_real_lora_training_of_a_tiny_model(tmp_path: Path, tiny_model: Path) -> None:
    _profile(tmp_path / "state", tmp_path / "profiles", n=40)
    h = Harness(_settings(tmp_path, tiny_model), python=None)
    h.supervisor.start()
    try:
        job = h.run(
            timeout=240,
            config={
                "max_steps": 6,
                "save_steps": 3,
                "batch_size": 4,
                "gradient_accumulation_steps": 1,
            },
        )
    finally:
        h.supervisor.stop(10)
    assert job.state == "succeeded", (job.reason, job.error)
    run_dir = Path(job.run_dir or "")
    for name in (
        "config.json",
        "progress.jsonl",
        "train.log",
        "fine_tune_dataset.jsonl",
        "run-summary.json",
    ):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "adapter").glob("*.safetensors"))
    assert job.progress is not None and job.progress["total_steps"] == 6
    metrics = job.result["metrics"] if job.result else {}
    assert metrics


def test_a_job_stopped_with_the_daemon_is_retried_at_the_next_start(
    tmp_path: Path, tiny_model: Path, fake_python: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAINER", "hang")
    _profile(tmp_path / "state", tmp_path / "profiles")
    settings = _settings(tmp_path, tiny_model, job_timeout_s=60, stop_grace_s=1, max_attempts=2)
    h = Harness(settings, fake_python)
    h.supervisor.start()
    job, _ = h.ledger.enqueue_job("alice", "lora", args={"force": True})
    h.supervisor.wake()
    h.wait(job.id, states=("running",))
    h.supervisor.stop(10)  # what SIGTERM to the daemon does
    stopped = h.ledger.job(job.id)
    assert stopped is not None and stopped.state == "interrupted"
    queued = h.ledger.jobs(states=("queued",))
    assert [(j.profile, j.kind, j.retry_of, j.args) for j in queued] == [
        ("alice", "lora", job.id, {"force": True})
    ]
    # The next start runs the retry; a second stop leaves no third attempt (max_attempts 2).
    monkeypatch.setenv("FAKE_TRAINER", "hang")
    h2 = Harness(settings, fake_python)
    h2.supervisor.start()
    h2.wait(queued[0].id, states=("running",))
    h2.supervisor.stop(10)
    assert h2.ledger.job(queued[0].id).state == "interrupted"  # type: ignore[union-attr]
    assert h2.ledger.jobs(states=("queued",)) == []


def test_force_with_nothing_new_is_skipped_and_all_retrains_on_everything(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAINER", "ok")
    first = harness.run()
    assert first.state == "succeeded", first.reason
    forced = harness.run(force=True)  # nothing new since the last training
    assert forced.state == "skipped"
    assert "0 training samples since the last training" in (forced.reason or "")
    assert "--all" in (forced.reason or "")
    everything = harness.run(all=True)
    assert everything.state == "succeeded", everything.reason
    plan = (everything.result or {})["plan"]
    assert plan["all"] is True
    assert (
        plan["n_train"] + plan["n_eval"]
        == first.result["plan"]["n_train"]
        + first.result[  # type: ignore[index]
            "plan"
        ]["n_eval"]
    )

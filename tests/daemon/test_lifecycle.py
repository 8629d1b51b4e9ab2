"""Triggers, schedules and the model lifecycle, with a controllable clock."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.schedules import Schedules, Triggers
from services.curation import load_rules
from services.ingest import Ingestor, make_curator
from services.ledger import Ledger
from services.settings import Settings, load_settings
from tests.daemon.jobs_harness import Harness

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.t = now

    def __call__(self) -> datetime:
        return self.t


def _settings(root: Path, **triggers: object) -> Settings:
    return load_settings(
        overrides={
            "state_dir": str(root / "state"),
            "profiles_dir": str(root / "profiles"),
            "triggers": {"timezone": "UTC", **triggers},
        }
    )


def _add(
    ledger: Ledger, root: Path, profile: str, n: int, start: int = 0, quality: int = 9
) -> None:
    path = root / "profiles" / profile / "memory" / f"batch-{start}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "\n".join(
            json.dumps(
                {
                    "prompt": f"question {i} about the world?",
                    "completion": f"answer {i}: hello world, the question and the answer.",
                    "quality_score": quality,
                }
            )
            for i in range(start, start + n)
        )
    )
    Ingestor(ledger, None, max_file_bytes=10**7, curate=make_curator(load_rules())).ingest_file(
        profile, path
    )


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = Ledger(tmp_path / "state" / "ledger.sqlite3")
    yield led
    led.close()


def test_threshold_crossing_queues_one_job(tmp_path: Path, ledger: Ledger) -> None:
    wakes: list[int] = []
    t = Triggers(_settings(tmp_path, lora_threshold=50), lambda: wakes.append(1), Clock(T0))
    _add(ledger, tmp_path, "alice", 49)
    assert t.after_ingest(ledger, "alice") is None
    _add(ledger, tmp_path, "alice", 1, start=49)
    job_id = t.after_ingest(ledger, "alice")
    assert job_id is not None and wakes == [1]
    # More samples while it waits: coalesced, nothing new.
    _add(ledger, tmp_path, "alice", 30, start=50)
    assert t.after_ingest(ledger, "alice") is None
    assert [j.id for j in ledger.jobs()] == [job_id]


def test_a_batch_of_120_queues_exactly_one(tmp_path: Path, ledger: Ledger) -> None:
    t = Triggers(_settings(tmp_path, lora_threshold=50), lambda: None, Clock(T0))
    _add(ledger, tmp_path, "alice", 120)
    assert t.after_ingest(ledger, "alice") is not None
    assert t.after_ingest(ledger, "alice") is None
    assert len(ledger.jobs()) == 1


def test_since_last_counts_from_the_last_successful_dataset(tmp_path: Path, ledger: Ledger) -> None:
    t = Triggers(_settings(tmp_path, lora_threshold=10), lambda: None, Clock(T0))
    _add(ledger, tmp_path, "alice", 10)
    job_id = t.after_ingest(ledger, "alice")
    assert job_id is not None
    ledger.start_job(job_id, "/tmp/run")
    _add(ledger, tmp_path, "alice", 5, start=10)  # arrives while it trains
    ledger.finish_job(job_id, "succeeded")
    assert ledger.eligible_since("alice", ledger.last_training_cut("alice")) == 5
    assert t.after_ingest(ledger, "alice") is None
    _add(ledger, tmp_path, "alice", 5, start=15)
    assert t.after_ingest(ledger, "alice") is not None


def test_paused_profiles_ingest_but_do_not_queue(tmp_path: Path, ledger: Ledger) -> None:
    t = Triggers(_settings(tmp_path, lora_threshold=5), lambda: None, Clock(T0))
    ledger.set_paused("alice", True)
    _add(ledger, tmp_path, "alice", 20)
    assert ledger.profile_counts()["alice"]["memories"] == 20
    assert t.after_ingest(ledger, "alice") is None
    assert t.fire(ledger, "lora") == []
    ledger.set_paused("alice", False)
    ledger.set_paused(None, True)  # everything
    assert t.after_ingest(ledger, "alice") is None
    ledger.set_paused(None, False)
    assert t.after_ingest(ledger, "alice") is not None


def test_schedule_fires_queue_jobs_for_qualifying_profiles(tmp_path: Path, ledger: Ledger) -> None:
    t = Triggers(_settings(tmp_path, full_min_samples=30), lambda: None, Clock(T0))
    _add(ledger, tmp_path, "alice", 40)
    _add(ledger, tmp_path, "bob", 10)
    ledger.ensure_profile("carol")  # no samples
    lora = t.fire(ledger, "lora")
    assert {ledger.job(j).profile for j in lora} == {"alice", "bob"}  # type: ignore[union-attr]
    full = t.fire(ledger, "full")
    assert [ledger.job(j).profile for j in full] == ["alice"]  # type: ignore[union-attr]
    assert t.fire(ledger, "lora") == []  # coalesced with the queued ones
    assert ledger.schedule_last_run("lora") == T0.isoformat()


def test_downtime_across_a_schedule_catches_up_once_within_grace(
    tmp_path: Path, ledger: Ledger
) -> None:
    clock = Clock(datetime(2026, 11, 20, 2, 0, tzinfo=UTC))
    settings = _settings(
        tmp_path, lora_schedule="0 3 * * *", full_schedule=None, misfire_grace_s=6 * 3600
    )
    _add(ledger, tmp_path, "alice", 12)
    # First start ever: nothing was missed.
    assert Triggers(settings, lambda: None, clock).catch_up(ledger) == {}
    # Down from 02:00 to 05:00: 03:00 was missed, and is within the grace window.
    clock.t = datetime(2026, 11, 20, 5, 0, tzinfo=UTC)
    caught = Triggers(settings, lambda: None, clock).catch_up(ledger)
    assert len(caught["lora"]) == 1
    # Restarting again does not run it twice.
    clock.t = datetime(2026, 11, 20, 5, 30, tzinfo=UTC)
    assert Triggers(settings, lambda: None, clock).catch_up(ledger) == {}
    # Down for days: the missed 03:00 is beyond the grace window; nothing runs.
    clock.t = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert Triggers(settings, lambda: None, clock).catch_up(ledger) == {}


def test_apscheduler_fires_the_schedule(tmp_path: Path, ledger: Ledger) -> None:
    settings = _settings(tmp_path, lora_schedule="*/1 * * * * *", full_schedule=None)
    _add(ledger, tmp_path, "alice", 12)
    wakes: list[int] = []
    triggers = Triggers(settings, lambda: wakes.append(1), lambda: datetime.now(UTC))
    schedules = Schedules(settings, triggers)
    schedules.start()
    try:
        [described] = schedules.describe()
        assert described["kind"] == "lora" and described["next_run"]
        deadline = time.monotonic() + 10
        # The job is in the ledger a moment before the supervisor is woken: wait for both.
        while not (ledger.jobs() and wakes) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        schedules.stop()
    [job] = ledger.jobs()
    assert (job.profile, job.kind, job.reason) == ("alice", "lora", "schedule")
    assert wakes


def test_second_lora_replays_older_samples_and_lora_after_full_uses_new_base(
    tmp_path: Path,
    tiny_model: Path,
    fake_python: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_TRAINER", "ok")
    settings = load_settings(
        overrides={
            "state_dir": str(tmp_path / "state"),
            "profiles_dir": str(tmp_path / "profiles"),
            "training": {"base_model": str(tiny_model), "family": "smollm"},
            "triggers": {"replay_fraction": 0.25, "replay_min_quality": 8, "lora_min_samples": 4},
        }
    )
    h = Harness(settings, fake_python)
    _add(h.ledger, tmp_path, "alice", 24)
    h.supervisor.start()
    try:
        first = h.run()
        assert first.state == "succeeded", first.reason
        assert first.result is not None and first.result["plan"]["replayed"] == 0
        _add(h.ledger, tmp_path, "alice", 8, start=100)
        second = h.run()
        assert second.state == "succeeded", second.reason
        plan = second.result["plan"] if second.result else {}
        assert plan["replayed"] == 2  # 25% of 8 new
        lines = (Path(second.run_dir or "") / "fine_tune_dataset.jsonl").read_text().splitlines()
        # Each sample's own question (its user turn: the system turn may hold other
        # memories, as ask shows retrieved ones).
        texts = [json.loads(line)["messages"][-2]["content"] for line in lines]
        assert len(texts) == 10
        assert sum(any(f"question {i} " in t for i in range(100, 108)) for t in texts) == 8
        assert sum(any(f"question {i} " in t for i in range(24)) for t in texts) == 2

        full = h.run(kind="full", force=True)
        assert full.state == "succeeded", full.reason
        new_base = str(Path(full.run_dir or "") / "model")
        assert h.ledger.current_base("alice") == (new_base, full.id)
        _add(h.ledger, tmp_path, "alice", 8, start=200)
        third = h.run()
        assert third.state == "succeeded", third.reason
        assert third.result is not None and third.result["plan"]["base"] == new_base
        argv = json.loads((Path(third.run_dir or "") / "argv.json").read_text())
        assert argv[argv.index("--base") + 1] == new_base
    finally:
        h.supervisor.stop(10)


def test_too_little_data_is_skipped_not_failed(
    tmp_path: Path,
    tiny_model: Path,
    fake_python: str,
) -> None:
    settings = load_settings(
        overrides={
            "state_dir": str(tmp_path / "state"),
            "profiles_dir": str(tmp_path / "profiles"),
            "training": {"base_model": str(tiny_model), "family": "smollm"},
            "triggers": {"lora_min_samples": 50},
        }
    )
    h = Harness(settings, fake_python)
    _add(h.ledger, tmp_path, "alice", 12)
    h.supervisor.start()
    try:
        job = h.run()
    finally:
        h.supervisor.stop(10)
    assert job.state == "skipped"
    assert "below the LoRA" in (job.reason or "") and "--force" in (job.reason or "")

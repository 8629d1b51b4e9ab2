"""The job queue's order: fair across profiles, oldest first within one."""

from __future__ import annotations

from pathlib import Path

from services.ledger import Ledger


def _serve(ledger: Ledger, *, busy: set[str] | None = None) -> str:
    """What one free slot starts next ("profile/kind"), run to completion."""
    job = ledger.next_queued(exclude_profiles=busy)
    assert job is not None
    assert ledger.start_job(job.id, f"/runs/{job.id}")
    ledger.finish_job(job.id, "succeeded")
    return f"{job.profile}/{job.kind}"


def test_a_profile_with_a_backlog_takes_one_turn_then_waits_for_the_others(
    tmp_path: Path,
) -> None:
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        ledger.enqueue_job("alice", "lora")
        ledger.enqueue_job("alice", "full")
        ledger.enqueue_job("bob", "lora")
        ledger.enqueue_job("carol", "lora")
        # Oldest-first alone would run alice twice before bob and carol.
        order = [_serve(ledger) for _ in range(4)]
        assert order == ["alice/lora", "bob/lora", "carol/lora", "alice/full"]
        assert ledger.next_queued() is None


def test_the_profile_served_longest_ago_goes_first(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        ledger.enqueue_job("alice", "lora")
        ledger.enqueue_job("bob", "lora")
        assert _serve(ledger) == "alice/lora"
        assert _serve(ledger) == "bob/lora"
        # bob queues again before alice does; bob was served last, alice goes first.
        ledger.enqueue_job("bob", "full")
        ledger.enqueue_job("alice", "full")
        ledger.enqueue_job("dave", "lora")  # never served: before both
        assert [_serve(ledger) for _ in range(3)] == ["dave/lora", "alice/full", "bob/full"]


def test_busy_and_paused_profiles_are_passed_over_without_losing_their_turn(
    tmp_path: Path,
) -> None:
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        ledger.enqueue_job("alice", "lora")
        ledger.enqueue_job("bob", "lora")
        ledger.enqueue_job("bob", "full")
        assert _serve(ledger, busy={"alice"}) == "bob/lora"
        # alice, never served, now comes before bob's second job.
        assert [_serve(ledger) for _ in range(2)] == ["alice/lora", "bob/full"]

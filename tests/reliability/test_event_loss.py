"""Files whose events are lost still reach the ledger through the reconcile scan.

Real daemon, fake-Ollama embeddings. Reduced sizes for CI; bench/reliability.py runs the
full ones (see the harness docstrings in tests/reliability/eventloss.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.eventloss import (
    MAX_QUEUED_EVENTS,
    inotify_limit_unwritable,
    run_event_loss,
    run_overflow,
)


def test_files_with_dropped_events_are_recovered_within_the_reconcile_interval(
    short_tmp: Path,
) -> None:
    fig = run_event_loss(short_tmp, files=30, drop_rate=0.3, seed=1)
    # The hook really dropped every event of some files, and only of some.
    assert 0 < fig["files_missed"] < fig["files"]
    assert fig["events_dropped"] >= fig["files_missed"]
    # Every file and every memory arrived; the missed ones through a scan, in time.
    assert fig["files_lost"] == []
    assert fig["memories_missing"] == 0
    assert fig["files_recovered"] == fig["files_missed"]
    assert fig["files_queued_by_scans"] >= fig["files_missed"]
    assert fig["recovery_s"]["max"] <= fig["recovery_bound_s"]
    # Files whose events got through did not wait for a scan.
    assert fig["event_latency_s"]["max"] < fig["reconcile_interval_s"]
    assert fig["queue_at_end"] == 0 and fig["exit_code"] == 0


def test_an_inotify_overflow_is_logged_and_every_file_recovered(short_tmp: Path) -> None:
    reason = inotify_limit_unwritable()
    if reason:
        pytest.skip(reason)
    before = MAX_QUEUED_EVENTS.read_text()
    fig = run_overflow(short_tmp, files=300, max_queued_events=16)
    assert MAX_QUEUED_EVENTS.read_text() == before  # the kernel limit is restored
    assert fig["kernel_overflows"] >= 1
    assert fig["overflow_seen"]  # the daemon logged it and asked for a scan
    assert fig["files_lost"] == []
    assert fig["memories_missing"] == 0
    # Recovered by the scan the overflow triggered, not the periodic one (300 s away).
    assert fig["latency_s"]["max"] < 15
    assert fig["queue_at_end"] == 0 and fig["exit_code"] == 0

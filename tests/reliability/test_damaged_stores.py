"""Damaged stores: `personad run` refuses a damaged or newer ledger in one line and
leaves it untouched; an old ledger migrates on start; a damaged index is rebuilt."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.damaged import (
    INDEX_DAMAGE,
    LEDGER_DAMAGE,
    index_rebuild,
    ledger_refusal,
    old_ledger,
)
from tests.reliability.fuzz import fuzz_daemon


@pytest.mark.parametrize("how", LEDGER_DAMAGE)
def test_the_daemon_refuses_a_damaged_or_newer_ledger(short_tmp: Path, how: str) -> None:
    found = ledger_refusal(short_tmp, how)
    assert found["exit"] == 1, found
    assert not found["traceback"] and found["lines"] == 1, found
    assert found["file_unchanged"] and found["names_file"] and found["names_restore"], found
    assert ("newer personad" if how == "newer" else "is damaged") in found["said"]
    # No new empty ledger beside or over it (only SQLite's own -wal/-shm may appear).
    assert [n for n in found["files_beside"] if "ledger" in n] in (
        ["ledger.sqlite3"],
        ["ledger.sqlite3", "ledger.sqlite3-shm", "ledger.sqlite3-wal"],
    ), found


def test_the_daemon_migrates_a_ledger_of_the_first_migration(short_tmp: Path) -> None:
    old_ledger(short_tmp / "state" / "ledger.sqlite3")
    with fuzz_daemon(short_tmp, indexed=True) as d:
        alice = d.call("status")["profiles"]["alice"]
        assert (alice["memories"], alice["samples"], alice["active_version"]) == (6, 6, "v1")
        assert "ledger migration applied" in d.log()
        # The old memories reach the index: they were never indexed under 0001.
        d.wait_for(lambda: d.call("status")["profiles"]["alice"]["indexed"] == 6, 60)
        hits = d.call("search", {"profile": "alice", "query": "harbour gulls", "k": 3})
        assert len(hits["results"]) == 3


@pytest.mark.parametrize("how", INDEX_DAMAGE)
def test_a_damaged_index_is_rebuilt_from_the_ledger(short_tmp: Path, how: str) -> None:
    found = index_rebuild(short_tmp, how, memories=30)
    assert found["found_again"] == found["memories"] == 30, found
    if how.startswith("garbage"):  # the damaged files are kept, never deleted
        assert len(found["set_aside"]) == 1, found
    if how.endswith("while-running"):
        assert "the index was deleted or damaged" in found["said"], found
    elif not how.startswith("segments"):  # Chroma restores lost segments itself
        assert "index lacks memories" in found["said"], found

"""Upgrades: a ledger of the first migration migrates with everything kept; a ledger
newer than the code, or a damaged one, is refused with a message and left untouched."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from services.ledger import Ledger, LedgerUnusable
from services.ledger.schema import MIGRATIONS
from tests.reliability.damaged import damage_ledger, old_ledger

DAYS = "/home/alice/.local/share/personad/profiles/alice/memory/days.jsonl"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("applied", range(1, len(MIGRATIONS) + 1))
def test_an_old_ledger_migrates_with_everything_kept(tmp_path: Path, applied: int) -> None:
    path = old_ledger(tmp_path / "ledger.sqlite3", applied)
    with Ledger(path) as ledger:
        assert ledger.applied_migrations() == [name for name, _ in MIGRATIONS]
        counts = ledger.profile_counts()["alice"]
        assert (counts["memories"], counts["rejects"], counts["samples"]) == (6, 1, 6)
        assert len(ledger.sample_records("alice")) == 6
        jobs = {j.id: j for j in ledger.jobs()}
        assert jobs[1].state == "succeeded" and jobs[2].state == "queued"
        assert jobs[1].retry_of is None and jobs[1].pid is None  # columns of 0002
        (v1,) = ledger.versions("alice")
        assert v1["version"] == 1 and v1["active"]
        assert ledger.active_version("alice") == 1
        # The file is known as read: the daemon will not ingest it again.
        known = ledger.file_state("alice", DAYS)
        assert known is not None and known.size == 774
        # Columns and tables of later migrations work.
        assert ledger.paused_profiles() == set()
        ledger.set_paused("alice", True)
        assert ledger.paused_profiles() == {"alice"}
        assert ledger.integrity_check() == "ok"


def test_a_ledger_newer_than_the_code_is_refused_untouched(tmp_path: Path) -> None:
    path = old_ledger(tmp_path / "ledger.sqlite3", len(MIGRATIONS))
    damage_ledger(path, "newer")
    before = sha(path)
    with pytest.raises(LedgerUnusable) as refused:
        Ledger(path)
    message = str(refused.value)
    assert str(path) in message and "newer personad" in message
    assert "0099_from_the_future" in message and "personad restore" in message
    assert sha(path) == before


@pytest.mark.parametrize("damage", ["header", "pages", "truncated"])
def test_a_damaged_ledger_is_refused_untouched(tmp_path: Path, damage: str) -> None:
    path = old_ledger(tmp_path / "ledger.sqlite3", len(MIGRATIONS))
    damage_ledger(path, damage)
    before = sha(path)
    with pytest.raises(LedgerUnusable) as refused, Ledger(path, migrate=False) as ledger:
        ledger.verify()
    message = str(refused.value)
    assert str(path) in message and "damaged" in message
    assert "personad restore" in message
    assert sha(path) == before

"""The ledger: migrations, WAL, one transaction per file, nothing dropped or duplicated."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from services.ledger import Ledger
from services.ledger.memories import SampleRow
from services.ledger.schema import MIGRATIONS
from services.memories.model import Memory, Problem, content_id


def _memory(text: str, locator: str = "") -> Memory:
    return Memory(
        id=content_id({"prompt": text}),
        format="prompt_response",
        type="conversation",
        prompt=text,
        response="ok",
        locator=locator,
    )


def test_migrations_apply_once_and_wal_is_on(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    assert ledger.applied_migrations() == [name for name, _ in MIGRATIONS]
    assert ledger.migrate() == []
    ledger.close()
    again = Ledger(tmp_path / "l.sqlite3")
    assert again.migrate() == []
    mode = again.db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    assert set(again.db.table_names()) >= {
        "memories",
        "rejects",
        "samples",
        "jobs",
        "model_versions",
        "files",
        "migrations",
    }
    assert again.integrity_check() == "ok"


def test_same_memory_from_two_files_is_stored_once(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    m = _memory("hello")
    first = ledger.record_file(
        "alice", "/a.json", size=1, mtime_ns=1, sha256="h1", memories=[m], problems=[]
    )
    second = ledger.record_file(
        "alice", "/b.json", size=1, mtime_ns=1, sha256="h2", memories=[m], problems=[]
    )
    assert (first.new_memories, second.new_memories) == (1, 0)
    assert ledger.memory_ids("alice") == {m.id}
    sources = ledger.db.execute("SELECT path FROM memory_sources ORDER BY path").fetchall()
    assert [s[0] for s in sources] == ["/a.json", "/b.json"]
    # Profiles are separate: the same memory in bob's profile is bob's.
    ledger.record_file("bob", "/c.json", size=1, mtime_ns=1, sha256="h3", memories=[m], problems=[])
    assert ledger.profile_counts()["bob"]["memories"] == 1


def test_rereading_a_changed_file_keeps_old_memories_and_replaces_rejects(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    a, b = _memory("a"), _memory("b")
    ledger.record_file(
        "alice",
        "/f.jsonl",
        size=1,
        mtime_ns=1,
        sha256="v1",
        memories=[a],
        problems=[Problem("line 2: invalid JSON", "line 2")],
    )
    assert [r["reason"] for r in ledger.rejects("alice")] == ["line 2: invalid JSON"]
    ledger.record_file(
        "alice", "/f.jsonl", size=2, mtime_ns=2, sha256="v2", memories=[b], problems=[]
    )
    assert ledger.memory_ids("alice") == {a.id, b.id}
    assert ledger.rejects("alice") == []
    assert ledger.file_state("alice", "/f.jsonl").sha256 == "v2"  # type: ignore[union-attr]


def test_a_failed_state_change_leaves_nothing_behind(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    with pytest.raises(RuntimeError), ledger.transaction() as db:
        db.execute("INSERT INTO profiles (name, created_at) VALUES ('x', 'now')")
        raise RuntimeError("crash in the middle")
    assert ledger.profiles() == []


def test_index_marks_and_counts(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite3")
    ms = [_memory(str(i)) for i in range(5)]
    ledger.record_file("alice", "/f", size=1, mtime_ns=1, sha256="s", memories=ms, problems=[])
    assert len(ledger.unindexed("alice", 100)) == 5
    ledger.mark_indexed("alice", [m.id for m in ms[:3]])
    counts = ledger.profile_counts()["alice"]
    assert (counts["memories"], counts["indexed"]) == (5, 3)
    assert {r["id"] for r in ledger.unindexed("alice", 100)} == {m.id for m in ms[3:]}
    assert ledger.profiles_with_unindexed() == ["alice"]
    assert ledger.mark_all_unindexed("alice") == 5


def test_two_connections_see_each_others_commits(tmp_path: Path) -> None:
    writer, reader = Ledger(tmp_path / "l.sqlite3"), Ledger(tmp_path / "l.sqlite3")
    writer.record_file(
        "alice", "/f", size=1, mtime_ns=1, sha256="s", memories=[_memory("x")], problems=[]
    )
    assert reader.profile_counts()["alice"]["memories"] == 1
    with pytest.raises(sqlite3.IntegrityError):
        writer.db.execute("INSERT INTO migrations VALUES ('0001_initial', 'again')")


def test_only_identical_job_requests_coalesce(tmp_path: Path) -> None:
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        dual, created = ledger.enqueue_job("alice", "lora", mode="dual", reason="manual")
        assert created
        # The same request, with its unset arguments spelled out: the same job.
        again, created = ledger.enqueue_job(
            "alice", "lora", mode="dual", args={"preset": None, "force": False, "config": {}}
        )
        assert (again.id, created) == (dual.id, False)
        # Another mode, another base, other arguments: each is queued, none is dropped.
        agent, created = ledger.enqueue_job("alice", "lora", mode="agent")
        assert created and agent.id != dual.id
        other_base, created = ledger.enqueue_job(
            "alice", "lora", mode="dual", args={"base_model": "/models/other"}
        )
        assert created and other_base.id not in (dual.id, agent.id)
        everything, created = ledger.enqueue_job("alice", "lora", mode="dual", args={"all": True})
        assert created
        queued = [(j.mode, j.args) for j in ledger.jobs(states=("queued",))]
        assert len(queued) == 4
        # Once the first has ended, the same request queues anew.
        ledger.finish_job(dual.id, "succeeded")
        fresh, created = ledger.enqueue_job("alice", "lora", mode="dual")
        assert created and fresh.id > everything.id


def test_status_counts_read_in_one_snapshot_agree_while_another_connection_writes(
    tmp_path: Path,
) -> None:
    # Ingestion writes a new profile's memories and samples between status's reads; the
    # reads of one snapshot all miss them (no half-seen profile), the next snapshot has them.
    reader = Ledger(tmp_path / "l.sqlite3")
    writer = Ledger(tmp_path / "l.sqlite3")
    m = _memory("the cello")
    sample = SampleRow(
        memory_id=m.id,
        mode="emulation",
        kind="conversation",
        quality=0.8,
        weight=1.0,
        split="train",
        excluded=None,
        record={"text": "x"},
    )
    with reader.snapshot():
        counts = reader.profile_counts()
        writer.record_file(
            "sm", "/a.json", size=1, mtime_ns=1, sha256="h", memories=[m], problems=[]
        )
        writer.add_samples("sm", [sample])
        stats = reader.sample_stats()
        assert "sm" not in counts and "sm" not in stats
    assert reader.profile_counts()["sm"]["eligible"] == 1
    stats = reader.sample_stats()["sm"]
    assert stats["by_mode"] == {"emulation": 1}
    assert stats["quality"] == {"avg": 0.8, "min": 0.8, "max": 0.8}
    reader.close()
    writer.close()

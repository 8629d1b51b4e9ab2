"""Ledger records of memories, their source files, rejects and samples."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from services.ledger.db import Database, utcnow
from services.memories.model import Memory, Problem


@dataclass(frozen=True)
class FileState:
    size: int
    mtime_ns: int
    sha256: str | None


@dataclass(frozen=True)
class IngestOutcome:
    new_memories: int
    memories: int
    problems: int


@dataclass(frozen=True)
class SampleRow:
    """A curated sample as the ledger stores it (``record`` is the full sample)."""

    memory_id: str
    mode: str
    kind: str
    quality: float
    weight: float
    split: str
    excluded: str | None
    record: dict[str, Any]


class MemoryStore(Database):
    # -- profiles ---------------------------------------------------------------
    def profiles(self) -> list[str]:
        return [r["name"] for r in self.db.query("SELECT name FROM profiles ORDER BY name")]

    def ensure_profile(self, profile: str) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO profiles (name, created_at) VALUES (?, ?)",
                [profile, utcnow()],
            )

    # -- files ------------------------------------------------------------------
    def file_state(self, profile: str, path: str) -> FileState | None:
        row = self.db.execute(
            "SELECT size, mtime_ns, sha256 FROM files WHERE profile = ? AND path = ?",
            [profile, path],
        ).fetchone()
        return FileState(*row) if row else None

    def known_files(self, profile: str) -> dict[str, FileState]:
        rows = self.db.execute(
            "SELECT path, size, mtime_ns, sha256 FROM files WHERE profile = ?", [profile]
        )
        return {r[0]: FileState(r[1], r[2], r[3]) for r in rows}

    def touch_file(self, profile: str, path: str, size: int, mtime_ns: int) -> None:
        """The file's content is unchanged (same hash): remember its new size/mtime."""
        with self.transaction() as db:
            db.execute(
                "UPDATE files SET size = ?, mtime_ns = ?, seen_at = ?"
                " WHERE profile = ? AND path = ?",
                [size, mtime_ns, utcnow(), profile, path],
            )

    def record_file(
        self,
        profile: str,
        path: str,
        *,
        size: int,
        mtime_ns: int,
        sha256: str | None,
        memories: Sequence[Memory],
        problems: Sequence[Problem],
        samples: Iterable[SampleRow] = (),
    ) -> IngestOutcome:
        """Record one read of one file, all in one transaction.

        New memories are inserted (existing ids are kept as they are: a memory is
        stored once however often it is delivered); the file's earlier rejects are
        replaced by this read's problems; memories the file no longer holds stay.
        """
        now = utcnow()
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO profiles (name, created_at) VALUES (?, ?)", [profile, now]
            )
            before = db.conn.total_changes
            db.conn.executemany(
                "INSERT OR IGNORE INTO memories (profile, id, format, type, timestamp, text,"
                " record, source_path, ingested_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        profile,
                        m.id,
                        m.format,
                        m.type,
                        m.timestamp,
                        m.text,
                        json.dumps(m.to_record(), ensure_ascii=False),
                        path,
                        now,
                    )
                    for m in memories
                ],
            )
            new = db.conn.total_changes - before
            db.conn.executemany(
                "INSERT OR IGNORE INTO memory_sources (profile, memory_id, path, locator)"
                " VALUES (?, ?, ?, ?)",
                [(profile, m.id, path, m.locator) for m in memories],
            )
            _insert_samples(db.conn, profile, samples, now)
            db.execute("DELETE FROM rejects WHERE profile = ? AND path = ?", [profile, path])
            db.conn.executemany(
                "INSERT INTO rejects (profile, path, sha256, locator, reason, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(profile, path, sha256, p.locator, p.reason, now) for p in problems],
            )
            db.execute(
                "INSERT OR REPLACE INTO files (profile, path, size, mtime_ns, sha256, memories,"
                " problems, seen_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [profile, path, size, mtime_ns, sha256, len(memories), len(problems), now],
            )
            if memories:
                db.execute("UPDATE profiles SET last_ingest_at = ? WHERE name = ?", [now, profile])
        return IngestOutcome(new_memories=new, memories=len(memories), problems=len(problems))

    # -- memories ---------------------------------------------------------------
    def memory_ids(self, profile: str) -> set[str]:
        rows = self.db.execute("SELECT id FROM memories WHERE profile = ?", [profile])
        return {r[0] for r in rows}

    def memories(self, profile: str) -> list[Memory]:
        rows = self.db.execute(
            "SELECT record FROM memories WHERE profile = ? ORDER BY ingested_at, id", [profile]
        )
        return [Memory.from_record(json.loads(r[0])) for r in rows]

    def memory_rows(self, profile: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """id -> {text, type, timestamp, source_path, record} for the given ids."""
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for row in self.db.query(
                f"SELECT id, text, type, format, timestamp, source_path, record FROM memories"
                f" WHERE profile = ? AND id IN ({marks})",
                [profile, *chunk],
            ):
                out[row["id"]] = row
        return out

    def unindexed(self, profile: str, limit: int) -> list[dict[str, Any]]:
        # Left to itself, SQLite walks every memory of the profile (the ORDER BY makes it
        # prefer the primary key), which costs ~10 ms per 5,000 memories on each ingest.
        return list(
            self.db.query(
                "SELECT m.id, m.text, m.type, m.timestamp, m.source_path, m.record,"
                " s.mode AS mode, s.quality AS quality"
                " FROM memories m INDEXED BY memories_unindexed"
                " LEFT JOIN samples s ON s.profile = m.profile AND s.memory_id = m.id"
                " WHERE m.profile = ? AND m.indexed = 0 ORDER BY m.ingested_at LIMIT ?",
                [profile, limit],
            )
        )

    def profiles_with_unindexed(self) -> list[str]:
        rows = self.db.execute("SELECT DISTINCT profile FROM memories WHERE indexed = 0")
        return sorted(r[0] for r in rows)

    def mark_indexed(self, profile: str, ids: Sequence[str], indexed: bool = True) -> None:
        with self.transaction() as db:
            db.conn.executemany(
                "UPDATE memories SET indexed = ? WHERE profile = ? AND id = ?",
                [(1 if indexed else 0, profile, i) for i in ids],
            )

    def mark_all_unindexed(self, profile: str) -> int:
        with self.transaction() as db:
            cur = db.execute("UPDATE memories SET indexed = 0 WHERE profile = ?", [profile])
            return cur.rowcount

    def indexed_ids(self, profile: str) -> set[str]:
        rows = self.db.execute(
            "SELECT id FROM memories WHERE profile = ? AND indexed = 1", [profile]
        )
        return {r[0] for r in rows}

    # -- rejects ----------------------------------------------------------------
    def rejects(self, profile: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        where, params = ("WHERE profile = ?", [profile]) if profile else ("", [])
        return list(
            self.db.query(
                f"SELECT profile, path, sha256, locator, reason, created_at FROM rejects {where}"
                " ORDER BY created_at DESC, id DESC LIMIT ?",
                [*params, limit],
            )
        )

    # -- samples ----------------------------------------------------------------
    def sample_records(self, profile: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT record FROM samples WHERE profile = ? ORDER BY created_at, memory_id",
            [profile],
        )
        return [json.loads(r[0]) for r in rows]

    def memories_without_samples(self, profile: str) -> list[Memory]:
        rows = self.db.execute(
            "SELECT m.record FROM memories m LEFT JOIN samples s"
            " ON s.profile = m.profile AND s.memory_id = m.id"
            " WHERE m.profile = ? AND s.memory_id IS NULL",
            [profile],
        )
        return [Memory.from_record(json.loads(r[0])) for r in rows]

    def add_samples(self, profile: str, samples: Iterable[SampleRow]) -> int:
        with self.transaction() as db:
            before = db.conn.total_changes
            _insert_samples(db.conn, profile, samples, utcnow())
            return db.conn.total_changes - before

    def sample_stats(self) -> dict[str, dict[str, Any]]:
        """Per profile: eligible samples by mode, their quality avg/min/max, and how many
        were curated since the profile's last successful training job."""
        out: dict[str, dict[str, Any]] = {}

        def entry(profile: str) -> dict[str, Any]:
            return out.setdefault(
                profile, {"by_mode": {}, "quality": None, "since_last_training": 0}
            )

        with self.snapshot() as db:
            for profile, mode, n in db.execute(
                "SELECT profile, mode, COUNT(*) FROM samples WHERE excluded IS NULL"
                " GROUP BY profile, mode"
            ):
                entry(profile)["by_mode"][mode] = n
            for profile, avg, lo, hi in db.execute(
                "SELECT profile, AVG(quality), MIN(quality), MAX(quality) FROM samples"
                " WHERE excluded IS NULL GROUP BY profile"
            ):
                entry(profile)["quality"] = {
                    "avg": round(avg, 3),
                    "min": round(lo, 3),
                    "max": round(hi, 3),
                }
            for profile, n in db.execute(
                "SELECT s.profile, COUNT(*) FROM samples s WHERE s.excluded IS NULL AND"
                " s.created_at > COALESCE((SELECT MAX(j.started_at) FROM jobs j"
                " WHERE j.profile = s.profile AND j.state = 'succeeded'), '')"
                " GROUP BY s.profile"
            ):
                entry(profile)["since_last_training"] = n
        return out

    # -- status -----------------------------------------------------------------
    def profile_counts(self) -> dict[str, dict[str, Any]]:
        """Per profile: memories, indexed, rejects, samples, eligible, last_ingest_at."""
        with self.snapshot():
            return self._profile_counts()

    def _profile_counts(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {
            name: {
                "memories": 0,
                "indexed": 0,
                "rejects": 0,
                "samples": 0,
                "eligible": 0,
                "last_ingest_at": last,
            }
            for name, last in self.db.execute("SELECT name, last_ingest_at FROM profiles")
        }
        queries = {
            "memories": "SELECT profile, COUNT(*) FROM memories GROUP BY profile",
            "indexed": "SELECT profile, COUNT(*) FROM memories WHERE indexed = 1 GROUP BY profile",
            "rejects": "SELECT profile, COUNT(*) FROM rejects GROUP BY profile",
            "samples": "SELECT profile, COUNT(*) FROM samples GROUP BY profile",
            "eligible": "SELECT profile, COUNT(*) FROM samples WHERE excluded IS NULL"
            " GROUP BY profile",
        }
        for key, sql in queries.items():
            for profile, count in self.db.execute(sql):
                out.setdefault(profile, {k: 0 for k in queries} | {"last_ingest_at": None})
                out[profile][key] = count
        return out


def _insert_samples(
    conn: sqlite3.Connection, profile: str, samples: Iterable[SampleRow], now: str
) -> None:
    """Store curated samples; a memory's existing sample is kept."""
    conn.executemany(
        "INSERT OR IGNORE INTO samples (profile, memory_id, mode, kind, quality, weight,"
        " split, excluded, record, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                profile,
                s.memory_id,
                s.mode,
                s.kind,
                s.quality,
                s.weight,
                s.split,
                s.excluded,
                json.dumps(s.record, ensure_ascii=False),
                now,
            )
            for s in samples
        ],
    )

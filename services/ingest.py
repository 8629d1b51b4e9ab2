"""From a memory file to ledger rows, samples and index entries.

The ledger is written first (one transaction per file); indexing follows and marks
what it indexed, so a crash between the two leaves memories marked unindexed, which
``index_pending`` picks up again (Chroma upserts are idempotent).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from services.curation import CurationRules, Sample, curate
from services.index import IndexItem, VectorIndex
from services.ledger import IngestOutcome, Ledger, SampleRow
from services.memories import read_memory_file
from services.memories.model import Memory, Problem

log = structlog.get_logger(__name__)

Curate = Callable[[Memory], SampleRow]


def sample_row(sample: Sample) -> SampleRow:
    return SampleRow(
        memory_id=sample.memory_id,
        mode=sample.mode,
        kind=sample.kind,
        quality=sample.quality,
        weight=sample.weight,
        split=sample.split,
        excluded=sample.excluded,
        record=sample.to_record(),
    )


def make_curator(rules: CurationRules) -> Curate:
    """Curation as memories are ingested: each memory's sample is stored with it."""
    return lambda memory: sample_row(curate(memory, rules))


@dataclass(frozen=True)
class FileResult:
    profile: str
    path: str
    outcome: IngestOutcome | None  # None: unchanged since last read
    problems: tuple[Problem, ...] = ()


class Ingestor:
    def __init__(
        self,
        ledger: Ledger,
        index: VectorIndex | None,
        *,
        max_file_bytes: int,
        curate: Curate | None = None,
        index_batch: int = 2048,  # Chroma's per-call cost favours large writes
        profiles_dir: Path | None = None,
    ) -> None:
        self.ledger = ledger
        self.index = index
        self.max_file_bytes = max_file_bytes
        self.curate = curate
        self.index_batch = index_batch
        # Set: a file must lie inside <profiles_dir>/<profile>/memory once links are resolved.
        self.profiles_dir = profiles_dir
        self._index_lock = threading.Lock()

    def is_unchanged(self, profile: str, path: Path, st: os.stat_result) -> bool:
        known = self.ledger.file_state(profile, str(path))
        return known is not None and known.size == st.st_size and known.mtime_ns == st.st_mtime_ns

    def ingest_file(self, profile: str, path: Path, *, force: bool = False) -> FileResult:
        """Read one file (never modifying it) and record what it holds."""
        key = str(path)
        try:
            st = os.stat(path)
        except OSError:
            st = None
        if st is not None and not force and self.is_unchanged(profile, path, st):
            return FileResult(profile, key, None)
        within = self.profiles_dir / profile / "memory" if self.profiles_dir else None
        result, sha = read_memory_file(path, max_bytes=self.max_file_bytes, within=within)
        known = self.ledger.file_state(profile, key)
        if st is not None and sha is not None and known is not None and known.sha256 == sha:
            self.ledger.touch_file(profile, key, st.st_size, st.st_mtime_ns)
            return FileResult(profile, key, None)
        samples = [self.curate(m) for m in result.memories] if self.curate else []
        outcome = self.ledger.record_file(
            profile,
            key,
            size=st.st_size if st else -1,
            mtime_ns=st.st_mtime_ns if st else -1,
            sha256=sha,
            memories=result.memories,
            problems=result.problems,
            samples=samples,
        )
        for problem in result.problems:
            log.warning(
                "memory rejected",
                profile=profile,
                path=key,
                where=problem.locator or "file",
                reason=problem.reason,
            )
        if outcome.memories:
            log.info(
                "memories ingested",
                profile=profile,
                path=key,
                new=outcome.new_memories,
                total=outcome.memories,
            )
        return FileResult(profile, key, outcome, tuple(result.problems))

    def index_pending(self, profile: str, limit: int | None = None) -> int:
        """Index memories the ledger has not marked indexed; returns how many."""
        if self.index is None:
            return 0
        done = 0
        with self._index_lock:
            while limit is None or done < limit:
                batch = self.ledger.unindexed(profile, self.index_batch)
                if not batch:
                    break
                self.index.add(profile, [_item(row) for row in batch])
                self.ledger.mark_indexed(profile, [row["id"] for row in batch])
                done += len(batch)
        return done

    def repair_index(self, profile: str) -> int:
        """Start-up repair: anything the ledger marks indexed but the index lacks is
        marked unindexed again, then indexed."""
        if self.index is None:
            return 0
        missing = self.ledger.indexed_ids(profile) - self.index.ids(profile)
        if missing:
            log.warning("index lacks memories; re-indexing", profile=profile, missing=len(missing))
            self.ledger.mark_indexed(profile, sorted(missing), indexed=False)
        return self.index_pending(profile)

    def reindex(self, profile: str) -> int:
        """Rebuild a profile's collection from the ledger."""
        if self.index is None:
            return 0
        with self._index_lock:
            self.index.reset(profile)
            self.ledger.mark_all_unindexed(profile)
        return self.index_pending(profile)


def _item(row: dict[str, Any]) -> IndexItem:
    record = json.loads(row["record"])
    metadata: dict[str, Any] = {
        "type": row["type"],
        "mode": row.get("mode") or "",
        "timestamp": row.get("timestamp") or "",
        "quality": float(row["quality"]) if row.get("quality") is not None else -1.0,
        "tags": ",".join(str(t) for t in record.get("tags") or []),
        "source": row["source_path"],
    }
    return IndexItem(id=row["id"], text=row["text"], metadata=metadata)

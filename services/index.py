"""The vector index: one Chroma collection per profile, ids = memory ids.

Embeddings come from our own ``Embedder`` (never Chroma's default embedding function,
which would download a model), and Chroma's telemetry is off: nothing here touches
the network, except a Chroma server the settings name.

The ledger is the source of truth; this index can always be rebuilt from it
(``reset`` then ``add``). A collection remembers the embedder that filled it, and an
index opened with another embedder refuses to mix vectors: it asks for a reindex.
The Chroma client, the collections and the translation of Chroma's errors are
``services.chroma_store``'s.

chromadb is imported when an index is opened, not when this module is imported.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from services.chroma_store import (
    ChromaStore,
    VectorIndexError,
    collection_name,
)
from services.embedding import Embedder

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection

    from services.memories.model import Memory

__all__ = [
    "RESULT_KEYS",
    "IndexItem",
    "MetadataValue",
    "SearchHit",
    "VectorIndex",
    "VectorIndexError",
    "clean_metadata",
    "collection_name",
]

T = TypeVar("T")

# The metadata keys of an indexed memory (docs/ARCHITECTURE.md, "The outside contract").
RESULT_KEYS = ("type", "mode", "timestamp", "source")

MetadataValue = str | int | float | bool


def _scalar(value: Any) -> MetadataValue | None:
    """A metadata value as Chroma stores it (scalars only); ``None`` drops the key."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list | tuple | set | frozenset):
        return ",".join(str(v) for v in value)
    if isinstance(value, Path):
        return str(value)
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def clean_metadata(metadata: Mapping[str, Any]) -> dict[str, MetadataValue]:
    """Chroma-safe metadata: sequences joined with ``,``, mappings as JSON, ``None`` dropped."""
    out: dict[str, MetadataValue] = {}
    for key, value in metadata.items():
        scalar = _scalar(value)
        if scalar is not None:
            out[str(key)] = scalar
    return out


@dataclass(frozen=True)
class IndexItem:
    """One memory to index: ``metadata`` holds type, mode, timestamp, quality, tags
    (joined with ``,``) and source; values must be scalars or sequences of them."""

    id: str
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_memory(
        cls,
        memory: Memory,
        *,
        source: str = "",
        mode: str | None = None,
        quality: float | None = None,
    ) -> IndexItem:
        """The item for a parsed memory; ``mode`` defaults to its ``cognitiveMode`` and
        ``quality`` to its explicit score, else ``importance * 10``, else -1 (unknown)."""
        if quality is None:
            if memory.quality_score is not None:
                quality = float(memory.quality_score)
            elif memory.importance is not None:
                quality = float(memory.importance) * 10
            else:
                quality = -1.0
        return cls(
            id=memory.id,
            text=memory.text,
            metadata={
                "type": memory.type,
                "mode": mode or memory.cognitive_mode or "",
                "timestamp": memory.timestamp or "",
                "quality": quality,
                "tags": ",".join(memory.tags),
                "source": source,
            },
        )


@dataclass(frozen=True)
class SearchHit:
    """One search result; ``score`` is the cosine similarity to the query (1 is best)."""

    id: str
    score: float
    text: str
    metadata: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The result shape of ``search --json`` (docs/ARCHITECTURE.md, "The outside contract")."""
        out: dict[str, Any] = {"id": self.id, "score": self.score, "text": self.text}
        for key in RESULT_KEYS:
            out[key] = self.metadata.get(key, "")
        return out


def _chunks(seq: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


def _delete_ids(ids: list[str], col: Collection) -> None:
    col.delete(ids=ids)


class VectorIndex:
    """Per-profile Chroma collections in cosine space, filled with our embeddings.

    ``VectorIndex(path=...)`` opens an embedded, persistent Chroma in that directory;
    ``VectorIndex(url=...)`` talks to a Chroma server. Safe to share between threads.
    ``EmbeddingError`` from the embedder passes through unchanged; every Chroma
    failure becomes a ``VectorIndexError``.
    """

    def __init__(
        self,
        path: Path | None = None,
        url: str | None = None,
        *,
        embedder: Embedder,
    ) -> None:
        if (path is None) == (url is None):
            raise VectorIndexError("give the index either a directory (path) or a Chroma url")
        self._store = ChromaStore(path, url, embedder_name=embedder.name)
        self.embedder = embedder
        self.path = Path(path) if path is not None else None
        self.url = url

    @property
    def _max_batch(self) -> int:
        """The most ids the client takes in one request (known once connected)."""
        return self._store.max_batch

    def built_with(self, profile: str) -> str | None:
        """The name of the embedder that filled the profile's collection (None: no
        collection, or one that predates the record)."""
        return self._store.built_with(profile)

    # -- writing -----------------------------------------------------------------

    def add(self, profile: str, items: Iterable[IndexItem]) -> int:
        """Index items, idempotently: new ids are embedded and added, ids whose text
        changed are re-embedded, ids whose metadata alone changed are updated in place,
        and unchanged ids cost one lookup. Returns how many items were written."""
        latest: dict[str, IndexItem] = {}
        for item in items:
            latest[item.id] = item  # the last of repeated ids wins
        if not latest:
            return 0
        unique = list(latest.values())
        written = 0
        for chunk in _chunks(unique, self._max_batch):
            add = partial(self._add, profile, chunk)
            written += self._store.run(profile, True, "indexing into", add) or 0
        return written

    def _add(self, profile: str, items: Sequence[IndexItem], col: Collection) -> int:
        self._store.check_embedder(profile, col)
        found = col.get(ids=[i.id for i in items], include=["documents", "metadatas"])
        stored = {
            id_: (doc, meta or {})
            for id_, doc, meta in zip(
                found["ids"], found["documents"] or [], found["metadatas"] or [], strict=True
            )
        }
        new: list[tuple[IndexItem, dict[str, MetadataValue]]] = []
        changed: list[tuple[IndexItem, dict[str, MetadataValue | None]]] = []
        meta_only: list[tuple[IndexItem, dict[str, MetadataValue | None]]] = []
        for item in items:
            meta = clean_metadata(item.metadata)
            if item.id not in stored:
                new.append((item, meta))
                continue
            old_text, old_meta = stored[item.id]
            # Keys that are gone are sent as None, which makes Chroma drop them.
            replace: dict[str, MetadataValue | None] = {k: None for k in old_meta if k not in meta}
            replace.update(meta)
            if old_text != item.text:
                changed.append((item, replace))
            elif dict(old_meta) != meta:
                meta_only.append((item, replace))
        # New ids and ids whose text changed are embedded together, in one upsert.
        embed = new + changed
        if embed:
            vectors = self.embedder.embed([i.text for i, _ in embed])
            col.upsert(
                ids=[i.id for i, _ in embed],
                embeddings=vectors,  # type: ignore[arg-type]
                documents=[i.text for i, _ in embed],
                metadatas=[m or None for _, m in embed],  # type: ignore[misc]
            )
        if meta_only:
            col.update(
                ids=[i.id for i, _ in meta_only],
                metadatas=[m for _, m in meta_only],
            )
        return len(new) + len(changed) + len(meta_only)

    def delete(self, profile: str, ids: Iterable[str]) -> None:
        """Remove these ids from the profile's collection (absent ids are ignored)."""
        wanted = list(dict.fromkeys(ids))
        for chunk in _chunks(wanted, self._max_batch):
            self._store.run(profile, False, "deleting from", partial(_delete_ids, list(chunk)))

    def reset(self, profile: str) -> None:
        """Drop the profile's collection and create it empty, with the current embedder."""
        self._store.reset(profile)

    # -- reading -----------------------------------------------------------------

    def search(self, profile: str, query: str, k: int = 5) -> list[SearchHit]:
        """The ``k`` memories nearest to ``query``, best first; [] for an unknown profile,
        an empty collection or ``k < 1``."""
        if k < 1:
            return []
        if self.count(profile) == 0:
            return []

        def nearest(col: Collection) -> Any:
            self._store.check_embedder(profile, col)
            return col.query(
                query_embeddings=[vector],  # type: ignore[arg-type]
                n_results=k,
                include=["documents", "metadatas", "distances"],
            )

        vector = self.embedder.embed([query])[0]
        result = self._store.run(profile, False, "searching", nearest)
        if result is None:
            return []
        ids = result["ids"][0]
        docs = (result["documents"] or [[]])[0]
        metas = (result["metadatas"] or [[]])[0]
        dists = (result["distances"] or [[]])[0]
        hits = [
            SearchHit(id=i, score=1.0 - float(d), text=doc or "", metadata=dict(m or {}))
            for i, doc, m, d in zip(ids, docs, metas, dists, strict=True)
        ]
        hits.sort(key=lambda h: h.score, reverse=True)
        return hits

    def count(self, profile: str) -> int:
        """How many memories the profile's collection holds (0 when it has none)."""
        return self._store.run(profile, False, "counting", lambda c: c.count()) or 0

    def ids(self, profile: str) -> set[str]:
        """Every id in the profile's collection."""

        def page_through(col: Collection) -> set[str]:
            out: set[str] = set()
            offset = 0
            while True:
                page = col.get(include=[], limit=self._max_batch, offset=offset)
                out.update(page["ids"])
                if len(page["ids"]) < self._max_batch:
                    return out
                offset += self._max_batch

        return self._store.run(profile, False, "listing", page_through) or set()

    def profiles(self) -> list[str]:
        """The profiles that have a collection here."""
        return self._store.profiles()

    # -- life cycle --------------------------------------------------------------

    def broken(self) -> str | None:
        """An embedded index whose database was deleted or overwritten while open: how."""
        return self._store.broken()

    def replace_store(self) -> Path | None:
        """An embedded index set aside (damaged or deleted) for an empty one; returns
        where the old directory went. The ledger then fills it again."""
        return self._store.replace()

    def close(self) -> None:
        """Release the client (and, embedded, its database files); idempotent."""
        self._store.close()

    def __enter__(self) -> VectorIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

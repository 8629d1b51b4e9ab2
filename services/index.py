"""The vector index: one Chroma collection per profile, ids = memory ids.

Embeddings come from our own ``Embedder`` (never Chroma's default embedding function,
which would download a model), and Chroma's telemetry is off: nothing here touches
the network, except a Chroma server the settings name.

The ledger is the source of truth; this index can always be rebuilt from it
(``reset`` then ``add``). A collection remembers the embedder that filled it, and an
index opened with another embedder refuses to mix vectors: it asks for a reindex.

chromadb is imported when an index is opened, not when this module is imported.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from services.embedding import Embedder, EmbeddingError
from services.errors import PersonadError

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

    from services.memories.model import Memory

T = TypeVar("T")

COLLECTION_PREFIX = "personad"
# Profile names used as they are; anything else is escaped (see collection_name).
_PLAIN_PROFILE = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,50}[a-z0-9])?$")
_SLUG_DROP = re.compile(r"[^a-z0-9]+")
# Collection metadata keys.
_META_PROFILE = "personad_profile"
_META_EMBEDDER = "personad_embedder"
# The metadata keys of an indexed memory (DESIGN.md, "The outside contract").
RESULT_KEYS = ("type", "mode", "timestamp", "source")

MetadataValue = str | int | float | bool


class VectorIndexError(PersonadError):
    """The vector index could not do what was asked; the message says what to do."""


def collection_name(profile: str) -> str:
    """The Chroma collection of a profile: deterministic, injective, always a valid name.

    A plain profile name (lower-case letters, digits, ``_`` and ``-``, starting and
    ending with a letter or digit, at most 52 characters) maps to
    ``personad-<profile>``; any other name maps to ``personad.<slug>.<hash>``, where
    the hash is of the exact name. Plain names never contain ``.``, so the two forms
    cannot collide. Names stay within Chroma's strictest rules (3-63 characters of
    ``[a-zA-Z0-9._-]``, alphanumeric at both ends, no ``..``).
    """
    if not profile:
        raise VectorIndexError("a profile name may not be empty")
    if _PLAIN_PROFILE.match(profile):
        return f"{COLLECTION_PREFIX}-{profile}"
    digest = hashlib.sha256(profile.encode("utf-8")).hexdigest()[:24]
    slug = _SLUG_DROP.sub("-", profile.lower()).strip("-")[:28].strip("-")
    return f"{COLLECTION_PREFIX}.{slug}.{digest}" if slug else f"{COLLECTION_PREFIX}.{digest}"


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
        """The result shape of ``search --json`` (DESIGN.md, "The outside contract")."""
        out: dict[str, Any] = {"id": self.id, "score": self.score, "text": self.text}
        for key in RESULT_KEYS:
            out[key] = self.metadata.get(key, "")
        return out


def _chunks(seq: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


def _delete_ids(ids: list[str], col: Collection) -> None:
    col.delete(ids=ids)


def _parse_url(url: str) -> tuple[str, int, bool]:
    """``host, port, ssl`` of a Chroma server URL. An explicit port wins; otherwise
    ``https://`` means 443, ``http://`` 80, and a bare ``host`` Chroma's 8000."""
    text = url.strip()
    explicit_scheme = "://" in text
    split = urlsplit(text if explicit_scheme else f"http://{text}")
    if split.scheme not in ("http", "https"):
        raise VectorIndexError(f"Chroma URL {url!r}: the scheme must be http or https")
    try:
        port = split.port
    except ValueError as exc:
        raise VectorIndexError(f"Chroma URL {url!r}: {exc}") from exc
    if not split.hostname:
        raise VectorIndexError(f"Chroma URL {url!r} names no host")
    if split.path.strip("/") or split.query or split.fragment:
        raise VectorIndexError(f"Chroma URL {url!r}: a path, query or fragment is not supported")
    ssl = split.scheme == "https"
    if port is None:
        port = (443 if ssl else 80) if explicit_scheme else 8000
    return split.hostname, port, ssl


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
        try:
            import chromadb
            from chromadb.config import Settings
        except ImportError as exc:
            raise VectorIndexError(
                f"the vector index needs the 'chromadb' package ({exc})"
            ) from exc
        self.embedder = embedder
        self.path = Path(path) if path is not None else None
        self.url = url
        settings = Settings(anonymized_telemetry=False)
        try:
            if url is not None:
                host, port, ssl = _parse_url(url)
                self._client: ClientAPI = chromadb.HttpClient(
                    host=host, port=port, ssl=ssl, settings=settings
                )
                where = f"the Chroma server at {url}"
            else:
                assert self.path is not None
                self.path.mkdir(parents=True, exist_ok=True)
                self._client = chromadb.PersistentClient(path=str(self.path), settings=settings)
                where = f"the index at {self.path}"
            self._max_batch = max(1, int(self._client.get_max_batch_size()))
        except VectorIndexError:
            raise
        except Exception as exc:
            target = url if url is not None else path
            raise VectorIndexError(f"cannot open the vector index at {target}: {exc}") from exc
        self._where = where
        self._collections: dict[str, Collection] = {}
        self._lock = threading.RLock()
        self._closed = False

    # -- collections -------------------------------------------------------------

    def _open(self, profile: str, *, create: bool) -> Collection | None:
        """The profile's collection (cached), ``None`` when absent and not ``create``."""
        with self._lock:
            if self._closed:
                raise VectorIndexError("the vector index is closed")
            col = self._collections.get(profile)
            if col is not None:
                return col
            from chromadb.errors import NotFoundError

            name = collection_name(profile)
            try:
                if create:
                    col = self._client.get_or_create_collection(
                        name,
                        configuration={"hnsw": {"space": "cosine"}},
                        metadata={_META_PROFILE: profile, _META_EMBEDDER: self.embedder.name},
                        embedding_function=None,
                    )
                else:
                    col = self._client.get_collection(name, embedding_function=None)
            except NotFoundError:
                return None
            except Exception as exc:
                raise VectorIndexError(f"{self._where}: cannot open {name}: {exc}") from exc
            self._collections[profile] = col
            return col

    def built_with(self, profile: str) -> str | None:
        """The name of the embedder that filled the profile's collection (None: no
        collection, or one that predates the record)."""
        col = self._open(profile, create=False)
        value = (col.metadata or {}).get(_META_EMBEDDER) if col is not None else None
        return value if isinstance(value, str) else None

    def _check_embedder(self, profile: str, col: Collection) -> None:
        """Vectors of different embedders must not meet in one collection."""
        built_with = (col.metadata or {}).get(_META_EMBEDDER)
        if built_with is not None and built_with != self.embedder.name:
            raise VectorIndexError(
                f"the index of profile {profile!r} was built with the embedder "
                f"{built_with!r}, not the configured {self.embedder.name!r}: run "
                f"`personad reindex {profile}` to rebuild it"
            )

    def _run(
        self, profile: str, create: bool, what: str, fn: Callable[[Collection], T]
    ) -> T | None:
        """``fn(collection)`` with Chroma errors translated; a cached handle whose
        collection was dropped behind our back is re-opened once."""
        from chromadb.errors import NotFoundError

        for attempt in (0, 1):
            col = self._open(profile, create=create)
            if col is None:
                return None
            try:
                return fn(col)
            except NotFoundError as exc:
                with self._lock:
                    if self._collections.get(profile) is col:
                        del self._collections[profile]
                if attempt:
                    raise VectorIndexError(f"{self._where}: {what} {profile!r}: {exc}") from exc
            except (VectorIndexError, EmbeddingError):
                raise
            except Exception as exc:
                from chromadb.errors import InvalidArgumentError

                hint = ""
                if isinstance(exc, InvalidArgumentError) and "dimension" in str(exc):
                    hint = f"; run `personad reindex {profile}` to rebuild it"
                raise VectorIndexError(f"{self._where}: {what} {profile!r}: {exc}{hint}") from exc
        return None  # unreachable

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
            written += self._run(profile, True, "indexing into", add) or 0
        return written

    def _add(self, profile: str, items: Sequence[IndexItem], col: Collection) -> int:
        self._check_embedder(profile, col)
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
            self._run(profile, False, "deleting from", partial(_delete_ids, list(chunk)))

    def reset(self, profile: str) -> None:
        """Drop the profile's collection and create it empty, with the current embedder."""
        from chromadb.errors import NotFoundError

        name = collection_name(profile)
        with self._lock:
            self._collections.pop(profile, None)
            try:
                self._client.delete_collection(name)
            except NotFoundError:
                pass
            except Exception as exc:
                raise VectorIndexError(f"{self._where}: cannot drop {name}: {exc}") from exc
            self._open(profile, create=True)

    # -- reading -----------------------------------------------------------------

    def search(self, profile: str, query: str, k: int = 5) -> list[SearchHit]:
        """The ``k`` memories nearest to ``query``, best first; [] for an unknown profile,
        an empty collection or ``k < 1``."""
        if k < 1:
            return []
        if self.count(profile) == 0:
            return []

        def nearest(col: Collection) -> Any:
            self._check_embedder(profile, col)
            return col.query(
                query_embeddings=[vector],  # type: ignore[arg-type]
                n_results=k,
                include=["documents", "metadatas", "distances"],
            )

        vector = self.embedder.embed([query])[0]
        result = self._run(profile, False, "searching", nearest)
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
        return self._run(profile, False, "counting", lambda c: c.count()) or 0

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

        return self._run(profile, False, "listing", page_through) or set()

    def profiles(self) -> list[str]:
        """The profiles that have a collection here."""
        with self._lock:
            if self._closed:
                raise VectorIndexError("the vector index is closed")
            try:
                cols = self._client.list_collections()
            except Exception as exc:
                raise VectorIndexError(f"{self._where}: cannot list collections: {exc}") from exc
        out = []
        for col in cols:
            profile = (getattr(col, "metadata", None) or {}).get(_META_PROFILE)
            if isinstance(profile, str) and collection_name(profile) == col.name:
                out.append(profile)
        return sorted(out)

    # -- life cycle --------------------------------------------------------------

    def close(self) -> None:
        """Release the client (and, embedded, its database files); idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._collections.clear()
            close = getattr(self._client, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:
                    raise VectorIndexError(f"{self._where}: closing failed: {exc}") from exc

    def __enter__(self) -> VectorIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

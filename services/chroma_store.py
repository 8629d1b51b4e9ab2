"""The Chroma side of the vector index: the client, one collection per profile, errors.

``ChromaStore`` opens an embedded, persistent Chroma in a directory or talks to a Chroma
server, names each profile's collection (``collection_name``), keeps the collections it
opened, records in a collection which embedder filled it, and turns every Chroma failure
into a ``VectorIndexError`` that says what to do. Chroma's telemetry is off.

chromadb is imported when a store is opened, not when this module is imported.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from services.embedding import EmbeddingError
from services.errors import PersonadError

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

T = TypeVar("T")

COLLECTION_PREFIX = "personad"
# Ids per request until the client says how many it takes.
DEFAULT_MAX_BATCH = 1000
# Profile names used as they are; anything else is escaped (see collection_name).
_PLAIN_PROFILE = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,50}[a-z0-9])?$")
_SLUG_DROP = re.compile(r"[^a-z0-9]+")
# Collection metadata keys.
_META_PROFILE = "personad_profile"
_META_EMBEDDER = "personad_embedder"


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


def parse_url(url: str) -> tuple[str, int, bool]:
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


_DAMAGE = ("not a database", "malformed", "(code: 26)", "(code: 11)", "no such table")


def looks_damaged(exc: BaseException) -> bool:
    """An error opening an embedded index that says its files are damaged."""
    text = str(exc) + str(exc.__cause__ or "")
    return any(mark in text for mark in _DAMAGE)


def set_aside(path: Path) -> Path | None:
    """Move a damaged index directory to ``<path>.damaged-<time>`` (kept, never deleted);
    chromadb's cached clients are forgotten, so the next open starts afresh."""
    with contextlib.suppress(Exception):  # chromadb caches one system per path
        from chromadb.api.client import SharedSystemClient

        SharedSystemClient.clear_system_cache()
    if not path.exists():
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    os.replace(path, aside)
    return aside


class ChromaStore:
    """Per-profile Chroma collections in cosine space, for vectors of one embedder.

    ``path``: an embedded, persistent Chroma in that directory; ``url``: a Chroma
    server. Safe to share between threads. ``max_batch`` is the most ids the client
    takes in one request.
    """

    def __init__(self, path: Path | str | None, url: str | None, *, embedder_name: str) -> None:
        try:
            import chromadb  # noqa: F401
        except ImportError as exc:
            raise VectorIndexError(
                f"the vector index needs the 'chromadb' package ({exc})"
            ) from exc
        self.embedder_name = embedder_name
        self._url = url
        self._client: ClientAPI | None = None
        self.max_batch = DEFAULT_MAX_BATCH
        self._collections: dict[str, Collection] = {}
        self._lock = threading.RLock()
        self._closed = False
        if url is not None:
            self._host, self._port, self._ssl = parse_url(url)
            self._where = f"the Chroma server at {url}"
            # A server that is down now is not fatal: every use connects again, and
            # fails with a VectorIndexError until the server answers.
            with contextlib.suppress(VectorIndexError):
                self._connect()
        else:
            assert path is not None
            self._path = Path(path)
            self._where = f"the index at {self._path}"
            self._connect()

    def _connect(self) -> ClientAPI:
        """The client, connected on first use (for a server: again after a failure)."""
        with self._lock:
            if self._closed:
                raise VectorIndexError("the vector index is closed")
            if self._client is not None:
                return self._client
            import chromadb
            from chromadb.config import Settings

            settings = Settings(anonymized_telemetry=False)
            try:
                if self._url is not None:
                    client: ClientAPI = chromadb.HttpClient(
                        host=self._host, port=self._port, ssl=self._ssl, settings=settings
                    )
                else:
                    self._path.mkdir(parents=True, exist_ok=True)
                    client = chromadb.PersistentClient(path=str(self._path), settings=settings)
                self.max_batch = max(1, int(client.get_max_batch_size()))
            except Exception as exc:
                if self._url is not None:
                    raise VectorIndexError(
                        f"{self._where} is not reachable ({exc}); memories stay in the "
                        "ledger and are indexed once it answers"
                    ) from exc
                raise VectorIndexError(
                    f"cannot open the vector index at {self._path}: {exc}"
                ) from exc
            self._client = client
            return client

    def open(self, profile: str, *, create: bool) -> Collection | None:
        """The profile's collection (cached), ``None`` when absent and not ``create``."""
        with self._lock:
            client = self._connect()
            col = self._collections.get(profile)
            if col is not None:
                return col
            from chromadb.errors import NotFoundError

            name = collection_name(profile)
            try:
                if create:
                    col = client.get_or_create_collection(
                        name,
                        configuration={"hnsw": {"space": "cosine"}},
                        metadata={_META_PROFILE: profile, _META_EMBEDDER: self.embedder_name},
                        embedding_function=None,
                    )
                else:
                    col = client.get_collection(name, embedding_function=None)
            except NotFoundError:
                return None
            except Exception as exc:
                raise VectorIndexError(f"{self._where}: cannot open {name}: {exc}") from exc
            self._collections[profile] = col
            return col

    def built_with(self, profile: str) -> str | None:
        """The name of the embedder that filled the profile's collection (None: no
        collection, or one that predates the record)."""
        col = self.open(profile, create=False)
        value = (col.metadata or {}).get(_META_EMBEDDER) if col is not None else None
        return value if isinstance(value, str) else None

    def check_embedder(self, profile: str, col: Collection) -> None:
        """Vectors of different embedders must not meet in one collection."""
        built_with = (col.metadata or {}).get(_META_EMBEDDER)
        if built_with is not None and built_with != self.embedder_name:
            raise VectorIndexError(
                f"the index of profile {profile!r} was built with the embedder "
                f"{built_with!r}, not the configured {self.embedder_name!r}: run "
                f"`personad reindex {profile}` to rebuild it"
            )

    def run(self, profile: str, create: bool, what: str, fn: Callable[[Collection], T]) -> T | None:
        """``fn(collection)`` with Chroma errors translated; a cached handle whose
        collection was dropped behind our back is re-opened once."""
        from chromadb.errors import NotFoundError

        for attempt in (0, 1):
            col = self.open(profile, create=create)
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

    def reset(self, profile: str) -> None:
        """Drop the profile's collection and create it empty, with the current embedder."""
        from chromadb.errors import NotFoundError

        name = collection_name(profile)
        with self._lock:
            client = self._connect()
            self._collections.pop(profile, None)
            try:
                client.delete_collection(name)
            except NotFoundError:
                pass
            except Exception as exc:
                raise VectorIndexError(f"{self._where}: cannot drop {name}: {exc}") from exc
            self.open(profile, create=True)

    def profiles(self) -> list[str]:
        """The profiles that have a collection here."""
        with self._lock:
            client = self._connect()
            try:
                cols = client.list_collections()
            except Exception as exc:
                raise VectorIndexError(f"{self._where}: cannot list collections: {exc}") from exc
        out = []
        for col in cols:
            profile = (getattr(col, "metadata", None) or {}).get(_META_PROFILE)
            if isinstance(profile, str) and collection_name(profile) == col.name:
                out.append(profile)
        return sorted(out)

    def broken(self) -> str | None:
        """Embedded and open: its database deleted or overwritten behind its back (a
        cheap look at the file's header), else None."""
        if self._url is not None or self._client is None:
            return None
        db = self._path / "chroma.sqlite3"
        try:
            with open(db, "rb") as f:
                header = f.read(16)
        except FileNotFoundError:
            return f"{db} was deleted"
        except OSError:
            return None  # unreadable for now: not proof of damage
        return None if header == b"SQLite format 3\x00" else f"{db} is not a database any more"

    def replace(self) -> Path | None:
        """Embedded: close the client, set what is left of the directory aside and
        start an empty store there; returns where the old one went."""
        with self._lock:
            self._collections.clear()
            close = getattr(self._client, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()
            self._client = None
            aside = set_aside(self._path)
            self._connect()
            return aside

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

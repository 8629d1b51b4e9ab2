"""Watching `<profiles>/<profile>/memory/` for new and changed memory files.

watchdog's thread only classifies events and puts paths on the :class:`IngestQueue`;
all reading happens in the ingest worker. A file is due when its writer closed it
(close-write) or renamed it into place (moved-into), after a short debounce; a file
modified without a close (or found by a reconcile scan) is due once it has been
quiet for the settle time. A reconcile scan (at start-up, periodically, after an
inotify overflow and when a directory appears) finds whatever events missed.

Fault injection (for the reliability suite only; not a setting): when the environment
variable ``PERSONAD_FAULT_DROP_EVENTS`` holds a fraction (e.g. ``0.3``), every file
event of that fraction of paths is dropped before it reaches the queue, as if inotify
had lost them, so those files arrive only through a reconcile scan. The paths are
picked by a hash of ``PERSONAD_FAULT_SEED`` (default ``0``) and the path, and each
dropped event is logged ("fault injection: file event dropped").
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from services.profile_names import RULE, is_valid_profile_name

log = structlog.get_logger(__name__)

MEMORY_DIR = "memory"
_warned_names: set[str] = set()  # folders with an invalid profile name, logged once
_IGNORED_SUFFIXES = (".tmp", ".temp", ".swp", ".swx", ".swo", ".part", ".crdownload", "~")


def is_ignored_name(name: str) -> bool:
    """Temp, hidden and editor files are never memories."""
    return (
        name.startswith((".", "#"))
        or name.endswith(_IGNORED_SUFFIXES)
        or (name.startswith("~") and name.endswith("#"))
    )


def classify(profiles_dir: Path, path: str | Path) -> tuple[str, Path] | None:
    """(profile, path) when ``path`` is a candidate memory file, else None."""
    p = Path(path)
    try:
        rel = p.relative_to(profiles_dir)
    except ValueError:
        return None
    parts = rel.parts
    if len(parts) < 3 or parts[1] != MEMORY_DIR or parts[0].startswith("."):
        return None
    if not is_valid_profile_name(parts[0]):
        if parts[0] not in _warned_names:
            _warned_names.add(parts[0])
            log.warning(
                "folder skipped: invalid profile name",
                folder=str(profiles_dir / parts[0]),
                rule=RULE,
            )
        return None
    if any(is_ignored_name(part) for part in parts[2:]):
        return None
    return parts[0], p


@dataclass
class _Pending:
    due: float
    closed: bool  # the writer is done with it (close-write, rename, or a scan of old files)


class IngestQueue:
    """Debounced, de-duplicated paths waiting to be ingested (thread-safe)."""

    def __init__(self, debounce_s: float, settle_s: float) -> None:
        self.debounce_s = debounce_s
        self.settle_s = settle_s
        self._items: dict[tuple[str, str], _Pending] = {}
        self._cond = threading.Condition()

    def put(self, profile: str, path: Path, *, closed: bool) -> None:
        delay = self.debounce_s if closed else self.settle_s
        with self._cond:
            key = (profile, str(path))
            old = self._items.get(key)
            # A later close event wins over an earlier "still writing" guess.
            self._items[key] = _Pending(
                time.monotonic() + delay, closed or bool(old and old.closed)
            )
            self._cond.notify_all()

    def requeue(self, profile: str, path: Path, delay: float) -> None:
        with self._cond:
            self._items[(profile, str(path))] = _Pending(time.monotonic() + delay, False)
            self._cond.notify_all()

    def depth(self, profile: str | None = None) -> int:
        with self._cond:
            if profile is None:
                return len(self._items)
            return sum(1 for p, _ in self._items if p == profile)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def take(self, max_items: int, timeout: float) -> list[tuple[str, Path, bool]]:
        """Due items, oldest due first; waits up to ``timeout`` for one to be due."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                now = time.monotonic()
                due = sorted(
                    ((v.due, k, v.closed) for k, v in self._items.items() if v.due <= now),
                )[:max_items]
                if due:
                    for _, key, _closed in due:
                        del self._items[key]
                    return [(k[0], Path(k[1]), closed) for _, k, closed in due]
                if now >= deadline:
                    return []
                next_due = min((v.due for v in self._items.values()), default=deadline)
                self._cond.wait(max(0.001, min(deadline, next_due) - now))


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: Watcher) -> None:
        self.w = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            self._dispatch(event)
        except Exception:  # watchdog's thread must never die
            log.exception("watch event failed", path=str(event.src_path))

    def _dispatch(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileClosedEvent):
            self.w.offer(event.src_path, closed=True)
        elif isinstance(event, FileMovedEvent):
            self.w.offer(event.dest_path, closed=True)
        elif isinstance(event, (FileModifiedEvent, FileCreatedEvent)):
            self.w.offer(event.src_path, closed=False)
        elif isinstance(event, (DirCreatedEvent, DirMovedEvent)):
            target = event.dest_path if isinstance(event, DirMovedEvent) else event.src_path
            # Files may have landed in a new directory before its watch was added.
            self.w.request_scan(Path(os.fsdecode(target)))


class _OverflowSpotter(logging.Handler):
    """watchdog rebuilds its watches after an inotify overflow and only logs it;
    the lost events are recovered by a reconcile scan."""

    def __init__(self, callback: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self.callback = callback

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.callback()


class _EventDropper:
    """The fault-injection hook of the module docstring."""

    DROP_ENV = "PERSONAD_FAULT_DROP_EVENTS"
    SEED_ENV = "PERSONAD_FAULT_SEED"

    def __init__(self, rate: float, seed: str) -> None:
        self.rate = rate
        self.seed = seed

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> _EventDropper | None:
        raw = environ.get(cls.DROP_ENV)
        if not raw:
            return None
        try:
            rate = float(raw)
        except ValueError:
            rate = -1.0
        if not 0.0 <= rate <= 1.0:
            log.warning("fault injection ignored: not a fraction from 0 to 1", value=raw)
            return None
        seed = environ.get(cls.SEED_ENV, "0")
        log.warning("fault injection: dropping file events", rate=rate, seed=seed)
        return cls(rate, seed)

    def drops(self, path: Path) -> bool:
        digest = hashlib.sha256(f"{self.seed}\0{path}".encode()).digest()
        return int.from_bytes(digest[:8], "big") < self.rate * 2**64


class Watcher:
    def __init__(
        self,
        profiles_dir: Path,
        queue: IngestQueue,
        on_scan_request: Callable[[Path | None], None],
    ) -> None:
        self.profiles_dir = profiles_dir
        self.queue = queue
        self._on_scan_request = on_scan_request
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._spotter = _OverflowSpotter(lambda: self.request_scan(None, reason="overflow"))
        self._dropper = _EventDropper.from_environ(os.environ)
        self.events = 0

    def start(self) -> None:
        self.profiles_dir.mkdir(parents=True, exist_ok=True)
        observer = Observer()
        observer.schedule(_Handler(self), str(self.profiles_dir), recursive=True)
        observer.daemon = True
        observer.start()
        self._observer = observer
        logging.getLogger("watchdog").addHandler(self._spotter)
        log.info("watching", profiles_dir=str(self.profiles_dir))

    def stop(self) -> None:
        logging.getLogger("watchdog").removeHandler(self._spotter)
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    def offer(self, raw_path: str | bytes, *, closed: bool) -> None:
        found = classify(self.profiles_dir, os.fsdecode(raw_path))
        if found is None:
            return
        profile, path = found
        if self._dropper is not None and self._dropper.drops(path):
            log.warning("fault injection: file event dropped", path=str(path), closed=closed)
            return
        self.events += 1
        self.queue.put(profile, path, closed=closed)

    def request_scan(self, directory: Path | None, reason: str = "directory") -> None:
        if reason == "overflow":
            log.warning("inotify queue overflowed; scanning for missed files")
        self._on_scan_request(directory)


def scan_memory_files(profiles_dir: Path, under: Path | None = None) -> Iterator[tuple[str, Path]]:
    """Every candidate memory file below ``under`` (default: all profiles).

    Symlinked directories are not followed (no loops); symlinked files are offered
    and judged by the reader.
    """
    roots: list[Path]
    if under is None:
        try:
            roots = [p / MEMORY_DIR for p in sorted(profiles_dir.iterdir()) if p.is_dir()]
        except OSError:
            return
    else:
        roots = [under]
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not is_ignored_name(d))
            for name in sorted(filenames):
                found = classify(profiles_dir, Path(dirpath) / name)
                if found is not None:
                    yield found

"""The ingest worker: one thread that reads due files, records them and indexes them.

It owns its own ledger connection. Reconcile scans and reindex requests are run by
this thread too, so the index is written from one place.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import structlog

from daemon.watcher import IngestQueue, scan_memory_files
from services.index import VectorIndex
from services.ingest import Curate, Ingestor
from services.ledger import Ledger
from services.settings import Settings

log = structlog.get_logger(__name__)

DISK_FULL_RETRY_S = 2.0
# While idle, how often the memories left unindexed (an embedder that was down) are looked
# for and a failed index is retried (a query of the ledger each), and the longest the
# worker sleeps when nothing wakes it (new files, scans, re-index requests and stopping
# all do; a file waiting to settle wakes it when it is due): an idle loop that woke and
# asked four times a second kept the daemon at about 1% of a core.
IDLE_RETRY_S = 2.0
IDLE_WAIT_S = 2.0
_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def is_disk_full(exc: BaseException) -> bool:
    """An error (or one of its causes) saying the filesystem or a quota is full."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _DISK_FULL_ERRNOS:
            return True
        if "database or disk is full" in str(seen) or "No space left" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


_ALL = Path("/")  # marker: scan every profile


class IngestWorker(threading.Thread):
    def __init__(
        self,
        settings: Settings,
        queue: IngestQueue,
        index: VectorIndex | None,
        curate: Curate | None = None,
        on_ingested: Callable[[Ledger, str], object] | None = None,
    ) -> None:
        super().__init__(name="ingest", daemon=True)
        self.settings = settings
        self.queue = queue
        self.index = index
        self.curate = curate
        self.on_ingested = on_ingested
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._scans: set[Path] = set()
        self._reindex: list[tuple[str, Future[int]]] = []
        self.ready = threading.Event()
        self.state = "starting"
        self.last_error: str | None = None
        self.files_done = 0
        self.scans_done = 0
        self._next_retry = 0.0  # monotonic time of the next idle look for unindexed memories

    # -- requests from other threads -------------------------------------------
    def request_scan(self, directory: Path | None = None) -> None:
        with self._lock:
            self._scans.add(directory or _ALL)
        self.queue.wake()

    def request_reindex(self, profile: str) -> Future[int]:
        fut: Future[int] = Future()
        with self._lock:
            self._reindex.append((profile, fut))
        self.queue.wake()
        return fut

    def stop(self) -> None:
        self._stopping.set()
        self.queue.wake()

    # -- the thread ---------------------------------------------------------------
    def run(self) -> None:
        with Ledger(self.settings.ledger_path) as ledger:
            ingestor = Ingestor(
                ledger,
                self.index,
                max_file_bytes=int(self.settings.ingest.max_file_mb * 1024 * 1024),
                curate=self.curate,
                profiles_dir=self.settings.profiles,
            )
            try:
                self._startup(ledger, ingestor)
                self.state = "running"
                self.ready.set()
                while not self._stopping.is_set():
                    self._step(ledger, ingestor)
            finally:
                self.state = "stopped"
                self.ready.set()

    def _startup(self, ledger: Ledger, ingestor: Ingestor) -> None:
        if self.index is not None:
            try:
                self.index.embedder.embed(["warm-up"])  # load the model once, now
                for profile in ledger.profiles():
                    repaired = ingestor.repair_index(profile)
                    if repaired:
                        log.info("index repaired", profile=profile, indexed=repaired)
            except Exception as exc:
                self._index_failed(exc)
        self.request_scan(None)

    def _step(self, ledger: Ledger, ingestor: Ingestor) -> None:
        if self.index is not None and (why := self.index.broken()):
            self._rebuild_index(ledger, why)
        with self._lock:
            scans, self._scans = self._scans, set()
            reindex, self._reindex = self._reindex, []
        for profile, fut in reindex:
            try:
                fut.set_result(ingestor.reindex(profile))
            except Exception as exc:
                fut.set_exception(exc)
        for directory in sorted(scans):
            self._scan(ingestor, None if directory == _ALL else directory)
        items = self.queue.take(self.settings.ingest.batch_max_files, timeout=IDLE_WAIT_S)
        touched: set[str] = set()
        settle = self.settings.ingest.settle_s
        for number, (profile, path, closed) in enumerate(items):
            if self._stopping.is_set():
                # Not taken: the next start's reconcile scan finds it again.
                break
            if not closed and not self._settled(profile, path, settle):
                continue
            try:
                result = ingestor.ingest_file(profile, path)
            except Exception as exc:
                if is_disk_full(exc):  # nothing was written (one transaction per file)
                    self._disk_full(exc, items[number:])
                    break
                log.exception("ingest failed; will retry on the next scan", path=str(path))
                continue
            if self.state == "disk-full":
                self.state, self.last_error = "running", None
                log.warning("disk space is back; ingest resumed")
            self.files_done += 1
            if result.outcome is not None:
                touched.add(profile)
        now = time.monotonic()
        if not items and not scans and self.index is not None and now >= self._next_retry:
            self._next_retry = now + IDLE_RETRY_S
            if self.state == "index-error":
                self._recover_index(ledger, ingestor)
            touched.update(ledger.profiles_with_unindexed())
        for profile in sorted(touched):
            self._index(ingestor, profile)
            if self.on_ingested is not None:
                try:
                    self.on_ingested(ledger, profile)
                except Exception:
                    log.exception("after-ingest hook failed", profile=profile)

    def _settled(self, profile: str, path: Path, settle: float) -> bool:
        """A file without a close event is taken once unmodified for the settle time."""
        try:
            age = time.time() - path.stat().st_mtime
        except OSError:
            return True  # gone or unreadable: the reader records what happened
        if age >= settle:
            return True
        self.queue.requeue(profile, path, settle - age + 0.01)
        return False

    def _scan(self, ingestor: Ingestor, directory: Path | None) -> None:
        started = time.monotonic()
        found = queued = 0
        for profile, path in scan_memory_files(self.settings.profiles, directory):
            found += 1
            try:
                st = path.stat()
            except OSError:
                continue
            if ingestor.is_unchanged(profile, path, st):
                continue
            queued += 1
            old = time.time() - st.st_mtime >= self.settings.ingest.settle_s
            self.queue.put(profile, path, closed=old)
        self.scans_done += 1
        log.info(
            "reconcile scan",
            under=str(directory or self.settings.profiles),
            files=found,
            queued=queued,
            seconds=round(time.monotonic() - started, 3),
        )

    def _index(self, ingestor: Ingestor, profile: str) -> None:
        try:
            ingestor.index_pending(profile)
            if self.last_error and self.state == "index-error":
                self.state, self.last_error = "running", None
        except Exception as exc:
            self._index_failed(exc)

    def _recover_index(self, ledger: Ledger, ingestor: Ingestor) -> None:
        """After an index failure (a Chroma server down, say): once the index answers
        again, what it lacks of what the ledger marks indexed is indexed again."""
        try:
            for profile in ledger.profiles():
                ingestor.repair_index(profile)
        except Exception as exc:
            self._index_failed(exc)
            return
        self.state, self.last_error = "running", None
        log.info("the index answers again")

    def _rebuild_index(self, ledger: Ledger, why: str) -> None:
        """The index's database was deleted or overwritten while running: a new, empty
        index, filled again from the ledger (the indexing below picks every memory up)."""
        assert self.index is not None
        try:
            aside = self.index.replace_store()
        except Exception as exc:
            self._index_failed(exc)
            return
        for profile in ledger.profiles():
            ledger.mark_all_unindexed(profile)
        log.error(
            "the index was deleted or damaged while running; rebuilding it from the ledger",
            why=why,
            set_aside=str(aside) if aside else None,
        )

    def _disk_full(self, exc: Exception, waiting: list[tuple[str, Path, bool]]) -> None:
        """The state directory's filesystem is full: this file and the rest of the batch
        wait and are tried again every DISK_FULL_RETRY_S, until space returns."""
        for profile, path, _closed in waiting:
            self.queue.requeue(profile, path, DISK_FULL_RETRY_S)
        if self.state != "disk-full":
            self.state = "disk-full"
            self.last_error = (
                f"the disk holding {self.settings.state_dir} is full ({exc}); ingest is "
                f"paused and resumes by itself once space is freed ({len(waiting)} files wait)"
            )
            log.error("disk full: ingest paused", error=str(exc), waiting=len(waiting))

    def _index_failed(self, exc: Exception) -> None:
        # Memories stay marked unindexed in the ledger; the next step retries.
        self.state, self.last_error = "index-error", f"{type(exc).__name__}: {exc}"
        log.error("indexing failed; memories stay queued for the index", error=self.last_error)
        self._stopping.wait(2.0)

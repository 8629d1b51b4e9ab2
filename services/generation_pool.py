"""Warm generation workers (:class:`services.generation_worker.GenerationWorker`) kept
between questions: a :class:`WorkerPool` keeps at most one worker per (model, adapter) and
at most ``max_workers`` in all, ends those idle for ``idle_timeout_s``
(:meth:`WorkerPool.reap`), all of them on :meth:`WorkerPool.release` (before a training
job takes the memory), and replaces a worker that died at its next request.

Subprocess mechanics only: this module imports neither torch nor the daemon.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import structlog

from services.generation_worker import AskError, GenerationWorker, Reply, WorkerSpec

log = structlog.get_logger(__name__)


class WorkerPool:
    """Warm workers: at most one per (model, adapter) and ``max_workers`` in all (the least
    recently used idle one is ended to make room). Thread-safe."""

    def __init__(
        self,
        *,
        idle_timeout_s: float = 600.0,
        max_workers: int = 1,
        ready_timeout_s: float = 600.0,
        factory: Callable[[WorkerSpec], GenerationWorker] = GenerationWorker,
    ) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be 1 or more")
        self.idle_timeout_s = idle_timeout_s
        self.max_workers = max_workers
        self.ready_timeout_s = ready_timeout_s
        self._factory = factory
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()  # one model loads at a time
        self._workers: dict[tuple[str, str | None], GenerationWorker] = {}
        self._busy: dict[GenerationWorker, int] = {}
        self._starting: set[GenerationWorker] = set()
        self._closed = False

    def pids(self) -> list[int]:
        """The pids of the workers kept (live or not yet found dead)."""
        with self._lock:
            return [w.pid for w in self._workers.values()]

    def generate(
        self,
        spec: WorkerSpec,
        prompt: str,
        *,
        max_new_tokens: int = 96,
        stop: Sequence[str] = (),
        no_repeat_ngram: int | None = None,
        timeout: float = 600.0,
    ) -> Reply:
        """``spec``'s answer to ``prompt`` from its warm worker, started (and waited for,
        within ``timeout``, loading included) when there is none or it died. AskError
        when it fails."""
        started = time.monotonic()
        worker, warm = self._checkout(spec, timeout)
        try:
            text, stopped = worker.generate(
                prompt,
                max_new_tokens=max_new_tokens,
                stop=stop,
                no_repeat_ngram=no_repeat_ngram,
                timeout=max(1.0, timeout - (time.monotonic() - started)),
            )
        finally:
            self._checkin(worker)
        return Reply(text, stopped, warm)

    def _checkout(self, spec: WorkerSpec, timeout: float) -> tuple[GenerationWorker, bool]:
        """(a live worker for ``spec``, marked busy so that reap and eviction pass it by;
        whether it was running already)."""
        with self._lock:
            worker = self._take(spec)
        if worker is not None:
            return worker, True
        with self._start_lock:
            with self._lock:
                worker = self._take(spec)  # started meanwhile by another thread
                if worker is not None:
                    return worker, True
                self._raise_if_closed()
                victims = self._make_room(self.max_workers - 1)
            self._close_all(victims)
            worker = self._factory(spec)
            with self._lock:
                self._starting.add(worker)
            try:
                info = worker.wait_ready(min(timeout, self.ready_timeout_s))
            except BaseException:
                with self._lock:
                    self._starting.discard(worker)
                raise
            with self._lock:
                self._starting.discard(worker)
                ended = self._closed or not worker.alive  # released while it loaded
                if not ended:
                    self._workers[spec.key] = worker
                    self._busy[worker] = self._busy.get(worker, 0) + 1
            if ended:
                worker.close()
                raise AskError(
                    "the generation worker was released while it loaded (a training job "
                    "started, or the daemon is stopping); ask again"
                )
        log.info(
            "generation worker ready",
            model=spec.describe(),
            pid=worker.pid,
            load_s=info.get("seconds"),
        )
        return worker, False

    def _take(self, spec: WorkerSpec) -> GenerationWorker | None:
        """(Under the lock.) The live worker of ``spec``, marked busy; a dead one is
        dropped (and ended) so that a new one is started."""
        self._raise_if_closed()
        worker = self._workers.get(spec.key)
        if worker is None:
            return None
        if not worker.alive:
            log.warning(
                "generation worker ended; starting another",
                model=spec.describe(),
                pid=worker.pid,
                last_stderr=worker.last_stderr(),
            )
            del self._workers[spec.key]
            worker.close(0)
            return None
        self._busy[worker] = self._busy.get(worker, 0) + 1
        return worker

    def _checkin(self, worker: GenerationWorker) -> None:
        with self._lock:
            n = self._busy.get(worker, 1) - 1
            if n > 0:
                self._busy[worker] = n
            else:
                self._busy.pop(worker, None)
            kept = worker in self._workers.values()
            victims = self._make_room(self.max_workers)  # over the limit while all were busy
        if not kept:  # released while it answered
            victims.append(worker)
        self._close_all(victims)

    def _raise_if_closed(self) -> None:
        if self._closed:
            raise AskError("the generation workers are closed (the daemon is stopping)")

    def _make_room(self, keep: int) -> list[GenerationWorker]:
        """(Under the lock.) Take out the least recently used idle workers until at most
        ``keep`` are left; the caller ends them."""
        victims: list[GenerationWorker] = []
        idle = sorted(
            (w for w in self._workers.values() if w not in self._busy), key=lambda w: w.last_used
        )
        while len(self._workers) > keep and idle:
            victims.append(self._drop(idle.pop(0)))
        return victims

    def _drop(self, worker: GenerationWorker) -> GenerationWorker:
        for key, w in list(self._workers.items()):
            if w is worker:
                del self._workers[key]
        return worker

    @staticmethod
    def _close_all(workers: list[GenerationWorker]) -> None:
        for w in workers:
            w.close()

    def reap(self, now: float | None = None) -> int:
        """End the workers idle for ``idle_timeout_s`` or more (and the dead ones); how
        many were ended."""
        now = time.monotonic() if now is None else now
        with self._lock:
            victims = [
                self._drop(w)
                for w in list(self._workers.values())
                if w not in self._busy and (not w.alive or now - w.last_used >= self.idle_timeout_s)
            ]
        for w in victims:
            log.info("generation worker idle: ended", model=w.spec.describe(), pid=w.pid)
        self._close_all(victims)
        return len(victims)

    def release(self) -> int:
        """End every worker, busy or not (their answers in hand fail), and those still
        loading; how many were ended."""
        with self._lock:
            victims = list(self._workers.values()) + list(self._starting)
            self._workers.clear()
        if victims:
            log.info("generation workers released", pids=[w.pid for w in victims])
        self._close_all(victims)
        return len(victims)

    def close(self) -> None:
        """Release every worker; later requests fail."""
        with self._lock:
            self._closed = True
        self.release()

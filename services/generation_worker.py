"""Warm answers: a model kept loaded in a generation worker process between questions.

A :class:`GenerationWorker` is one ``python -m services.generation --serve`` process (in
its own process group) holding one model (and adapter) in memory; it answers one request
at a time over its stdin and stdout (JSON lines, see :mod:`services.generation`). A
:class:`WorkerPool` keeps at most one worker per (model, adapter) and at most
``max_workers`` in all, ends those idle for ``idle_timeout_s`` (:meth:`WorkerPool.reap`),
all of them on :meth:`WorkerPool.release` (before a training job takes the memory), and
replaces a worker that died at its next request.

Subprocess mechanics only: this module imports neither torch nor the daemon. A worker
whose parent dies sees the end of its stdin and exits after the answer in hand.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple

import structlog

from services.errors import PersonadError

log = structlog.get_logger(__name__)

# Seconds a worker gets to exit after SIGTERM before its group is killed.
STOP_GRACE_S = 3.0
STDERR_LINES = 50
_EOF = object()


class AskError(PersonadError):
    """The question cannot be answered (no model, generation failed)."""


class Reply(NamedTuple):
    """A pool's answer: ``stopped``: it ended at eos or a stop string rather than at
    ``max_new_tokens``; ``warm``: the model was already loaded (no load in this answer)."""

    text: str
    stopped: bool
    warm: bool


@dataclass(frozen=True, kw_only=True)
class WorkerSpec:
    """What a worker runs: ``model`` (a base spec or a model directory) with ``adapter``,
    base models converted into ``cache_dir``, under the ``python`` interpreter, with the
    environment ``env`` (None: the caller's)."""

    model: str
    adapter: Path | None = None
    cache_dir: Path
    python: str = sys.executable
    device: str = "cpu"
    env: dict[str, str] | None = field(default=None, compare=False, hash=False)

    @property
    def key(self) -> tuple[str, str | None]:
        """One warm worker per key: the model and the adapter."""
        return self.model, str(self.adapter) if self.adapter is not None else None

    def argv(self) -> list[str]:
        argv = [self.python, "-m", "services.generation", "--serve"]
        argv += ["--model", self.model, "--cache-dir", str(self.cache_dir)]
        argv += ["--device", self.device]
        if self.adapter is not None:
            argv += ["--adapter", str(self.adapter)]
        return argv

    def describe(self) -> str:
        return self.model if self.adapter is None else f"{self.model} + {self.adapter}"


class GenerationWorker:
    """One serving process. The constructor starts it; :meth:`wait_ready` waits until the
    model is loaded. :meth:`generate` is thread-safe (one request at a time); a request
    that fails or times out raises :class:`AskError`, and a worker that timed out or whose
    process ended is no longer :attr:`alive`."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self._lock = threading.Lock()  # one request at a time
        self._lines: queue.Queue[Any] = queue.Queue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._next_id = 0
        self._broken = False
        self._closed = False
        self.ready_info: dict[str, Any] | None = None
        self.last_used = time.monotonic()
        try:
            self._proc = subprocess.Popen(
                spec.argv(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                errors="replace",
                bufsize=1,
                start_new_session=True,  # its own process group
                env=spec.env,
            )
        except OSError as exc:
            raise AskError(f"cannot start a generation worker: {exc}") from exc
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._readers = [
            threading.Thread(
                target=self._read_stdout, args=(self._proc.stdout,), daemon=True, name="gen-out"
            ),
            threading.Thread(
                target=self._read_stderr, args=(self._proc.stderr,), daemon=True, name="gen-err"
            ),
        ]
        for t in self._readers:
            t.start()

    # -- state ------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def alive(self) -> bool:
        return not self._broken and not self._closed and self._proc.poll() is None

    def last_stderr(self) -> str | None:
        """The worker's last non-empty line on stderr (its error, when it failed)."""
        return next((line for line in reversed(self._stderr) if line.strip()), None)

    def _read_stdout(self, stream: IO[str]) -> None:
        with contextlib.suppress(ValueError, OSError):
            for line in stream:
                self._lines.put(line)
        self._lines.put(_EOF)

    def _read_stderr(self, stream: IO[str]) -> None:
        with contextlib.suppress(ValueError, OSError):
            for line in stream:
                self._stderr.append(line.rstrip("\n"))

    def _next_line(self, deadline: float) -> dict[str, Any] | None:
        """The next JSON object the worker prints; None at its end; TimeoutError."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                raise TimeoutError from None
            if line is _EOF:
                self._lines.put(_EOF)  # every later reader sees the end too
                return None
            try:
                obj = json.loads(line)
            except ValueError:
                self._stderr.append(line.rstrip("\n"))  # stray output, kept as a clue
                continue
            if isinstance(obj, dict):
                return obj

    def _gone(self, what: str) -> AskError:
        """The error of a worker that ended: its exit status and last stderr line."""
        self._broken = True
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(1.0)
        for t in self._readers:
            t.join(1.0)
        code = self._proc.poll()
        status = f"exit {code}" if code is not None else "no answer"
        return AskError(f"{what} ({status}): {self.last_stderr() or 'no output'}")

    # -- use ------------------------------------------------------------------------------
    def wait_ready(self, timeout: float) -> dict[str, Any]:
        """Wait until the model is loaded: the ready line. AskError (the worker is then
        ended) when it fails to load, ends or is not ready within ``timeout``."""
        try:
            info = self._next_line(time.monotonic() + timeout)
        except TimeoutError:
            self.close()
            raise AskError(
                f"the model {self.spec.describe()} was not loaded within {timeout:.0f}s"
            ) from None
        if info is None:
            err = self._gone(f"the model {self.spec.describe()} could not be loaded")
            self.close()
            raise err
        if not info.get("ready"):
            self.close()
            raise AskError(
                f"the model {self.spec.describe()} could not be loaded: "
                f"{info.get('error') or self.last_stderr() or 'no reason given'}"
            )
        self.ready_info = info
        self.last_used = time.monotonic()
        return info

    def generate(
        self,
        prompt: str,
        *,
        max_new_tokens: int = 96,
        stop: Sequence[str] = (),
        no_repeat_ngram: int | None = None,
        temperature: float | None = None,
        timeout: float = 600.0,
    ) -> tuple[str, bool]:
        """(the answer to ``prompt``, whether it ended at eos or a stop string).
        AskError when the worker fails, ends or does not answer within ``timeout`` (then
        it is ended)."""
        with self._lock:
            if not self.alive:
                raise AskError(
                    f"the generation worker of {self.spec.describe()} has ended: "
                    f"{self.last_stderr() or 'no output'}"
                )
            self._next_id += 1
            rid = self._next_id
            request: dict[str, Any] = {
                "id": rid,
                "prompt": prompt,
                "max_new_tokens": max_new_tokens,
                "stop": list(stop),
            }
            if no_repeat_ngram is not None:
                request["no_repeat_ngram"] = no_repeat_ngram
            if temperature is not None:
                request["temperature"] = temperature
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write(json.dumps(request, ensure_ascii=False) + "\n")
                self._proc.stdin.flush()
            except (OSError, ValueError):
                raise self._gone("the generation worker ended") from None
            deadline = time.monotonic() + timeout
            try:
                while True:
                    reply = self._next_line(deadline)
                    if reply is None:
                        raise self._gone("the generation worker ended")
                    if reply.get("id") == rid:
                        break
            except TimeoutError:
                self._broken = True
                self.close()
                raise AskError(f"the model did not answer within {timeout:.0f}s") from None
            finally:
                self.last_used = time.monotonic()
            if "error" in reply:
                raise AskError(f"generation failed: {reply['error']}")
            return str(reply.get("text", "")), bool(reply.get("stopped"))

    def close(self, grace: float = STOP_GRACE_S) -> None:
        """End the worker's process group: SIGTERM, SIGKILL after ``grace`` seconds."""
        self._closed = True
        proc = self._proc
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError, ValueError):
                    stream.close()
        for t in self._readers:
            if t is not threading.current_thread():
                t.join(1.0)


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

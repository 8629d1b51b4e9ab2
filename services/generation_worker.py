"""Warm answers: a model kept loaded in a generation worker process between questions.

A :class:`GenerationWorker` is one ``python -m services.generation --serve`` process (in
its own process group) holding one model (and adapter) in memory; it answers one request
at a time over its stdin and stdout (JSON lines, see :mod:`services.generation`).
:class:`services.generation_pool.WorkerPool` keeps them warm between questions.

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple

from services.errors import PersonadError

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

"""One training child process, from spawn to reaping, and how it ended.

The child runs in its own process group (so grandchildren go with it), under a time
limit (:class:`TimeLimit`: SIGTERM when it is up or a stop is asked for, SIGKILL when
SIGTERM is ignored past the grace) and an optional address-space limit
(:class:`MemoryLimit`), and reports JSON-lines progress on a pipe. A crash, an
out-of-memory, a hang or garbage on the pipe ends that child, never the daemon; nothing
of it outlives it.
"""

from __future__ import annotations

import contextlib
import os
import resource
import select
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from services.training.command import ExitCode
from services.training.progress import (
    CheckpointEvent,
    DoneEvent,
    DownloadEvent,
    ErrorEvent,
    EvalEvent,
    Event,
    ProgressParser,
    StartEvent,
    StepEvent,
)

log = structlog.get_logger(__name__)

POLL_S = 0.2  # the longest wait for progress before the limits are checked again
STDERR_FILE = "child.stderr"


@dataclass(frozen=True)
class TimeLimit:
    """How long a job may run (``training.job_timeout_s``, counted from when it was
    claimed) and how long a child may ignore SIGTERM (``training.stop_grace_s``)."""

    timeout_s: float
    grace_s: float

    def expired(self, elapsed: float) -> bool:
        return elapsed > self.timeout_s

    def action(
        self, *, elapsed: float, stop_requested: bool, signalled_for: float | None
    ) -> signal.Signals | None:
        """What to send the child now, ``elapsed`` seconds into the job, SIGTERM sent
        ``signalled_for`` seconds ago (None: not yet): SIGTERM when a stop is asked for
        or the time is up, SIGKILL when SIGTERM went unheeded past the grace, else None."""
        if signalled_for is None:
            if stop_requested or self.expired(elapsed):
                return signal.SIGTERM
            return None
        if signalled_for > self.grace_s:
            return signal.SIGKILL
        return None


@dataclass(frozen=True)
class MemoryLimit:
    """The child's address-space limit (``training.memory_limit_mb``; None: none)."""

    mb: int | None = None

    def rlimit(self) -> tuple[int, int] | None:
        """(soft, hard) RLIMIT_AS in bytes, None for no limit."""
        if not self.mb:
            return None
        size = self.mb * 1024 * 1024
        return size, size

    def apply(self) -> None:
        """In the child, before exec."""
        limits = self.rlimit()
        if limits is not None:
            resource.setrlimit(resource.RLIMIT_AS, limits)

    def preexec(self) -> Callable[[], None] | None:
        return self.apply if self.mb else None


@dataclass(frozen=True)
class ChildEnd:
    """How the child ended: its exit status, its last ``done`` and ``error`` events (the
    error else the last line of its stderr), and the timeout when it ran out of time."""

    returncode: int
    done: DoneEvent | None
    last_error: str | None
    timed_out: float | None


@dataclass(frozen=True)
class Outcome:
    state: str
    reason: str
    error: str | None = None
    result: dict[str, Any] | None = None
    exit_code: int | None = None


class TrainingChild:
    """Spawn with :meth:`spawn`, then :meth:`supervise` until it is gone.

    ``command(progress_fd)`` gives the argv; the child writes its progress to that fd.
    Its stdout and stderr go to ``<run_dir>/child.stderr``. ``started`` (monotonic) is
    when the job's time began.
    """

    def __init__(
        self,
        run_dir: Path,
        command: Callable[[int], list[str]],
        *,
        time_limit: TimeLimit,
        memory_limit: MemoryLimit | None = None,
        started: float | None = None,
        heartbeat_s: float = 1.0,
    ) -> None:
        self.run_dir = run_dir
        self.command = command
        self.time_limit = time_limit
        self.memory_limit = memory_limit or MemoryLimit()
        self.started = time.monotonic() if started is None else started
        self.heartbeat_s = heartbeat_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._read_fd = -1
        self._signalled_at: float | None = None
        self._timed_out = False

    def spawn(self) -> int:
        """Start the child; returns its pid (also its process group's id)."""
        read_fd, write_fd = os.pipe()
        try:
            argv = self.command(write_fd)
            with open(self.run_dir / STDERR_FILE, "wb") as stderr:
                self._proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=stderr,
                    stderr=stderr,
                    pass_fds=(write_fd,),
                    start_new_session=True,  # its own process group
                    preexec_fn=self.memory_limit.preexec(),
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self._read_fd = read_fd
        return self._proc.pid

    def supervise(
        self,
        progress: dict[str, Any],
        *,
        stop_requested: Callable[[], bool],
        heartbeat: Callable[[], object] = lambda: None,
    ) -> ChildEnd:
        """Pump progress events into ``progress`` until the child is gone (and its pipe
        closed), stopping it when ``stop_requested()`` or the time limit says so;
        ``heartbeat()`` runs every ``heartbeat_s`` meanwhile."""
        proc = self._proc
        assert proc is not None, "spawn() first"
        parser = ProgressParser()
        seen: dict[str, Any] = {"done": None, "error": None}
        last_beat = 0.0
        pipe_open = True
        try:
            while True:
                if pipe_open:
                    pipe_open = self._pump(parser, progress, seen)
                else:
                    time.sleep(0.1)
                if proc.poll() is not None:
                    if not pipe_open:
                        break
                    # A grandchild may hold the pipe open: the group goes.
                    self._signal(signal.SIGKILL)
                now = time.monotonic()
                self._enforce(now, stop_requested())
                if now - last_beat > self.heartbeat_s:
                    heartbeat()
                    last_beat = now
        finally:
            self._reap()
        if parser.garbage or parser.oversized:
            log.warning(
                "progress lines ignored", garbage=parser.garbage, oversized=parser.oversized
            )
        last_error = seen["error"]
        if last_error is None and proc.returncode not in (0, None):
            last_error = _last_line(self.run_dir / STDERR_FILE)
        return ChildEnd(
            proc.returncode,
            seen["done"],
            last_error,
            self.time_limit.timeout_s if self._timed_out else None,
        )

    def _pump(self, parser: ProgressParser, progress: dict[str, Any], seen: dict[str, Any]) -> bool:
        """Read what the pipe holds (waiting up to POLL_S); False once it is closed."""
        ready, _, _ = select.select([self._read_fd], [], [], POLL_S)
        if not ready:
            return True
        chunk = os.read(self._read_fd, 65536)
        events = parser.feed(chunk) if chunk else parser.close()
        for ev in events:
            if isinstance(ev, DoneEvent):
                seen["done"] = ev
            elif isinstance(ev, ErrorEvent) and seen["error"] is None:
                # The first error is the cause: under torchrun the other ranks fail after
                # the one that crashed (stopped by torchrun, or a collective broken).
                seen["error"] = ev.message
            apply_event(progress, ev)
        return bool(chunk)

    def _enforce(self, now: float, stop_requested: bool) -> None:
        elapsed = now - self.started
        signalled_for = None if self._signalled_at is None else now - self._signalled_at
        if signalled_for is None and self.time_limit.expired(elapsed):
            self._timed_out = True
        action = self.time_limit.action(
            elapsed=elapsed, stop_requested=stop_requested, signalled_for=signalled_for
        )
        if action == signal.SIGTERM:
            log.info("stopping training process", requested=stop_requested, timeout=self._timed_out)
            self._signalled_at = now
        if action is not None:
            self._signal(action)

    def _reap(self) -> None:
        assert self._proc is not None
        os.close(self._read_fd)
        if self._proc.poll() is None:
            self._signal(signal.SIGKILL)
        self._proc.wait()
        # Nothing of the job may outlive it: its group, and the torchrun ranks, which
        # run in sessions of their own.
        self._signal(signal.SIGKILL)
        end_run_processes(str(self.run_dir))

    def _signal(self, sig: int) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)


def apply_event(progress: dict[str, Any], ev: Event) -> None:
    """A progress event into the job's live progress (what ``jobs`` and ``status`` show)."""
    p = progress
    if isinstance(ev, StartEvent):
        p.update(phase="training", step=0, total_steps=ev.total_steps)
    elif isinstance(ev, StepEvent):
        p.update(
            phase="training",
            step=ev.step,
            loss=ev.loss,
            lr=ev.lr,
            tokens_per_s=ev.tokens_per_s,
            eta_s=ev.eta_s,
        )
    elif isinstance(ev, EvalEvent):
        p.update(eval_loss=ev.eval_loss, eval_step=ev.step)
        if ev.step == 0:
            p["base_eval_loss"] = ev.eval_loss
    elif isinstance(ev, CheckpointEvent):
        p.update(checkpoint=ev.path)
    elif isinstance(ev, DoneEvent):
        p.update(phase="done", artifact=ev.artifact)
    elif isinstance(ev, ErrorEvent):
        p.update(phase="error", error=ev.message)
    elif isinstance(ev, DownloadEvent):
        p.update(
            phase="downloading",
            download={"repo": ev.repo, "done_bytes": ev.done_bytes, "total_bytes": ev.total_bytes},
        )


DISK_FULL_MARKS = ("No space left on device", "Disk quota exceeded", "database or disk is full")


def classify_exit(
    returncode: int,
    *,
    done: DoneEvent | None,
    last_error: str | None,
    cancelled: bool,
    timed_out: float | None,
    stopping: bool,
) -> Outcome:
    """How a training child ended, as a job state and a reason a person can act on."""
    detail = f": {last_error}" if last_error else ""
    if returncode == ExitCode.OK and done is not None:
        result = {"metrics": done.metrics, "artifact": done.artifact}
        return Outcome("succeeded", "trained", result=result, exit_code=0)
    if timed_out is not None:
        return Outcome(
            "failed",
            f"timed out after {timed_out:.0f}s (training.job_timeout_s)",
            "timeout",
            exit_code=returncode,
        )
    if cancelled:
        return Outcome("cancelled", "cancelled", exit_code=returncode)
    if stopping:
        return Outcome(
            "interrupted",
            "the daemon stopped while the job ran",
            "interrupted",
            exit_code=returncode,
        )
    return _failure(returncode, last_error, detail)


def _failure(returncode: int, last_error: str | None, detail: str) -> Outcome:
    if returncode == ExitCode.OK:
        return Outcome(
            "failed",
            "the training process ended without reporting a result",
            "no result",
            exit_code=0,
        )
    if returncode == ExitCode.BAD_INPUT:
        return Outcome("failed", f"bad input{detail}", last_error, exit_code=returncode)
    if returncode == ExitCode.OOM:
        return Outcome(
            "failed",
            f"out of memory{detail}; lower batch_size or max_seq_length, or use LoRA",
            last_error or "out of memory",
            exit_code=returncode,
        )
    if returncode == ExitCode.CANCELLED:
        return Outcome("cancelled", "the training process was stopped", exit_code=returncode)
    if last_error and any(mark in last_error for mark in DISK_FULL_MARKS):
        return Outcome(
            "failed",
            f"disk full{detail}; free space under the state directory (the run's partial "
            "checkpoints and weights were removed)",
            "disk full",
            exit_code=returncode,
        )
    if returncode < 0:
        name = signal.Signals(-returncode).name
        hint = " (the kernel's out-of-memory killer?)" if returncode == -signal.SIGKILL else ""
        return Outcome(
            "failed", f"killed by {name}{hint}", f"killed by {name}", exit_code=returncode
        )
    return Outcome(
        "failed",
        f"the training process failed (exit {returncode}){detail}",
        last_error or f"exit {returncode}",
        exit_code=returncode,
    )


def kill_orphan(pid: int | None, run_dir: str | None) -> bool:
    """A training process group left behind by a daemon that was killed: end it, if that
    pid still runs that job (its command line names the job's run dir)."""
    if not pid or not run_dir:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if run_dir.encode() not in cmdline:
        return False
    killed = False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
        killed = True
    return end_run_processes(run_dir) > 0 or killed


def end_run_processes(run_dir: str) -> int:
    """SIGKILL every process of this user whose command line trains ``run_dir``
    (``--run-dir run_dir``): what a process group does not hold, such as the ranks
    torchrun starts in sessions of their own. Returns how many were signalled."""
    wanted = [b"--run-dir", run_dir.encode()]
    me, uid, count = os.getpid(), os.getuid(), 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(argv[i : i + 2] == wanted for i in range(len(argv) - 1)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
                count += 1
    return count


def _last_line(path: Path) -> str | None:
    try:
        data = path.read_bytes()[-4096:]
    except OSError:
        return None
    lines = [ln.strip() for ln in data.decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:500] if lines else None

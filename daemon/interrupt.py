"""Ctrl-C (SIGINT) and SIGTERM for the CLI's commands: one line, no traceback, nothing left.

:func:`interruptible` turns the first of either signal into :class:`Interrupted` in the
main thread (and ignores further ones, so the clean-up it triggers runs to its end);
the command says what it stopped in one line and exits with 128 + the signal's number.
:func:`stop_tree` ends a process and everything it started (its descendants, in any
process group), first with SIGTERM and, past a short grace, with SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from types import FrameType

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived. A BaseException, as KeyboardInterrupt is: control flow
    that passes ``except Exception`` on its way to the command's top level."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        self.during = ""  # what the command was doing, e.g. "while training"
        self.stopped: list[str] = []  # what the clean-up on the way out stopped
        super().__init__(self.name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise(signum: int, frame: FrameType | None) -> None:
    for sig in _SIGNALS:
        signal.signal(sig, signal.SIG_IGN)  # one interruption; its clean-up must finish
    raise Interrupted(signum)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` while the block runs."""
    before = {sig: signal.signal(sig, _raise) for sig in _SIGNALS}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _ppid_and_start(pid: int) -> tuple[int, int] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[19])  # ppid, start time (clock ticks after boot)


def descendants(pid: int) -> dict[int, int]:
    """{pid: start time} of every living descendant of ``pid`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (info := _ppid_and_start(int(entry))) is not None:
            children.setdefault(info[0], []).append(int(entry))
            starts[int(entry)] = info[1]
    found: dict[int, int] = {}
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found[child] = starts[child]
                todo.append(child)
    return found


def _alive(pid: int, start: int) -> bool:
    """The process still runs and is the same one (not a reused pid); zombies count as gone."""
    info = _ppid_and_start(pid)
    if info is None or info[1] != start:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def _signal_all(pids: dict[int, int], sig: int) -> None:
    for pid, start in pids.items():
        if _alive(pid, start):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)


def stop_tree(proc: subprocess.Popen[bytes], grace_s: float) -> int:
    """End ``proc`` and its descendants: SIGTERM to each, then, past ``grace_s``,
    SIGKILL to whatever of the tree still runs.
    Returns how many processes were running (``proc`` included)."""
    if proc.poll() is not None:
        return 0
    tree = descendants(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    _signal_all(tree, signal.SIGTERM)  # its children wind down at the same time
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        tree.update(descendants(proc.pid))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    if proc.poll() is None:
        tree.update(descendants(proc.pid))
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    _signal_all(tree, signal.SIGKILL)  # children the parent did not (or could not) stop
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(0.5)
    return 1 + len(tree)

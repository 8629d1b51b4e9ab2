"""Ctrl-C (SIGINT) and SIGTERM to the CLI's long commands: how fast each ends, what it
says, and which of the processes it started (or joined) are left.

:func:`interrupt_cli` starts a command, waits until it is at the moment to interrupt
(``ready`` on what it has written to stderr so far, or its connection to the daemon),
records its process tree, sends the signal and measures: seconds until it exited, its
exit status, its stderr lines, and every process of the recorded tree still running a
few seconds later (a zombie counts as ended).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from daemon.interrupt import descendants, stop_tree
from tests.daemon_process import REPO


@dataclass
class Interruption:
    command: str
    signal: str
    seconds: float  # from the signal to the command's exit
    returncode: int | None
    stderr: list[str]
    tree: dict[int, str] = field(default_factory=dict)  # pid -> command line, at the signal
    left: list[str] = field(default_factory=list)  # of the tree, still running afterwards

    @property
    def lines(self) -> list[str]:
        """stderr lines written after the signal (what the command said on its way out)."""
        return [line for line in self.stderr[self._mark :] if line.strip()]

    _mark: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "signal": self.signal,
            "seconds": round(self.seconds, 2),
            "returncode": self.returncode,
            "said": self.lines,
            "processes_at_signal": len(self.tree),
            "left": len(self.left),
        }


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _running(pid: int, start: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return False
    return int(fields[19]) == start and fields[0] != b"Z"


def has_socket(pid: int) -> bool:
    """The process holds a socket (the CLI's connection to the daemon)."""
    try:
        return any(
            os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
            for fd in os.listdir(f"/proc/{pid}/fd")
        )
    except OSError:
        return False


def _read(stream: IO[bytes], into: list[str]) -> None:
    for raw in stream:
        into.append(raw.decode(errors="replace").rstrip("\n"))


def interrupt_cli(
    args: list[str],
    env: dict[str, str],
    ready: Callable[[subprocess.Popen[bytes], str], bool],
    sig: int = signal.SIGINT,
    *,
    timeout: float = 600.0,
    settle_s: float = 3.0,
) -> Interruption:
    """Run ``python -m daemon.cli *args``; once ``ready(proc, stderr so far)``, send ``sig``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    lines: list[str] = []  # stderr
    out: list[str] = []  # stdout (progress lines)
    assert proc.stdout is not None and proc.stderr is not None
    readers = [
        threading.Thread(target=_read, args=(stream, into), daemon=True)
        for stream, into in ((proc.stderr, lines), (proc.stdout, out))
    ]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + timeout
    try:
        while not ready(proc, "\n".join(out + lines)):
            if proc.poll() is not None:
                raise AssertionError(
                    f"{args} ended ({proc.returncode}) before the moment:\n"
                    + "\n".join(out[-20:] + lines[-40:])
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"{args}: the moment never came:\n" + "\n".join(lines[-40:]))
            time.sleep(0.05)
        tree = descendants(proc.pid)
        names = {pid: _cmdline(pid) for pid in tree}
        mark = len(lines)
        signalled = time.monotonic()
        proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
        seconds = time.monotonic() - signalled
        for reader in readers:
            reader.join(5)
        time.sleep(settle_s)  # what it left must still run after a while, not be on its way out
        left = [f"{pid} {_cmdline(pid)}" for pid, start in tree.items() if _running(pid, start)]
        if proc.poll() is None:
            left.append(f"{proc.pid} the command itself")
        result = Interruption(
            command=" ".join(args[:1] + [a for a in args[1:] if a.startswith("--w")]),
            signal=signal.Signals(sig).name,
            seconds=seconds,
            returncode=proc.returncode,
            stderr=lines,
            tree=names,
            left=left,
        )
        result._mark = mark
        return result
    finally:
        # A harness that failed half-way (a timeout, say) leaves nothing of the command:
        # the demo's daemon runs in its own session and would outlive a plain kill.
        stop_tree(proc, grace_s=1.0)


def demo_args(root: Path, tiny_model: Path, train_config: str) -> list[str]:
    return [
        "demo",
        "--dir",
        str(root),
        "--base-model",
        str(tiny_model),
        "--family",
        "smollm",
        "--train-config",
        train_config,
    ]

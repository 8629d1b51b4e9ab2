"""Which rank of a multi-process run this training child is (no torch imported).

Under ``torchrun`` (``training.launcher = "torchrun"``) every rank is the same training
child, told its place by the environment torchrun sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``). Rank 0 alone writes progress, ``train.log``, checkpoints and artifacts and
runs the gate; every rank reports its own failure on the progress pipe, so the job fails
with the error of the rank that crashed. torchrun starts each rank in a session of its
own and does not pass it the progress pipe: a rank opens the pipe through its parent's
``/proc/<pid>/fd/<n>`` and asks the kernel to kill it when its parent dies, so that
killing torchrun (the supervisor's child) ends every rank.
"""

from __future__ import annotations

import ctypes
import os
import signal
from dataclasses import dataclass

PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Ranks:
    rank: int
    world: int
    local_rank: int

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Ranks | None:
        """This process's place under torchrun; None for a single-process run."""
        if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
            return None
        return cls(
            rank=int(os.environ["RANK"]),
            world=int(os.environ["WORLD_SIZE"]),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        )


def die_with_parent() -> None:
    """SIGKILL this process when its parent (the torchrun agent) ends, however it ends."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the parent was gone before the request took
        os.kill(os.getpid(), signal.SIGKILL)


def progress_fd(fd: int | None) -> int | None:
    """The progress pipe of a rank: the inherited ``fd`` when it is open here, else the
    parent's (torchrun's) same descriptor, opened through /proc."""
    if fd is None:
        return None
    try:
        os.fstat(fd)
        return fd
    except OSError:
        pass
    try:
        return os.open(f"/proc/{os.getppid()}/fd/{fd}", os.O_WRONLY)
    except OSError:
        return None

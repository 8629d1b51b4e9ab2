"""Reading a memory file from disk, read-only, into a ParseResult and its sha256."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

from .detect import parse_bytes
from .model import ParseResult, Problem

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
_BLOCK = 1024 * 1024


def _size(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB ({n:,} bytes)"


def _failed(reason: str) -> tuple[ParseResult, str | None]:
    return ParseResult(problems=[Problem(reason)]), None


def _os_error(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "the file disappeared before it could be read (deleted or renamed away)"
    if isinstance(exc, PermissionError):
        return (
            f"permission denied: the daemon (uid {os.geteuid()}) cannot read the file; make "
            "it readable by that user (e.g. chmod o+r, or share a group)"
        )
    if exc.errno == errno.ELOOP:
        return "a symbolic link loop (too many levels of symbolic links); fix or remove the link"
    if isinstance(exc, IsADirectoryError):
        return "this is a directory, not a memory file"
    if exc.errno == errno.ENXIO:
        return "not a regular file (a socket or a device); only regular files are read"
    return f"cannot read the file: {exc.strerror or exc}"


def _opened_path(fd: int, path: Path) -> str:
    """The real path of the file open on ``fd`` (every link resolved, race-free on Linux)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(path)


def _foreign(fd: int, info: os.stat_result, path: Path, within: Path) -> str | None:
    """Why the open file is not the profile's, or None when it is: a symbolic link that
    leads outside ``within``, or a hard link to a file another user owns."""
    root = os.path.realpath(within)
    real = _opened_path(fd, path)
    if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
        return (
            f"a link that leads outside this profile's memory folder (to {real}); only files "
            f"inside {root} are read: copy the file in instead of linking to it"
        )
    if info.st_nlink > 1 and info.st_uid != os.geteuid():
        return (
            f"a hard link to a file owned by uid {info.st_uid}, another user; only the "
            "profile owner's own files are read: copy the file in instead of linking to it"
        )
    return None


def read_memory_file(
    path: Path, max_bytes: int = DEFAULT_MAX_BYTES, *, within: Path | None = None
) -> tuple[ParseResult, str | None]:
    """Parse the file at ``path``; return the result and the file's sha256 hex (None when
    it could not be read). Never raises and never changes the file.

    A file over ``max_bytes`` is rejected by its size; it is still hashed (streamed, never
    held in memory) so that a reject can be recognised when the file changes. With
    ``within`` (the profile's memory folder), a file reached through a link that leaves
    that folder, or a hard link to another user's file, is rejected unread.
    """
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        return _failed(_os_error(exc))
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            return _failed("this is a directory, not a memory file")
        if not stat.S_ISREG(info.st_mode):
            return _failed(
                "not a regular file (a FIFO, socket or device); only regular files are read"
            )
        if within is not None and (reason := _foreign(fd, info, path, within)):
            return _failed(reason)
        digest = hashlib.sha256()
        chunks: list[bytes] = []
        total = 0
        too_big = info.st_size > max_bytes
        while block := os.read(fd, _BLOCK):
            digest.update(block)
            total += len(block)
            if not too_big:
                if total > max_bytes:
                    too_big = True
                    chunks.clear()
                else:
                    chunks.append(block)
    except OSError as exc:
        return _failed(_os_error(exc))
    finally:
        os.close(fd)
    sha = digest.hexdigest()
    if too_big:
        return (
            ParseResult(
                problems=[
                    Problem(
                        f"the file is too large: {_size(total)}, over the limit of "
                        f"{_size(max_bytes)}; split it into smaller files"
                    )
                ]
            ),
            sha,
        )
    return parse_bytes(path.name, b"".join(chunks)), sha

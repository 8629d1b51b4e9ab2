"""Durable files: every file personad writes for later is written whole or not at all.

A write goes to a unique temporary file beside the target, is flushed and fsynced, then
renamed over the target (``os.replace``, atomic on POSIX): a reader, or a crash at any
moment, sees the old content or the new, never a mix. The temporary file is removed when
the write fails. Renames become durable when the directory is fsynced (:func:`fsync_dir`),
which callers do once after a group of writes; :func:`fsync_tree` does a whole tree (a model
directory before it is published).

JSON is written UTF-8, indented by 2, with a final newline; NaN and infinity, which JSON
lacks, are written as ``null`` (:func:`finite`).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

FILE_MODE = 0o644


def finite(value: Any) -> Any:
    """JSON has no NaN or infinity: they become None (a loss of null means it diverged)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def write_bytes(path: Path, data: bytes, *, mode: int = FILE_MODE) -> Path:
    """Replace ``path`` with ``data`` atomically (see the module docstring); returns ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def json_text(
    data: Any, *, sort_keys: bool = False, default: Callable[[Any], Any] | None = None
) -> str:
    """The JSON document personad writes for ``data`` (raises TypeError or ValueError when
    ``data`` has something JSON cannot hold)."""
    body = json.dumps(
        finite(data),
        indent=2,
        ensure_ascii=False,
        allow_nan=False,
        sort_keys=sort_keys,
        default=default,
    )
    return body + "\n"


def write_json(
    path: Path,
    data: Any,
    *,
    sort_keys: bool = False,
    default: Callable[[Any], Any] | None = None,
) -> Path:
    """Write ``data`` as an indented JSON document, atomically."""
    return write_text(path, json_text(data, sort_keys=sort_keys, default=default))


def jsonl_text(rows: Iterable[Any], *, default: Callable[[Any], Any] | None = None) -> str:
    """One compact JSON object per line, each line ending in a newline."""
    return "".join(
        json.dumps(finite(row), ensure_ascii=False, allow_nan=False, default=default) + "\n"
        for row in rows
    )


def write_jsonl(
    path: Path, rows: Iterable[Any], *, default: Callable[[Any], Any] | None = None
) -> Path:
    """Write ``rows`` as JSON lines, atomically."""
    return write_text(path, jsonl_text(rows, default=default))


def fsync_dir(path: Path) -> None:
    """Make the renames and creations inside directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file, then every directory (deepest first), of ``root``."""
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))

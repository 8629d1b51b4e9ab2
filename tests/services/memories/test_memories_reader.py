"""read_memory_file: read-only, bounded, and never raising."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from services.memories import read_memory_file
from services.memories import reader as reader_module

GOOD = b'{"prompt": "p", "response": "r"}\n'


def test_reads_parses_and_hashes(tmp_path: Path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(GOOD * 3)
    result, sha = read_memory_file(path)
    assert len(result.memories) == 3 and result.problems == []
    assert sha == hashlib.sha256(GOOD * 3).hexdigest()


def test_reading_changes_nothing(tmp_path: Path):
    path = tmp_path / "m.json"
    path.write_bytes(GOOD)
    path.chmod(0o444)
    before = os.stat(path)
    listing = sorted(os.listdir(tmp_path))
    read_memory_file(path)
    after = os.stat(path)
    assert (after.st_mode, after.st_size, after.st_mtime_ns, after.st_ctime_ns) == (
        before.st_mode,
        before.st_size,
        before.st_mtime_ns,
        before.st_ctime_ns,
    )
    assert sorted(os.listdir(tmp_path)) == listing
    assert path.read_bytes() == GOOD


def test_follows_a_symlink_to_a_file(tmp_path: Path):
    (tmp_path / "real.json").write_bytes(GOOD)
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    result, sha = read_memory_file(tmp_path / "link.json")
    assert len(result.memories) == 1 and sha == hashlib.sha256(GOOD).hexdigest()


def test_sparse_200_mb_file_is_rejected_quickly_by_size(tmp_path: Path):
    path = tmp_path / "huge.jsonl"
    subprocess.run(["truncate", "-s", "200M", str(path)], check=True)
    started = time.monotonic()
    result, sha = read_memory_file(path)
    elapsed = time.monotonic() - started
    assert result.memories == []
    (problem,) = result.problems
    assert problem.locator == ""
    assert "too large" in problem.reason
    assert "200.0 MiB (209,715,200 bytes)" in problem.reason
    assert "limit of 50.0 MiB (52,428,800 bytes)" in problem.reason
    # Hashed as a stream, so a reject is recognised when the file changes.
    digest = hashlib.sha256()
    block = bytes(1024 * 1024)
    for _ in range(200):
        digest.update(block)
    assert sha == digest.hexdigest()
    assert elapsed < 10


def test_max_bytes_is_configurable(tmp_path: Path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(GOOD * 10)
    result, sha = read_memory_file(path, max_bytes=len(GOOD) * 10 - 1)
    assert "too large" in result.problems[0].reason and sha is not None
    result, _ = read_memory_file(path, max_bytes=len(GOOD) * 10)
    assert len(result.memories) == 10


def test_symlink_loop(tmp_path: Path):
    (tmp_path / "a.json").symlink_to(tmp_path / "b.json")
    (tmp_path / "b.json").symlink_to(tmp_path / "a.json")
    result, sha = read_memory_file(tmp_path / "a.json")
    assert sha is None
    (problem,) = result.problems
    assert problem.locator == "" and "symbolic link loop" in problem.reason


def test_vanished_file(tmp_path: Path):
    result, sha = read_memory_file(tmp_path / "gone.json")
    assert sha is None
    assert "disappeared" in result.problems[0].reason


def test_directory(tmp_path: Path):
    (tmp_path / "dir.json").mkdir()
    result, sha = read_memory_file(tmp_path / "dir.json")
    assert sha is None and "directory" in result.problems[0].reason


def test_fifo_does_not_block(tmp_path: Path):
    os.mkfifo(tmp_path / "pipe.jsonl")
    result, sha = read_memory_file(tmp_path / "pipe.jsonl")
    assert sha is None and "not a regular file" in result.problems[0].reason


def _read_as_unprivileged(path: Path) -> tuple[str, str | None]:
    """read_memory_file in a forked child; as root the child first becomes nobody."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(read_end)
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            result, sha = read_memory_file(path)
            os.write(write_end, f"{sha}\n{result.problems[0].reason}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        data = f.read().decode()
    os.waitpid(pid, 0)
    sha_text, reason = data.split("\n", 1)
    return reason, None if sha_text == "None" else sha_text


def test_permission_denied_for_real(tmp_path: Path):
    path = tmp_path / "secret.json"
    path.write_bytes(GOOD)
    path.chmod(0)
    reason, sha = _read_as_unprivileged(path)
    assert sha is None and "permission denied" in reason


@pytest.mark.parametrize(
    ("error", "fragment"),
    [
        (PermissionError(errno.EACCES, "Permission denied"), "permission denied"),
        (FileNotFoundError(errno.ENOENT, "No such file"), "disappeared"),
        (OSError(errno.ELOOP, "Too many levels of symbolic links"), "symbolic link loop"),
        (OSError(errno.EIO, "Input/output error"), "cannot read the file: Input/output error"),
    ],
)
def test_open_errors_become_problems(tmp_path, monkeypatch, error, fragment):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(reader_module.os, "open", fail)
    result, sha = read_memory_file(tmp_path / "x.json")
    assert sha is None
    assert result.memories == []
    (problem,) = result.problems
    assert problem.locator == "" and fragment in problem.reason


def test_read_error_midway_becomes_a_problem(tmp_path, monkeypatch):
    path = tmp_path / "m.json"
    path.write_bytes(GOOD)

    def fail(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(reader_module.os, "read", fail)
    result, sha = read_memory_file(path)
    assert sha is None and "Input/output error" in result.problems[0].reason


def test_unsupported_file_is_still_hashed(tmp_path: Path):
    path = tmp_path / "photo.png"
    path.write_bytes(b"\x89PNG")
    result, sha = read_memory_file(path)
    assert "unsupported file type '.png'" in result.problems[0].reason
    assert sha == hashlib.sha256(b"\x89PNG").hexdigest()


def test_metahuman_tree_layout(tmp_path: Path):
    day = tmp_path / "memory" / "episodic" / "2025" / "11" / "06"
    day.mkdir(parents=True)
    event = {"id": "evt-20251106120000", "timestamp": "2025-11-06T12:00:00Z", "content": "x"}
    path = day / "evt-20251106120000-x.json"
    path.write_text(json.dumps(event, indent=2))
    result, _ = read_memory_file(path)
    assert [m.prompt for m in result.memories] == ["x"]

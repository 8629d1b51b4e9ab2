"""A full disk under the state directory: a small tmpfs mounted there (root only).

:func:`ingest_disk_full` fills the state directory's filesystem while files arrive: the
daemon must stop taking files with a clear status and log line, write no half of a
file, and take every file (each memory once) by itself once space returns.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.daemon_process import DaemonProcess
from tests.reliability.fuzz import fuzz_daemon


def small_fs_unavailable() -> str | None:
    """Why a small tmpfs cannot be mounted here, or None."""
    if os.geteuid() != 0:
        return "mounting a small tmpfs needs root"
    probe = Path(f"/tmp/pd-fs-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            return f"cannot mount a tmpfs: {done.stderr.strip()}"
        subprocess.run(["umount", str(probe)], check=True)
        return None
    finally:
        probe.rmdir()


@contextlib.contextmanager
def small_fs(path: Path, size_kb: int) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)], check=True
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """A filler file that takes every free byte of the filesystem."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        block = b"\0" * 4096
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, block)
    finally:
        os.close(fd)
    return filler


def _file(folder: Path, n: int, memories: int = 8) -> int:
    rows = [
        {
            "prompt": f"Letter {n}, page {i}: what did you write?",
            "completion": f"Letter {n} page {i}: " + "the lighthouse keeper's log says " * 40,
            "quality_score": 8,
        }
        for i in range(memories)
    ]
    tmp = folder / f".l{n:03d}.part"
    tmp.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    tmp.rename(folder / f"l{n:03d}.jsonl")
    return memories


def _ledger(d: DaemonProcess) -> dict[str, Any]:
    conn = sqlite3.connect(f"file:{d.state_dir / 'ledger.sqlite3'}?mode=ro", uri=True, timeout=30)
    try:
        files = conn.execute("SELECT path, memories FROM files").fetchall()
        sources = dict(
            conn.execute("SELECT path, count(*) FROM memory_sources GROUP BY path").fetchall()
        )
        memories = conn.execute("SELECT count(*) FROM memories").fetchone()[0]
    finally:
        conn.close()
    half = [p for p, n in files if sources.get(p, 0) != n]
    return {"files": len(files), "memories": memories, "half_written_files": half}


def ingest_disk_full(root: Path, files: int = 12, size_kb: int = 24_000) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with small_fs(root / "state", size_kb), fuzz_daemon(root, indexed=True) as d:
        folder = d.profiles_dir / "alice" / "memory"
        folder.mkdir(parents=True)
        expected = sum(_file(folder, n) for n in range(3))
        d.wait_for(lambda: _ledger(d)["memories"] == expected, 60)
        filler = fill(d.state_dir)
        expected += sum(_file(folder, n) for n in range(3, files))
        status = d.wait_for(
            lambda: (s := d.call("status")["daemon"]["ingest"])["state"] == "disk-full" and s,
            60,
        )
        out["status_when_full"] = {"state": status["state"], "last_error": status["last_error"]}
        time.sleep(3)  # a few retries against the full disk
        out["while_full"] = _ledger(d)
        filler.unlink()  # space returns
        freed = time.monotonic()
        d.wait_for(lambda: _ledger(d)["memories"] == expected, 120)
        out["resumed_after_s"] = round(time.monotonic() - freed, 1)
        d.wait_for(lambda: d.call("status")["daemon"]["ingest"]["state"] == "running", 30)
        out["after"] = _ledger(d)
        out["expected_memories"] = expected
        out["files_written"] = files
        log = d.log()
        out["said"] = [m for m in ("disk full: ingest paused", "disk space is back") if m in log]
    return out


def training_disk_full(root: Path, python: Path, size_kb: int = 24_000) -> dict[str, Any]:
    """A training child whose checkpoint fills the disk: the job fails as "disk full",
    its partial outputs go, the space comes back and the daemon goes on."""
    env = {
        "FAKE_TRAINER": "fill-disk",
        "PERSONAD_TRAINING__PYTHON": str(python),
        "PERSONAD_TRAINING__FAMILY": "smollm",
    }
    out: dict[str, Any] = {}
    with small_fs(root / "state", size_kb), fuzz_daemon(root, env, indexed=True) as d:
        folder = d.profiles_dir / "alice" / "memory"
        folder.mkdir(parents=True)
        expected = sum(_file(folder, n, memories=6) for n in range(2))
        d.wait_for(lambda: _ledger(d)["memories"] == expected, 60)
        free_before = os.statvfs(d.state_dir).f_bavail
        job = d.call("train", {"profile": "alice", "force": True})["job"]
        ended = d.wait_for(
            lambda: next(
                (
                    j
                    for j in d.call("jobs")["jobs"]
                    if j["id"] == job["id"] and j["state"] not in ("queued", "running")
                ),
                None,
            ),
            120,
        )
        run = Path(ended["run_dir"])
        out["job"] = {"state": ended["state"], "reason": ended["reason"]}
        out["partial_outputs_left"] = sorted(
            p.name for p in run.iterdir() if p.name in ("checkpoints", "adapter", "model")
        )
        out["free_space_back"] = os.statvfs(d.state_dir).f_bavail >= free_before * 0.9
        out["active_version"] = d.call("status")["profiles"]["alice"]["active_version"]
        _file(folder, 99, memories=2)
        d.wait_for(lambda: _ledger(d)["memories"] == expected + 2, 60)
        out["ingest_after"] = "ok"
    return out

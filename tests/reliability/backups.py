"""Backup during a steady ingest, restore into a fresh state, compare.

:func:`backup_round_trip` runs a daemon (hash embeddings, the stand-in trainer) that has
published a version, writes a memory file every ``interval_s`` while `personad backup`
runs, restores the backup with `personad restore` into a fresh state directory, compares
the restored ledger and registry with the snapshot, then starts a daemon on the restored
state and the same memory folders: it must index everything again and ingest only the
files written after the snapshot, each once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.daemon_process import REPO, DaemonProcess

FAKE_TRAINER = Path(__file__).resolve().parents[1] / "daemon" / "fake_trainer.py"
PROFILE = "alice"


def fake_python(root: Path) -> Path:
    python = root / "fake-python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_TRAINER}" "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    return python


def _file(folder: Path, n: int) -> None:
    rows = [
        {
            "prompt": f"What happened in week {n}, part {i}?",
            "completion": f"In week {n} I mended net number {i} at the harbour.",
            "quality_score": 9,
        }
        for i in range(2)
    ]
    tmp = folder / f".w{n:04d}.part"
    tmp.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    tmp.rename(folder / f"w{n:04d}.jsonl")


class Writer:
    """Drops a two-memory file every ``interval_s`` until stopped."""

    def __init__(self, folder: Path, interval_s: float, start: int) -> None:
        self.folder, self.interval_s, self.n = folder, interval_s, start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            _file(self.folder, self.n)
            self.n += 1
            self._stop.wait(self.interval_s)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def ledger_rows(path: Path) -> dict[str, Any]:
    """What a comparison needs of a ledger (read-only)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:

        def rows(sql: str) -> list[tuple[Any, ...]]:
            return [tuple(r) for r in conn.execute(sql).fetchall()]

        return {
            "memories": rows("SELECT profile, id FROM memories ORDER BY 1, 2"),
            "samples": rows("SELECT profile, memory_id, mode, split FROM samples ORDER BY 1, 2"),
            "jobs": rows("SELECT id, profile, kind, state FROM jobs ORDER BY id"),
            "versions": rows("SELECT profile, version, active FROM model_versions ORDER BY 1, 2"),
            "files": dict(
                rows("SELECT path, seen_at FROM files WHERE profile = 'alice'")  # type: ignore[arg-type]
            ),
        }
    finally:
        conn.close()


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _cli(d: DaemonProcess, *args: str, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", *args],
        cwd=REPO,
        env=env or d.env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@contextlib.contextmanager
def local_daemon(root: Path, env: dict[str, str]) -> Iterator[DaemonProcess]:
    """A daemon on the local embedder and no Ollama (the stand-in trainer's adapter
    cannot be merged for Ollama), stopped with exit 0 on the way out."""
    root.mkdir(parents=True, exist_ok=True)
    d = DaemonProcess(root, env=env).start()
    try:
        yield d
    except BaseException:
        d.stop()
        raise
    code = d.stop()
    if code != 0:
        raise AssertionError(f"the daemon exited {code}:\n{d.log()[-3000:]}")


def _counts(d: DaemonProcess) -> dict[str, Any]:
    return dict(d.call("status")["profiles"].get(PROFILE, {}))


def backup_round_trip(root: Path, *, files: int = 20, interval_s: float = 0.05) -> dict[str, Any]:
    python = fake_python(root)
    env = {
        "FAKE_TRAINER": "ok",
        "PERSONAD_TRAINING__PYTHON": str(python),
        "PERSONAD_TRAINING__FAMILY": "smollm",
        "PERSONAD_INGEST__DEBOUNCE_MS": "50",
        "PERSONAD_TRIGGERS__LORA_THRESHOLD": "1000000",
        "PERSONAD_TRIGGERS__LORA_SCHEDULE": "",
        "PERSONAD_TRIGGERS__FULL_SCHEDULE": "",
    }
    out: dict[str, Any] = {}
    dest = root / "backup"
    with local_daemon(root / "a", env) as a:
        folder = a.profiles_dir / PROFILE / "memory"
        folder.mkdir(parents=True)
        for n in range(files):
            _file(folder, n)
        a.wait_for(lambda: _counts(a).get("indexed") == 2 * files, 120)
        job = a.call("train", {"profile": PROFILE, "force": True})["job"]
        a.wait_for(
            lambda: (
                next(j for j in a.call("jobs")["jobs"] if j["id"] == job["id"])["state"]
                == "succeeded"
            ),
            120,
        )
        out["active_before"] = _counts(a)["active_version"]
        with Writer(folder, interval_s, start=files) as writer:
            time.sleep(0.5)
            started = time.monotonic()
            done = _cli(a, "backup", str(dest), "--json")
            out["backup_seconds"] = round(time.monotonic() - started, 2)
            time.sleep(0.5)
        if done.returncode != 0:
            raise AssertionError(f"backup failed: {done.stderr}")
        out["files_written"] = writer.n
        manifest = json.loads(done.stdout)
        a.wait_for(lambda: _counts(a).get("indexed") == 2 * writer.n, 120)
        out["source_memories_at_end"] = _counts(a)["memories"]
        # Restoring over a running daemon's state is refused.
        busy = _cli(a, "restore", str(dest), "--force")
        out["restore_refused_while_running"] = busy.returncode == 1 and (
            "already running" in busy.stderr
        )
    out["manifest_counts"] = manifest["counts"]
    snapshot = ledger_rows(dest / "ledger.sqlite3")
    # A fresh state directory on the same memory folders.
    fresh = root / "b" / "state"
    b_env = {**env, "PERSONAD_STATE_DIR": str(fresh), "PERSONAD_PROFILES_DIR": str(a.profiles_dir)}
    restore_env = {**a.env, **b_env}
    done = _cli(a, "restore", str(dest), env=restore_env)
    if done.returncode != 0:
        raise AssertionError(f"restore failed: {done.stderr}")
    out["restore_said"] = done.stdout.strip().splitlines()[0]
    restored = ledger_rows(fresh / "ledger.sqlite3")
    out["equal"] = {key: restored[key] == snapshot[key] for key in snapshot}
    active = fresh / "models" / PROFILE / "active"
    out["active_link"] = active.resolve().name if active.is_symlink() else None
    out["registry_equal"] = tree_digest(fresh / "models" / PROFILE / out["active_link"]) == (
        tree_digest(dest / "models" / PROFILE / out["active_link"])
    )
    again = _cli(a, "restore", str(dest), env=restore_env)
    out["restore_refused_over_state"] = again.returncode == 1 and "not empty" in again.stderr
    with local_daemon(root / "b", b_env) as b:
        b.wait_for(
            lambda: (
                _counts(b).get("indexed") == _counts(b).get("memories") == 2 * out["files_written"]
            ),
            120,
        )
        counts = _counts(b)
        out["after_restart"] = {k: counts[k] for k in ("memories", "indexed", "active_version")}
        after = ledger_rows(fresh / "ledger.sqlite3")
        # Files of the snapshot were not read again (their rows unchanged); the rest are new.
        out["old_files_reread"] = sum(
            1 for path, seen in snapshot["files"].items() if after["files"].get(path) != seen
        )
        out["new_files_ingested"] = len(set(after["files"]) - set(snapshot["files"]))
        out["duplicates"] = len(after["memories"]) - len(set(after["memories"]))
        with contextlib.suppress(Exception):
            out["search_hits"] = len(
                b.call("search", {"profile": PROFILE, "query": "week 3 net", "k": 3})["results"]
            )
    return out

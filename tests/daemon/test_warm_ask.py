"""`ask` through the daemon's warm generation worker: one worker process across
questions, ended when idle, before training and with the daemon; the model is loaded in
the worker, and the daemon's side of it imports no training library."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from daemon.app import Daemon
from services.generation_worker import WorkerSpec
from services.ledger import Ledger
from services.settings import load_settings
from tests.daemon_process import REPO, DaemonProcess

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def workers(cache_dir: Path) -> dict[int, int]:
    """pid -> parent pid of the generation workers whose base-model cache is ``cache_dir``
    (one daemon's)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            status = (entry / "status").read_text()
        except OSError:
            continue
        if "services.generation" in argv and "--serve" in argv and str(cache_dir) in argv:
            if "\nState:\tZ" in status:
                continue
            ppid = next(line for line in status.splitlines() if line.startswith("PPid:"))
            found[int(entry.name)] = int(ppid.split()[1])
    return found


def _daemon(root: Path, tiny_model: Path) -> DaemonProcess:
    d = DaemonProcess(
        root,
        env={
            **OFFLINE,
            "PERSONAD_TRAINING__BASE_MODEL": str(tiny_model),
            "PERSONAD_TRAINING__FAMILY": "smollm",
            "PERSONAD_ASK__MAX_NEW_TOKENS": "8",
        },
    )
    d.state_dir.mkdir(parents=True, exist_ok=True)
    with Ledger(d.state_dir / "ledger.sqlite3") as ledger:
        ledger.ensure_profile("alice")
    return d


def _ask(d: DaemonProcess, question: str) -> dict:
    result = d.call("ask", {"profile": "alice", "question": question, "k": 0}, timeout=300)
    return dict(result["answers"]["base"])


def test_ask_twice_keeps_one_worker_and_stopping_the_daemon_leaves_none(
    short_tmp: Path, tiny_model: Path
) -> None:
    d = _daemon(short_tmp, tiny_model).start()
    cache = d.state_dir / "base-models"
    try:
        first = _ask(d, "Where did you sail last summer?")
        assert first["warm"] is False and isinstance(first["stopped"], bool)
        (pid,) = workers(cache)
        assert workers(cache) == {pid: d.proc.pid}  # type: ignore[union-attr]
        second = _ask(d, "And the summer before?")
        assert second["warm"] is True
        assert list(workers(cache)) == [pid]  # the same process answered
    finally:
        assert d.stop() == 0
    assert workers(cache) == {}, d.log()[-3000:]


def test_a_worker_whose_daemon_was_killed_exits(short_tmp: Path, tiny_model: Path) -> None:
    d = _daemon(short_tmp, tiny_model).start()
    cache = d.state_dir / "base-models"
    try:
        _ask(d, "Where did you sail last summer?")
        assert len(workers(cache)) == 1
    finally:
        d.kill()  # SIGKILL: no clean-up; the worker sees the end of its stdin
    d.wait_for(lambda: not workers(cache), timeout=60)


def test_the_daemon_releases_its_workers_before_training_and_reaps_idle_ones(
    tmp_path: Path, tiny_model: Path
) -> None:
    settings = load_settings(
        overrides={
            "state_dir": str(tmp_path / "state"),
            "profiles_dir": str(tmp_path / "profiles"),
            "ask": {"idle_timeout_s": 1.0},
        }
    )
    daemon = Daemon(settings)
    pool = daemon.generation_pool
    spec = WorkerSpec(
        model=str(tiny_model),
        cache_dir=tmp_path / "cache",
        env={**os.environ, **OFFLINE},
    )
    try:
        pool.generate(spec, "hello", max_new_tokens=2, timeout=180)
        assert len(pool.pids()) == 1
        daemon._free_gpu()  # the supervisor's before_training
        assert pool.pids() == []

        pool.generate(spec, "hello", max_new_tokens=2, timeout=180)
        assert len(pool.pids()) == 1

        async def reaped() -> None:
            timer = asyncio.create_task(daemon._reap_timer())
            try:
                while pool.pids():
                    await asyncio.sleep(0.1)
            finally:
                timer.cancel()

        asyncio.run(asyncio.wait_for(reaped(), 120))
        assert workers(tmp_path / "cache") == {}
    finally:
        pool.close()


def test_the_daemons_side_of_ask_imports_no_training_library() -> None:
    code = (
        "import sys, daemon.app, daemon.commands, services.ask, services.generation_worker; "
        "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"

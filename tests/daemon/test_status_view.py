"""`personad status --watch` keeps going while the daemon restarts."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tests.daemon_process import REPO, DaemonProcess


def test_watch_survives_a_daemon_restart(short_tmp: Path) -> None:
    d = DaemonProcess(short_tmp)
    d.start()
    watch = subprocess.Popen(
        d.command("status", "--watch", "--interval", "0.3", "--iterations", "400"),
        cwd=REPO,
        env=d.env | {"COLUMNS": "120", "TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(3)
        assert d.stop() == 0
        time.sleep(2)
        d.start()
        new_pid = d.proc.pid  # type: ignore[union-attr]
        time.sleep(3)
        assert watch.poll() is None  # still watching
    finally:
        watch.terminate()
        out, _ = watch.communicate(timeout=30)
        d.stop()
    first_pid_seen = out.index("personad status")
    assert "not running" in out[first_pid_seen:] and "retrying" in out
    restarted = out.rindex("retrying")
    assert "personad status" in out[restarted:]  # the view came back
    assert f"pid {new_pid}" in out[restarted:]  # the new daemon


def test_the_view_shows_the_job_bar_schedules_and_rejects_each_on_its_own_lines() -> None:
    from rich.console import Console

    from daemon.status_view import view

    status = {
        "daemon": {"version": "0.1.0", "pid": 42, "state": "running", "uptime_s": 75},
        "profiles": {"ana": {"memories": 12, "indexed": 12, "rejects": 1, "active_version": "v2"}},
        "jobs": [
            {
                "id": 7,
                "profile": "ana",
                "kind": "lora",
                "state": "running",
                "progress": {"step": 12, "total_steps": 48, "loss": 2.5, "eta_s": 125},
            }
        ],
        "schedules": [{"kind": "lora", "cron": "0 3 * * *", "next_run": "2026-11-22T03:00"}],
        "recent_rejects": [
            {"profile": "ana", "path": "/p/ana/memory/bad.jsonl", "reason": "line 1: bad JSON"}
        ],
    }
    console = Console(width=100, record=True, color_system=None)
    console.print(view(status))
    lines = console.export_text().splitlines()
    job = next(i for i, line in enumerate(lines) if "job 7 ana lora running" in line)
    assert "step 12/48, loss 2.5000, eta 2m05s" in lines[job]
    assert "━" in lines[job + 1] and lines[job + 1].rstrip(" │").endswith("25%")
    assert "schedule lora (0 3 * * *): next 2026-11-22T03:00" in lines[job + 2]
    rejects = next(i for i, line in enumerate(lines) if "recent rejects" in line)
    assert rejects > job + 2 and lines[rejects - 1].strip("│ ").startswith("┏")
    assert any("ana: bad.jsonl" in line and "line 1: bad JSON" in line for line in lines)
    assert "v2" in "\n".join(lines) and "pid 42" in lines[1]

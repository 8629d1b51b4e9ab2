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

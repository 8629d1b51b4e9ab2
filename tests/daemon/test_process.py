"""The daemon as a real process: start-up, READY, status, signals, single instance."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.daemon_process import REPO, DaemonProcess


def _notify_listener(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(30)
    return sock


def test_runs_with_no_config_notifies_ready_answers_and_stops_on_sigterm(short_tmp: Path) -> None:
    home = short_tmp / "home"
    runtime = short_tmp / "rt"
    runtime.mkdir(mode=0o700)
    listener = _notify_listener(short_tmp / "notify")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSONAD_")}
    env |= {
        "HOME": str(home),
        "XDG_RUNTIME_DIR": str(runtime),
        "NOTIFY_SOCKET": str(short_tmp / "notify"),
    }
    env.pop("XDG_DATA_HOME", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "run"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        first = listener.recv(4096).decode()
        assert first.startswith("READY=1")
        socket_path = runtime / "personad" / "personad.sock"
        # READY means the socket answers already.
        status = subprocess.run(
            [sys.executable, "-m", "daemon.cli", "status", "--json"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        import json

        result = json.loads(status.stdout)
        assert result["daemon"]["pid"] == proc.pid
        assert result["daemon"]["uptime_s"] >= 0
        assert result["daemon"]["state_dir"] == str(home / ".local" / "share" / "personad")
        assert set(result) >= {"daemon", "profiles", "jobs", "schedules"}
        assert oct(socket_path.stat().st_mode & 0o777) == "0o600"
        assert oct(socket_path.parent.stat().st_mode & 0o777) == "0o700"

        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
        assert time.monotonic() - started < 5
        assert listener.recv(4096).decode().startswith("STOPPING=1")
        assert not socket_path.exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def test_second_instance_is_refused(short_tmp: Path) -> None:
    first = DaemonProcess(short_tmp).start()
    try:
        second = subprocess.run(
            first.command("run"),
            cwd=REPO,
            env=first.env | {"PERSONAD_SOCKET_PATH": str(short_tmp / "b.sock")},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode != 0
        assert f"already running (pid {first.proc.pid})" in second.stderr  # type: ignore[union-attr]
        assert first.call("ping")["pong"] is True
    finally:
        assert first.stop() == 0


def test_second_signal_exits_at_once(short_tmp: Path) -> None:
    d = DaemonProcess(short_tmp).start()
    assert d.proc is not None
    d.signal(signal.SIGSTOP)  # hold it so both signals arrive before it drains
    d.signal(signal.SIGTERM)
    d.signal(signal.SIGINT)
    d.signal(signal.SIGCONT)
    code = d.proc.wait(5)
    d.stop()
    assert code in (0, 128 + signal.SIGTERM, 128 + signal.SIGINT)


def test_cli_without_daemon_says_so_in_one_line(short_tmp: Path) -> None:
    d = DaemonProcess(short_tmp)
    done = d.cli("status")
    assert done.returncode == 3
    assert done.stderr.strip().splitlines() == [
        f"personad: personad is not running (no daemon answers on {d.socket})"
    ]

"""sd_notify over a real datagram socket, and watchdog pings tied to the main loop."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from daemon.app import Daemon
from daemon.notify import Notifier
from services.settings import load_settings


def _listener(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.05)
    return sock


def _drain(sock: socket.socket) -> list[tuple[float, str]]:
    got = []
    while True:
        try:
            got.append((time.monotonic(), sock.recv(4096).decode()))
        except TimeoutError:
            return got


def test_messages_reach_notify_socket(short_tmp: Path) -> None:
    listener = _listener(short_tmp / "notify")
    n = Notifier.from_environ(
        {"NOTIFY_SOCKET": str(short_tmp / "notify"), "WATCHDOG_USEC": "4000000"}
    )
    assert n.watchdog_interval_s == 2.0
    n.ready("watching")
    n.status("busy")
    n.watchdog()
    n.stopping()
    msgs = [m for _, m in _drain(listener)]
    assert msgs == ["READY=1\nSTATUS=watching", "STATUS=busy", "WATCHDOG=1", "STOPPING=1"]


def test_outside_systemd_nothing_is_sent() -> None:
    n = Notifier.from_environ({})
    assert not n.enabled
    assert n.ready() is False
    assert n.watchdog_interval_s is None


def test_watchdog_for_another_pid_is_ignored() -> None:
    n = Notifier.from_environ(
        {"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}
    )
    assert n.watchdog_interval_s is None


class _TimedNotifier(Notifier):
    """Notes when each ping is sent (receive times lag on a busy machine)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.sent: list[float] = []

    def watchdog(self) -> bool:
        self.sent.append(time.monotonic())
        return super().watchdog()


def test_watchdog_pings_stop_while_main_loop_is_stalled(short_tmp: Path) -> None:
    listener = _listener(short_tmp / "notify")
    notifier = _TimedNotifier(str(short_tmp / "notify"), watchdog_usec=100_000)  # every 50 ms
    daemon = Daemon(load_settings(overrides={"state_dir": str(short_tmp / "s")}), notifier)

    async def scenario() -> tuple[float, float]:
        pinger = asyncio.create_task(daemon._watchdog_pings())
        await asyncio.sleep(0.3)
        stall_start = time.monotonic()
        time.sleep(0.6)  # the loop is stuck: nothing may ping
        stall_end = time.monotonic()
        await asyncio.sleep(0.3)
        pinger.cancel()
        return stall_start, stall_end

    stall_start, stall_end = asyncio.run(scenario())
    pings = notifier.sent
    before = [t for t in pings if t < stall_start]
    during = [t for t in pings if stall_start < t < stall_end]
    after = [t for t in pings if t >= stall_end]
    assert len(before) >= 3
    assert during == []
    assert len(after) >= 2
    # The pings reached the notify socket (its queue holds the first ones).
    assert "WATCHDOG=1" in [m for _, m in _drain(listener)]

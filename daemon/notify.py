"""sd_notify without libsystemd: datagrams to $NOTIFY_SOCKET.

READY=1 once start-up is complete, WATCHDOG=1 from the main loop at half of
WATCHDOG_USEC, STATUS=... lines, STOPPING=1. Outside systemd it does nothing.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger(__name__)


class Notifier:
    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        if address:
            # A leading '@' is an abstract socket.
            self._target = "\0" + address[1:] if address.startswith("@") else address
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Notifier:
        usec: int | None = None
        raw = environ.get("WATCHDOG_USEC")
        pid = environ.get("WATCHDOG_PID")
        if raw and raw.isdigit() and (not pid or pid == str(os.getpid())):
            usec = int(raw)
        return cls(environ.get("NOTIFY_SOCKET") or None, usec)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to send WATCHDOG=1: half of the watchdog timeout."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def send(self, *lines: str) -> bool:
        if self._sock is None:
            return False
        try:
            # Never block the main loop on a slow reader.
            self._sock.sendto("\n".join(lines).encode(), socket.MSG_DONTWAIT, self._target)
            return True
        except OSError as exc:
            log.warning("sd_notify failed", error=str(exc), socket=self.address)
            return False

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self, status: str = "") -> bool:
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

"""A guard that refuses every connection off this machine, for no-network tests."""

from __future__ import annotations

import contextlib
import socket

import pytest

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def refuse_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Make every non-loopback connection fail; returns the list of attempts."""
    attempts: list[object] = []
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: object) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if self.family in (socket.AF_INET, socket.AF_INET6) and host not in LOOPBACK:
            attempts.append(address)
            raise OSError(f"network access attempted: {address}")
        real_connect(self, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", guarded)
    return attempts


def assert_guard_is_live(attempts: list[object]) -> None:
    """Prove the guard catches a connection (then forget that attempt)."""
    before = len(attempts)
    with contextlib.suppress(OSError):
        socket.create_connection(("192.0.2.1", 9), timeout=1)  # TEST-NET-1
    assert len(attempts) == before + 1, "the network guard did not see a connection"
    del attempts[before:]

"""The control socket against the real daemon: permissions and hostile clients."""

from __future__ import annotations

import contextlib
import json
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.client import CommandFailed
from tests.daemon_process import DaemonProcess


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="pd-"))
    d = DaemonProcess(
        root, env={"PERSONAD_SOCKET__READ_TIMEOUT_S": "1", "PERSONAD_SOCKET__MAX_CONNECTIONS": "8"}
    ).start()
    yield d
    assert d.stop() == 0
    shutil.rmtree(root, ignore_errors=True)


def _raw(d: DaemonProcess) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(str(d.socket))
    return s


def _answer(s: socket.socket) -> dict:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return json.loads(buf)


def test_socket_is_private(daemon: DaemonProcess) -> None:
    assert stat.S_IMODE(daemon.socket.stat().st_mode) == 0o600
    assert stat.S_IMODE(daemon.socket.parent.stat().st_mode) == 0o700


def test_several_requests_on_one_connection(daemon: DaemonProcess) -> None:
    with _raw(daemon) as s:
        s.sendall(b'{"id": 1, "cmd": "ping"}\n{"id": "two", "cmd": "status", "args": {}}\n')
        first, second = _answer(s), _answer(s)
    assert first["id"] == 1 and first["ok"] and first["result"]["pong"]
    assert second["id"] == "two" and second["ok"] and "daemon" in second["result"]


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"this is not json\n", "bad_request"),
        (b"[1, 2, 3]\n", "bad_request"),
        (b'{"id": 5, "args": {}}\n', "bad_request"),
        (b'{"id": 6, "cmd": "status", "args": [1]}\n', "bad_request"),
        (b'{"id": 7, "cmd": "make-coffee"}\n', "unknown_command"),
        (b'{"id": 8, "cmd": "search", "args": {"profile": 3}}\n', "bad_args"),
        (b"\xff\xfe\xfd\n", "bad_request"),
    ],
)
def test_bad_requests_get_error_answers(daemon: DaemonProcess, line: bytes, code: str) -> None:
    with _raw(daemon) as s:
        s.sendall(line)
        answer = _answer(s)
    assert answer["ok"] is False
    assert answer["error"]["code"] == code
    assert answer["error"]["message"]
    assert daemon.call("ping")["pong"]


def test_oversized_line_is_refused_and_daemon_survives(daemon: DaemonProcess) -> None:
    with _raw(daemon) as s:
        with contextlib.suppress(BrokenPipeError):
            s.sendall(b'{"cmd": "ping", "pad": "' + b"x" * 200_000 + b'"}\n')
        answer = _answer(s)
    assert answer["error"]["code"] == "line_too_long"
    assert daemon.call("ping")["pong"]


def test_slow_client_times_out_without_blocking_others(daemon: DaemonProcess) -> None:
    with _raw(daemon) as slow:
        slow.sendall(b'{"cmd": "pi')  # and then nothing
        started = time.monotonic()
        assert daemon.call("ping")["pong"]  # others are served meanwhile
        assert time.monotonic() - started < 1.0
        answer = _answer(slow)
        assert answer["error"]["code"] == "timeout"
        assert slow.recv(10) == b""  # closed


def test_connection_cap(daemon: DaemonProcess) -> None:
    held = [_raw(daemon) for _ in range(8)]
    try:
        time.sleep(0.2)
        with _raw(daemon) as extra:
            answer = _answer(extra)
        assert answer["error"]["code"] == "busy"
    finally:
        for s in held:
            s.close()
    time.sleep(0.2)
    assert daemon.call("ping")["pong"]


def test_client_disconnecting_mid_request_is_harmless(daemon: DaemonProcess) -> None:
    for _ in range(20):
        s = _raw(daemon)
        s.sendall(b'{"id": 1, "cmd": "status"}\n')
        s.close()

    def answers() -> bool:
        try:
            return bool(daemon.call("ping")["pong"])
        except CommandFailed as exc:  # busy while the abandoned requests finish
            assert exc.code == "busy"
            return False

    daemon.wait_for(answers, timeout=10)
    assert daemon.call("status")["daemon"]["pid"] == daemon.proc.pid  # type: ignore[union-attr]

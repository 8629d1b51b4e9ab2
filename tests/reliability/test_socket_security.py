"""Who may use the control socket, and what a thousand clients at once do to the daemon.

(The socket's own 0600 and its directory's 0700 after a fresh start are checked in
tests/daemon/test_control_socket.py and test_process.py.)
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_process import DaemonProcess
from tests.reliability.fuzz import alive, connection_storm, fuzz_daemon

NOBODY = 65534
CLIENTS = 1000
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="running a client as another uid needs root (fork + setuid)"
)


@pytest.fixture(scope="module")
def roomy_daemon() -> Iterator[DaemonProcess]:
    """Room for every client, uid 65534 (nobody) in allowed_uids, and a socket directory
    that was left world-readable, with a stale file at the socket's path, before the
    start."""
    root = Path(tempfile.mkdtemp(prefix="pdsec-"))
    run = root / "run"
    run.mkdir(mode=0o755)
    run.chmod(0o755)
    (run / "personad.sock").write_text("stale")
    env = {
        "PERSONAD_SOCKET__MAX_CONNECTIONS": str(CLIENTS + 100),
        "PERSONAD_SOCKET__ALLOWED_UIDS": f"[{NOBODY}]",
    }
    try:
        with fuzz_daemon(root, env) as d:
            yield d
            assert d.stop() == 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---- another uid ---------------------------------------------------------------------


def _try_as(uid: int, path: Path) -> dict[str, Any]:
    """In a forked child running as ``uid``: connect, send ping, collect the answers."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            out: dict[str, Any] = {"uid": os.getuid(), "euid": os.geteuid()}
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(10)
                try:
                    sock.connect(str(path))
                except OSError as exc:
                    out["connect_errno"] = exc.errno
                else:
                    data = b""
                    with contextlib.suppress(OSError):  # the daemon may have closed already
                        sock.sendall(b'{"id": 1, "cmd": "ping"}\n')
                        while not data.endswith(b"\n") and (chunk := sock.recv(65536)):
                            data += chunk
                        sock.shutdown(socket.SHUT_WR)  # done: the daemon should close
                    with contextlib.suppress(ConnectionResetError):
                        while chunk := sock.recv(65536):
                            data += chunk
                    out["answers"] = [json.loads(line) for line in data.splitlines()]
            os.write(write_end, json.dumps(out).encode())
        except BaseException as exc:
            os.write(write_end, json.dumps({"child_failed": repr(exc)}).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    result: dict[str, Any] = json.loads(data)
    assert "child_failed" not in result, result
    assert result["uid"] == result["euid"] == uid
    return result


@contextlib.contextmanager
def _reachable(daemon: DaemonProcess) -> Iterator[None]:
    """Let other users through the filesystem (directories 0711, socket 0666) for a
    while, so that only the daemon's own uid check stands in their way."""
    opened = {daemon.root: 0o711, daemon.socket.parent: 0o711, daemon.socket: 0o666}
    modes = {path: stat.S_IMODE(path.stat().st_mode) for path in opened}
    for path, mode in opened.items():
        path.chmod(mode)
    try:
        yield
    finally:
        for path, mode in modes.items():
            path.chmod(mode)


@needs_root
def test_another_uid_cannot_reach_the_socket_through_its_directory(
    daemon: DaemonProcess,
) -> None:
    result = _try_as(NOBODY, daemon.socket)
    assert result["connect_errno"] == errno.EACCES
    assert alive(daemon)


@needs_root
def test_another_uid_is_refused_by_the_daemon(daemon: DaemonProcess) -> None:
    with _reachable(daemon):
        result = _try_as(NOBODY, daemon.socket)
    assert "connect_errno" not in result  # the filesystem let it through
    [answer] = result["answers"]  # one answer, then the daemon closed the connection
    assert answer["ok"] is False
    assert answer["error"]["code"] == "forbidden"
    assert str(NOBODY) in answer["error"]["message"]
    refusals = [
        json.loads(line)
        for line in daemon.log().splitlines()
        if "control connection refused" in line
    ]
    assert refusals and refusals[-1]["peer_uid"] == NOBODY
    assert alive(daemon)


@needs_root
def test_a_uid_in_allowed_uids_is_served(roomy_daemon: DaemonProcess) -> None:
    with _reachable(roomy_daemon):
        result = _try_as(NOBODY, roomy_daemon.socket)
    [answer] = result["answers"]
    assert answer["ok"] is True and answer["result"]["pong"] is True


def test_a_loose_socket_directory_is_made_private_again(roomy_daemon: DaemonProcess) -> None:
    # The fixture left the directory 0755 with a stale file at the socket's path.
    assert stat.S_IMODE(roomy_daemon.socket.parent.stat().st_mode) == 0o700
    assert stat.S_ISSOCK(roomy_daemon.socket.stat().st_mode)
    assert stat.S_IMODE(roomy_daemon.socket.stat().st_mode) == 0o600
    assert alive(roomy_daemon)


@needs_root
def test_a_socket_directory_owned_by_another_user_is_refused(short_tmp: Path) -> None:
    run = short_tmp / "run"
    run.mkdir(mode=0o700)
    os.chown(run, NOBODY, NOBODY)
    d = DaemonProcess(short_tmp).start(wait=False)
    assert d.proc is not None
    try:
        code = d.proc.wait(60)
    except subprocess.TimeoutExpired:
        d.kill()
        raise
    finally:
        d.stop()
    assert code != 0
    assert f"belongs to uid {NOBODY}" in d.log()
    assert not d.socket.exists()


# ---- a thousand clients ----------------------------------------------------------------


@pytest.fixture
def enough_fds() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = CLIENTS + 200
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"the hard limit on open files ({hard}) is below {need}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.usefixtures("enough_fds")
def test_a_thousand_clients_beyond_the_cap_are_told_busy(daemon: DaemonProcess) -> None:
    storm = connection_storm(daemon, CLIENTS)
    assert storm["connected"] == CLIENTS and storm["unanswered"] == 0
    assert 1 <= storm["served"] <= 64  # the default cap
    assert storm["error_codes"] == {"busy": CLIENTS - storm["served"]}
    # Refused clients do not pile up, and every file is given back.
    assert storm["peak_fds"] < storm["baseline_fds"] + 64 + 100
    assert storm["settled_fds"] <= storm["baseline_fds"]
    assert storm["daemon_alive"]


@pytest.mark.usefixtures("enough_fds")
def test_a_thousand_clients_at_once_are_all_served(roomy_daemon: DaemonProcess) -> None:
    storm = connection_storm(roomy_daemon, CLIENTS)
    assert storm["connected"] == storm["served"] == CLIENTS
    # They really were open at the same time, and every file is given back.
    assert storm["peak_fds"] >= storm["baseline_fds"] + CLIENTS - 10
    assert storm["settled_fds"] <= storm["baseline_fds"]
    assert storm["daemon_alive"]

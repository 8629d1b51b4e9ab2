"""A client for the control socket (used by the CLI and by scripts)."""

from __future__ import annotations

import itertools
import json
import socket
from pathlib import Path
from typing import Any

from daemon.errors import DaemonError


class ClientError(DaemonError):
    """Base of the client's errors."""


class DaemonNotRunning(ClientError):
    pass


class CommandFailed(ClientError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message


class ControlClient:
    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._sock: socket.socket | None = None
        self._buf = b""

    def __enter__(self) -> ControlClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            raise DaemonNotRunning(
                f"personad is not running (no daemon answers on {self.path})"
            ) from exc
        except PermissionError as exc:
            sock.close()
            raise ClientError(f"no permission to use {self.path}: {exc}") from exc
        self._sock = sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def call(
        self, cmd: str, args: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        req_id = next(self._ids)
        line = json.dumps({"id": req_id, "cmd": cmd, "args": args or {}}).encode() + b"\n"
        self._sock.settimeout(timeout or self.timeout)
        try:
            self._sock.sendall(line)
            answer = self._readline()
        except TimeoutError as exc:
            raise ClientError(f"personad did not answer {cmd!r} in time") from exc
        except OSError as exc:
            raise ClientError(f"connection to personad lost: {exc}") from exc
        if not answer.get("ok"):
            err = answer.get("error") or {}
            raise CommandFailed(str(err.get("code", "error")), str(err.get("message", "failed")))
        return answer.get("result")

    def _readline(self) -> dict[str, Any]:
        assert self._sock is not None
        while b"\n" not in self._buf:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ClientError("personad closed the connection")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        value = json.loads(line)
        if not isinstance(value, dict):
            raise ClientError("personad sent an answer that is not a JSON object")
        return value


def call(path: Path, cmd: str, args: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
    with ControlClient(path, timeout=timeout) as client:
        return client.call(cmd, args)

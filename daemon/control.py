"""The control socket: JSON lines over a Unix stream socket.

Request ``{"id": 1, "cmd": "status", "args": {}}``, answer
``{"id": 1, "ok": true, "result": {...}}`` or
``{"id": 1, "ok": false, "error": {"code": "...", "message": "..."}}``.

The socket is 0600 inside a 0700 directory and every peer's uid is checked
(SO_PEERCRED). Lines are capped, idle clients time out and connections are
capped: a bad client gets an error answer or a closed connection, never a
crashed daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from daemon.errors import DaemonError

log = structlog.get_logger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class CommandError(DaemonError):
    """A command failed in a way the client should be told about."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ControlSocketError(DaemonError):
    """The control socket cannot be set up."""


def _peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def prepare_socket_dir(path: Path) -> None:
    """Create the socket's directory 0700, or check that an existing one is ours."""
    directory = path.parent
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = directory.stat()
    except OSError as exc:
        raise ControlSocketError(f"cannot create the socket directory {directory}: {exc}") from exc
    if st.st_uid != os.getuid():
        raise ControlSocketError(
            f"the socket directory {directory} belongs to uid {st.st_uid}, not to this user "
            f"({os.getuid()}); set socket_path to a private directory"
        )
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(directory, 0o700)


class ControlServer:
    def __init__(
        self,
        path: Path,
        handlers: dict[str, Handler],
        *,
        allowed_uids: list[int] | None = None,
        max_line_bytes: int = 65536,
        read_timeout_s: float = 30.0,
        max_connections: int = 64,
    ) -> None:
        self.path = path
        self.handlers = handlers
        self.allowed_uids = {os.getuid(), 0, *(allowed_uids or [])}
        self.max_line_bytes = max_line_bytes
        self.read_timeout_s = read_timeout_s
        self.max_connections = max_connections
        self.active = 0
        self.refused = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        prepare_socket_dir(self.path)
        if self.path.exists() or self.path.is_symlink():
            # The instance lock is held, so a socket file left here is stale.
            self.path.unlink()
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._on_client, path=str(self.path), limit=self.max_line_bytes + 1
            )
        except OSError as exc:
            raise ControlSocketError(f"cannot listen on {self.path}: {exc}") from exc
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        log.info("control socket listening", socket=str(self.path))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.active += 1
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:  # never let one client take the daemon down
            log.exception("control connection failed")
        finally:
            self.active -= 1
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        uid = _peer_uid(sock) if sock is not None else -1
        if uid not in self.allowed_uids:
            self.refused += 1
            log.warning("control connection refused", peer_uid=uid)
            await self._send(writer, None, error=("forbidden", f"uid {uid} may not use personad"))
            return
        if self.active > self.max_connections:
            await self._send(writer, None, error=("busy", "too many connections; try again"))
            return
        while True:
            try:
                line = await asyncio.wait_for(reader.readline(), self.read_timeout_s)
            except TimeoutError:
                await self._send(writer, None, error=("timeout", "no complete request in time"))
                return
            except (ValueError, asyncio.LimitOverrunError):
                await self._send(
                    writer,
                    None,
                    error=(
                        "line_too_long",
                        f"request lines are limited to {self.max_line_bytes} bytes",
                    ),
                )
                return
            if not line:
                return
            if not line.endswith(b"\n"):  # EOF in the middle of a line
                return
            if not line.strip():
                continue
            await self._answer(writer, line)

    async def _answer(self, writer: asyncio.StreamWriter, line: bytes) -> None:
        try:
            request = json.loads(line)
        except (ValueError, UnicodeDecodeError) as exc:
            await self._send(writer, None, error=("bad_request", f"not a JSON object: {exc}"))
            return
        except RecursionError:
            await self._send(writer, None, error=("bad_request", "the JSON is nested too deeply"))
            return
        req_id = request.get("id") if isinstance(request, dict) else None
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            await self._send(writer, req_id, error=("bad_request", 'expected {"cmd": str, ...}'))
            return
        args = request.get("args") or {}
        if not isinstance(args, dict):
            await self._send(writer, req_id, error=("bad_request", "'args' must be an object"))
            return
        handler = self.handlers.get(request["cmd"])
        if handler is None:
            known = ", ".join(sorted(self.handlers))
            await self._send(
                writer,
                req_id,
                error=("unknown_command", f"unknown command {request['cmd']!r}; known: {known}"),
            )
            return
        try:
            result = await handler(args)
        except CommandError as exc:
            await self._send(writer, req_id, error=(exc.code, exc.message))
            return
        except Exception as exc:
            log.exception("control command failed", cmd=request["cmd"])
            await self._send(writer, req_id, error=("internal", f"{type(exc).__name__}: {exc}"))
            return
        await self._send(writer, req_id, result=result)

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        req_id: Any,
        *,
        result: Any = None,
        error: tuple[str, str] | None = None,
    ) -> None:
        if error is not None:
            body = {"id": req_id, "ok": False, "error": {"code": error[0], "message": error[1]}}
        else:
            body = {"id": req_id, "ok": True, "result": result}
        try:
            data = json.dumps(body, default=str)
        except (ValueError, RecursionError) as exc:  # e.g. an id nested too deeply to echo
            message = f"the answer cannot be written as JSON ({exc}); send plainer ids and args"
            data = json.dumps(
                {"id": None, "ok": False, "error": {"code": "bad_request", "message": message}}
            )
        writer.write(data.encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()

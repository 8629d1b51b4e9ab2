"""The HTTP server inside the daemon: uvicorn on the daemon's own event loop.

uvicorn serves the ASGI app on a socket bound here, so that a port in use is the
daemon's decision, not uvicorn's exit: the daemon logs it, runs on without HTTP (the
socket, ingest and training are unaffected) and ``status`` says why under
``daemon.http.error``. ``http.listen`` with port 0 binds a free port (the tests do).
uvicorn's own loop and signal handling are not used: the daemon owns both.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from pathlib import Path
from typing import Any

import structlog
import uvicorn

from daemon.control import Handler
from daemon.http_api import build_app
from daemon.http_events import EventFeed
from daemon.http_security import Guard, allowed_hosts, load_or_create_token
from services.settings import HttpSettings

log = structlog.get_logger(__name__)

GRACEFUL_S = 2


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say so (without it,
    # Nagle and delayed ACKs hold each answer's body back some 40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class HttpServer:
    def __init__(
        self,
        settings: HttpSettings,
        state_dir: Path,
        handlers: dict[str, Handler],
        fingerprint: Any,
    ) -> None:
        self.settings = settings
        self.state_dir = state_dir
        self.handlers = handlers
        self.fingerprint = fingerprint
        self.token = ""
        self.url: str | None = None
        self.error: str | None = None
        self._stopping = asyncio.Event()
        self._server: Any = None
        self._sock: socket.socket | None = None

    def info(self) -> dict[str, Any]:
        """``url`` is None until the server listens, and stays None with an ``error``."""
        return {"url": self.url, "listen": self.settings.listen, "error": self.error}

    async def start(self) -> None:
        """Serve; a failure (the port in use, say) is logged and kept in ``error``."""
        host, port = parse_listen(self.settings.listen)
        try:
            self.token = load_or_create_token(self.state_dir)
            self._sock = _bind(host, port)
        except OSError as exc:
            why = "the port is in use" if exc.errno == errno.EADDRINUSE else str(exc)
            self.error = f"cannot listen on {self.settings.listen}: {why}"
            log.warning("HTTP API not started; the daemon runs on without it", error=self.error)
            return
        except Exception as exc:
            self.error = str(exc)
            log.warning("HTTP API not started; the daemon runs on without it", error=self.error)
            return
        bound = self._sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        feed = EventFeed(self.handlers["status"], self.fingerprint, self._stopping)
        app = Guard(
            build_app(self.handlers, feed),
            self.token,
            allowed_hosts(host, bound, self.settings.allowed_hosts),
            bound,
        )
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            date_header=False,
            ws="none",
            timeout_graceful_shutdown=GRACEFUL_S,
        )
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[self._sock])
        self._server = server
        self.url = f"http://{shown}:{bound}/"
        log.info("HTTP API listening", url=self.url)

    async def stop(self) -> None:
        self._stopping.set()  # event streams end
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.shutdown(sockets=[self._sock] if self._sock else None)
            self._server = None
        elif self._sock is not None:
            self._sock.close()
        self._sock = None

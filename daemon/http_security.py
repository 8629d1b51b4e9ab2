"""Who may use the HTTP API: the bearer token, the Host check and the same-origin check.

Every request must name an allowed host (the listen address, localhost, and
``http.allowed_hosts``): a page on another name that resolves here (DNS rebinding)
gets 403. Then it must carry the token, as ``Authorization: Bearer <token>`` or as the
cookie (``personad_token_<port>``) that ``GET /?token=<token>`` sets (HttpOnly,
SameSite=Strict): 401 without it.
A request that changes state (anything but GET and HEAD) must also come from the same
origin: an ``Origin`` or ``Sec-Fetch-Site`` header naming another site gets 403, and a
request authenticated by the cookie alone must carry a matching ``Origin``.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import stat
from collections.abc import Iterable
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from daemon.errors import DaemonError

TOKEN_FILE = "http-token"
COOKIE = "personad_token_{port}"  # by port: browsers share cookies across a host's ports
SAFE_METHODS = frozenset({"GET", "HEAD"})

Scope = dict[str, Any]
Receive = Any
Send = Any


class TokenFileError(DaemonError):
    """The HTTP token file cannot be created or read."""


def load_or_create_token(state_dir: Path) -> str:
    """The token in ``<state_dir>/http-token``, created (mode 0600) at the first start."""
    path = state_dir / TOKEN_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_token(path)
    except OSError as exc:
        raise TokenFileError(f"cannot create the HTTP token {path}: {exc}") from exc
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
        f.flush()
        os.fsync(f.fileno())
    return token


def _read_token(path: Path) -> str:
    try:
        if stat.S_IMODE(path.stat().st_mode) != 0o600:
            os.chmod(path, 0o600)
        token = path.read_text().strip()
    except OSError as exc:
        raise TokenFileError(f"cannot read the HTTP token {path}: {exc}") from exc
    if len(token) < 32:
        raise TokenFileError(
            f"the HTTP token in {path} is shorter than 32 characters; delete the file "
            "and restart for a new one"
        )
    return token


def allowed_hosts(host: str, port: int, extra: Iterable[str] = ()) -> frozenset[str]:
    """Host header values accepted for a server bound to ``host:port``."""
    names = {host, "localhost", *extra}
    if host in ("0.0.0.0", "::", "[::]"):
        names |= {"127.0.0.1", "[::1]"}
    if host in ("127.0.0.1", "::1", "[::1]"):
        names |= {"127.0.0.1", "[::1]"}
    out = set()
    for name in names:
        name = name.lower()
        if ":" in name and not name.startswith("["):
            name = f"[{name}]"  # a bare IPv6 address
        out.add(f"{name}:{port}")
        if port == 80:
            out.add(name)
    return frozenset(out)


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


async def _refuse(send: Send, status: int, code: str, message: str, html: bool) -> None:
    headers = [(b"cache-control", b"no-store")]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="personad"'))
    if html:
        body = (
            "<!doctype html><meta charset=utf-8><meta name=viewport "
            'content="width=device-width,initial-scale=1"><title>personad: refused</title>'
            f"<h1>{status}: refused</h1><p id=refused>{message}</p>"
        ).encode()
        headers.append((b"content-type", b"text/html; charset=utf-8"))
    else:
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        headers.append((b"content-type", b"application/json"))
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware in front of the whole app: Host, token, origin."""

    def __init__(self, app: Any, token: str, hosts: frozenset[str], port: int) -> None:
        self.app = app
        self.token = token
        self.hosts = hosts
        self.cookie = COOKIE.format(port=port)
        self.origins = frozenset(f"http://{h}" for h in hosts)

    def _matches(self, candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(
            candidate.encode(), self.token.encode()
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        html = not scope["path"].startswith("/api/")
        host = headers.get("host", "").lower()
        if host not in self.hosts:
            await _refuse(send, 403, "bad_host", f"unknown host {host!r}", html)
            return
        bearer = headers.get("authorization", "")
        by_header = bearer[:7].lower() == "bearer " and self._matches(bearer[7:].strip())
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:
            cookie = SimpleCookie()
        by_cookie = self.cookie in cookie and self._matches(cookie[self.cookie].value)
        method = scope["method"]
        if scope["path"] == "/" and method == "GET" and not (by_header or by_cookie):
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            if self._matches((query.get("token") or [None])[0]):
                await self._login(send)
                return
        if not (by_header or by_cookie):
            message = "a token is required: open the URL that `personad dashboard` prints"
            await _refuse(send, 401, "unauthorized", message, html)
            return
        if method not in SAFE_METHODS:
            origin = headers.get("origin")
            site = headers.get("sec-fetch-site")
            cross = (origin is not None and origin.lower() not in self.origins) or (
                site is not None and site not in ("same-origin", "none")
            )
            if cross or (origin is None and not by_header):
                await _refuse(
                    send,
                    403,
                    "cross_origin",
                    "a request that changes state must come from the dashboard's own origin",
                    html,
                )
                return
        await self.app(scope, receive, send)

    async def _login(self, send: Send) -> None:
        """The token from the URL into a cookie, and away from the address bar."""
        cookie = f"{self.cookie}={self.token}; Path=/; HttpOnly; SameSite=Strict"
        await send(
            {
                "type": "http.response.start",
                "status": 303,
                "headers": [
                    (b"location", b"/"),
                    (b"set-cookie", cookie.encode()),
                    (b"cache-control", b"no-store"),
                    (b"content-length", b"0"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})

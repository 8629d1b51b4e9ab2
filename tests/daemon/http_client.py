"""A small HTTP client for the daemon's HTTP API in tests (the standard library's)."""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Api:
    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.url = url
        self.token = token

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = "",
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """``token=""``: the right token as a bearer header; None: no token."""
        sent = dict(headers or {})
        if token is not None:
            sent.setdefault("Authorization", f"Bearer {token or self.token}")
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            conn.request(method, path, body=data, headers=sent)
            response = conn.getresponse()
            return Answer(
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> Answer:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Answer:
        return self.request("POST", path, {} if body is None else body, **kw)

    def events(self, timeout: float = 10.0) -> EventStream:
        return EventStream(self, timeout)


class EventStream:
    """``GET /api/events``, read event by event."""

    def __init__(self, api: Api, timeout: float) -> None:
        self.conn = http.client.HTTPConnection(api.host, api.port, timeout=timeout)
        self.conn.request("GET", "/api/events", headers={"Authorization": f"Bearer {api.token}"})
        self.response = self.conn.getresponse()
        assert self.response.status == 200, self.response.read()
        self.content_type = self.response.getheader("content-type") or ""

    def next(self) -> tuple[str, Any]:
        name, data = "message", []
        while True:
            line = self.response.readline().decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
            elif not line and data:
                return name, json.loads("\n".join(data))
            elif not line and not self.response.fp:
                raise EOFError("the event stream ended")

    def until(self, predicate: Any, timeout: float) -> tuple[float, Any]:
        """Seconds until an event satisfies ``predicate(name, data)``, and its data."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            name, data = self.next()
            if predicate(name, data):
                return time.monotonic() - start, data
        raise AssertionError(f"no matching event in {timeout}s")

    def close(self) -> None:
        self.conn.close()

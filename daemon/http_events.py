"""Server-Sent Events for the dashboard: ingest counts and job progress as they change.

Each stream looks at a cheap fingerprint of the daemon (the ingest worker's counters, the
queue, the running jobs' live progress) a few times a second, in memory; only when it
changes, or every ``refresh_s`` (a rollback from the CLI, say), does it ask ``status``
and send the parts that changed:

    event: counts      {"daemon": {...}, "profiles": {...}}   (status without jobs)
    event: progress    {"jobs": [...]}                         (the queued and running jobs)

An idle daemon with a dashboard open sends a comment line every ``keepalive_s`` and
nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from daemon.control import Handler

TICK_S = 0.25
REFRESH_S = 10.0
KEEPALIVE_S = 15.0


def split_status(status: dict[str, Any]) -> dict[str, Any]:
    """``status`` as the two events (the uptime left out: it changes at every look)."""
    daemon = {k: v for k, v in status["daemon"].items() if k != "uptime_s"}
    return {
        "counts": {"daemon": daemon, "profiles": status["profiles"]},
        "progress": {"jobs": status["jobs"]},
    }


def event(name: str, data: str) -> bytes:
    return f"event: {name}\ndata: {data}\n\n".encode()


class EventFeed:
    def __init__(
        self,
        status: Handler,
        fingerprint: Callable[[], Any],
        stopping: asyncio.Event,
        *,
        tick_s: float = TICK_S,
        refresh_s: float = REFRESH_S,
        keepalive_s: float = KEEPALIVE_S,
    ) -> None:
        self.status = status
        self.fingerprint = fingerprint
        self.stopping = stopping
        self.tick_s = tick_s
        self.refresh_s = refresh_s
        self.keepalive_s = keepalive_s

    async def stream(self) -> AsyncIterator[bytes]:
        sent: dict[str, str] = {}
        seen: Any = object()
        looked = sent_at = time.monotonic()
        yield b"retry: 2000\n\n"
        while not self.stopping.is_set():
            now = time.monotonic()
            mark = self.fingerprint()
            if mark != seen or now - looked >= self.refresh_s:
                seen, looked = mark, now
                parts = split_status(await self.status({}))
                for name, part in parts.items():
                    data = json.dumps(part, default=str, sort_keys=True)
                    if sent.get(name) != data:
                        sent[name] = data
                        sent_at = now
                        yield event(name, data)
            if now - sent_at >= self.keepalive_s:
                sent_at = now
                yield b": keep-alive\n\n"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.tick_s)

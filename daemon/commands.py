"""The control socket's commands. Each is also a `personad` subcommand."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, TypeVar

from daemon.control import CommandError, Handler
from services.ledger import Ledger

if TYPE_CHECKING:
    from daemon.app import Daemon

T = TypeVar("T")


def package_version() -> str:
    try:
        return version("personad")
    except PackageNotFoundError:
        return "unknown"


def _str_arg(args: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = args.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise CommandError("bad_args", f"'{name}' must be a non-empty string")
    return value


def _int_arg(args: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = args.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise CommandError("bad_args", f"'{name}' must be an integer from {lo} to {hi}")
    return value


class Commands:
    """Handlers run blocking work (ledger, index) on a small thread pool; each pool
    thread has its own ledger connection."""

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="control")
        self._local = threading.local()
        self._ledgers: list[Ledger] = []
        self._ledgers_lock = threading.Lock()

    def handlers(self) -> dict[str, Handler]:
        return {
            "ping": self.ping,
            "status": self.status,
            "search": self.search,
            "rejects": self.rejects,
            "reindex": self.reindex,
        }

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._ledgers_lock:
            for ledger in self._ledgers:
                ledger.close()
            self._ledgers.clear()

    def _ledger(self) -> Ledger:
        ledger = getattr(self._local, "ledger", None)
        if ledger is None:
            ledger = Ledger(self.d.settings.ledger_path, migrate=False)
            self._local.ledger = ledger
            with self._ledgers_lock:
                self._ledgers.append(ledger)
        return ledger

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def _known_profile(self, profile: str) -> None:
        if profile not in self._ledger().profiles():
            known = ", ".join(self._ledger().profiles()) or "none yet"
            raise CommandError(
                "unknown_profile",
                f"no profile {profile!r} (known: {known}); drop memories into "
                f"{self.d.settings.profiles / profile / 'memory'} to create it",
            )

    # -- commands ---------------------------------------------------------------
    async def ping(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"pong": True, "pid": os.getpid(), "version": package_version()}

    async def status(self, args: dict[str, Any]) -> dict[str, Any]:
        counts, stats = await self._run(
            lambda: (self._ledger().profile_counts(), self._ledger().sample_stats())
        )
        d = self.d
        profiles: dict[str, Any] = {}
        for name, c in sorted(counts.items()):
            st = stats.get(name, {})
            profiles[name] = {
                "memories": c["memories"],
                "rejects": c["rejects"],
                "indexed": c["indexed"],
                "samples": c["samples"],
                "eligible_samples": c["eligible"],
                "eligible_by_mode": st.get("by_mode", {}),
                "quality": st.get("quality"),
                "since_last_training": st.get("since_last_training", 0),
                "active_version": None,
                "last_ingest_at": c["last_ingest_at"],
                "queue": d.queue.depth(name),
            }
        worker = d.worker
        return {
            "daemon": {
                "pid": os.getpid(),
                "version": package_version(),
                "uptime_s": round(time.monotonic() - d.started_monotonic, 3),
                "state": d.state,
                "state_dir": str(d.settings.state_dir),
                "profiles_dir": str(d.settings.profiles),
                "socket": str(d.settings.socket_file),
                "config_file": str(d.settings.config_file) if d.settings.config_file else None,
                "ingest": {
                    "state": worker.state if worker else "stopped",
                    "queue": d.queue.depth(),
                    "files_read": worker.files_done if worker else 0,
                    "scans": worker.scans_done if worker else 0,
                    "last_error": worker.last_error if worker else None,
                },
            },
            "profiles": profiles,
            "jobs": [],
            "schedules": [],
        }

    async def search(self, args: dict[str, Any]) -> dict[str, Any]:
        profile = _str_arg(args, "profile")
        query = _str_arg(args, "query")
        k = _int_arg(args, "k", 5, 1, 100)
        assert profile is not None and query is not None
        index = self.d.index
        if index is None:
            raise CommandError("unavailable", "the vector index is not available")

        def run() -> dict[str, Any]:
            self._known_profile(profile)
            hits = index.search(profile, query, k=k)
            return {
                "results": [
                    {
                        "id": h.id,
                        "score": round(float(h.score), 6),
                        "text": h.text,
                        "type": h.metadata.get("type"),
                        "mode": h.metadata.get("mode") or None,
                        "timestamp": h.metadata.get("timestamp") or None,
                        "source": h.metadata.get("source"),
                    }
                    for h in hits
                ]
            }

        return await self._run(run)

    async def rejects(self, args: dict[str, Any]) -> dict[str, Any]:
        profile = _str_arg(args, "profile", required=False)
        limit = _int_arg(args, "limit", 200, 1, 10_000)
        rows = await self._run(lambda: self._ledger().rejects(profile, limit=limit))
        return {"rejects": rows}

    async def reindex(self, args: dict[str, Any]) -> dict[str, Any]:
        profile = _str_arg(args, "profile")
        assert profile is not None
        await self._run(lambda: self._known_profile(profile))
        worker = self.d.worker
        if worker is None or self.d.index is None:
            raise CommandError("unavailable", "the ingest worker is not running")
        started = time.monotonic()
        count = await asyncio.wrap_future(worker.request_reindex(profile))
        return {
            "profile": profile,
            "indexed": count,
            "seconds": round(time.monotonic() - started, 3),
        }

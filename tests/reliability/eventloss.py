"""Lost file events: the reconcile scan must recover every file.

Two ways of losing events, each against the real daemon (fake-Ollama embeddings):

- :func:`run_event_loss`: the watcher's fault-injection hook (``PERSONAD_FAULT_DROP_EVENTS``,
  see daemon/watcher.py) drops every event of a fraction of the files, which then reach
  the ledger only through the periodic reconcile scan;
- :func:`run_overflow`: a real inotify overflow, with the kernel's per-instance event
  queue (``/proc/sys/fs/inotify/max_queued_events``) lowered while the daemon creates its
  inotify instance, and a burst of files; the overflow must be logged and the scan it
  triggers must recover every file long before the next periodic scan.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.daemon_process import DaemonProcess
from tests.reliability.stateful import (
    FAST_INGEST,
    LedgerView,
    daemon_env,
    fake_ollama,
    memory_ids_of,
)

PROFILE = "loss"
SETTLE_S = float(FAST_INGEST["PERSONAD_INGEST__SETTLE_S"])
# Beyond the reconcile interval and the settle time: the scan, the read and the poll.
SLACK_S = 3.0
MAX_QUEUED_EVENTS = Path("/proc/sys/fs/inotify/max_queued_events")
DROPPED_LINE = "fault injection: file event dropped"
OVERFLOW_LINE = "inotify queue overflowed"


def _record(i: int, tag: str) -> bytes:
    rec = {"prompt": f"{tag} question number {i}?", "response": f"{tag} answer number {i}."}
    return (json.dumps(rec) + "\n").encode()


def _log_events(daemon: DaemonProcess) -> list[dict[str, Any]]:
    out = []
    for line in daemon.log().splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"max": None, "median": None}
    return {"max": round(max(values), 3), "median": round(statistics.median(values), 3)}


def inotify_limit_unwritable() -> str | None:
    """Why the kernel's inotify queue limit cannot be lowered here, or None."""
    if os.geteuid() != 0:
        return "lowering /proc/sys/fs/inotify/max_queued_events needs root"
    if not os.access(MAX_QUEUED_EVENTS, os.W_OK):
        return f"{MAX_QUEUED_EVENTS} is not writable (read-only /proc/sys?)"
    return None


@contextmanager
def _lowered_inotify_queue(limit: int | None) -> Iterator[None]:
    """The kernel limit set to ``limit`` until the caller's inotify instance exists.

    The limit is global and is read when an instance is created, so the window is kept
    to the daemon's start; it is restored in every case."""
    if limit is None:
        yield
        return
    old = MAX_QUEUED_EVENTS.read_text().strip()
    MAX_QUEUED_EVENTS.write_text(str(limit))
    try:
        yield
    finally:
        MAX_QUEUED_EVENTS.write_text(old)


def _ingest_run(
    root: Path,
    *,
    files: int,
    files_per_s: float | None,
    env: dict[str, str],
    reconcile_interval_s: float,
    wait_s: float,
    inotify_queue: int | None = None,
) -> dict[str, Any]:
    started = time.monotonic()
    with fake_ollama() as fake:
        d = DaemonProcess(
            root,
            env=daemon_env(
                fake.url,
                PERSONAD_INGEST__RECONCILE_INTERVAL_S=str(reconcile_interval_s),
                **env,
            ),
        )
        memdir = d.profiles_dir / PROFILE / "memory"
        memdir.mkdir(parents=True)
        ledger = LedgerView.of(d)
        try:
            with _lowered_inotify_queue(inotify_queue):
                d.start()
            d.wait_for(lambda: d.call("status")["daemon"]["ingest"]["scans"] >= 1, timeout=60)
            burst_at = time.time()
            created: dict[str, float] = {}
            expected: set[str] = set()
            for i in range(files):
                path = memdir / f"file-{i:04d}.jsonl"
                data = _record(i, root.name)
                path.write_bytes(data)
                created[str(path)] = time.time()
                expected |= memory_ids_of(path.name, data)
                if files_per_s:
                    time.sleep(max(0.0, burst_at + (i + 1) / files_per_s - time.time()))
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                if len(ledger.file_first_seen()) >= files:
                    break
                time.sleep(0.05)
            seen = {p: _epoch(t) for p, t in ledger.file_first_seen().items() if p in created}
            ids = set(ledger.memory_ids(PROFILE))
            status = d.call("status")
        finally:
            rc = d.stop(timeout=20)
    events = _log_events(d)
    dropped = [e for e in events if e.get("event") == DROPPED_LINE]
    missed = {e["path"] for e in dropped}
    overflow = [e for e in events if str(e.get("event", "")).startswith(OVERFLOW_LINE)]
    kernel_overflow = [
        e
        for e in events
        if str(e.get("logger", "")).startswith("watchdog")
        and "events were lost" in str(e.get("event", ""))
    ]
    scans = [
        e
        for e in events
        if e.get("event") == "reconcile scan" and _epoch(e["timestamp"]) >= burst_at
    ]
    latency = {p: seen[p] - created[p] for p in seen}
    recovered = [latency[p] for p in missed if p in latency]
    by_event = [v for p, v in latency.items() if p not in missed]
    return {
        "files": files,
        "reconcile_interval_s": reconcile_interval_s,
        "settle_s": SETTLE_S,
        "recovery_bound_s": reconcile_interval_s + SETTLE_S + SLACK_S,
        "events_dropped": len(dropped),
        "files_missed": len(missed),
        "files_recovered": len(recovered),
        "files_ingested": len(seen),
        "files_lost": sorted(Path(p).name for p in set(created) - set(seen)),
        "memories_expected": len(expected),
        "memories_missing": len(expected - ids),
        "recovery_s": _summary(recovered),
        "recovery_s_each": sorted(round(v, 3) for v in recovered),
        "event_latency_s": _summary(by_event),
        "latency_s": _summary(list(latency.values())),
        "overflow_seen": bool(overflow),
        "overflow_scans_requested": len(overflow),
        "kernel_overflows": len(kernel_overflow),
        "scans_after_writes": len(scans),
        "files_queued_by_scans": sum(int(e.get("queued", 0)) for e in scans),
        "queue_at_end": status["daemon"]["ingest"]["queue"],
        "exit_code": rc,
        "seconds": round(time.monotonic() - started, 1),
    }


def run_event_loss(
    root: Path,
    files: int = 30,
    drop_rate: float = 0.3,
    seed: int = 1,
    *,
    files_per_s: float = 10.0,
    reconcile_interval_s: float = 5.0,
) -> dict[str, Any]:
    """Drop every event of ``drop_rate`` of the files; full size for the bench: files=300,
    drop_rate=0.3, seed=1, files_per_s=20, reconcile_interval_s=5."""
    figures = _ingest_run(
        root,
        files=files,
        files_per_s=files_per_s,
        env={"PERSONAD_FAULT_DROP_EVENTS": str(drop_rate), "PERSONAD_FAULT_SEED": str(seed)},
        reconcile_interval_s=reconcile_interval_s,
        wait_s=reconcile_interval_s + SETTLE_S + SLACK_S + 5.0,
    )
    return {"drop_rate": drop_rate, "seed": seed, **figures}


def run_overflow(
    root: Path,
    files: int = 300,
    max_queued_events: int = 16,
    *,
    reconcile_interval_s: float = 300.0,
    wait_s: float = 20.0,
) -> dict[str, Any]:
    """A burst of ``files`` into a daemon whose inotify queue holds ``max_queued_events``;
    full size for the bench: files=3000, max_queued_events=16. Needs root (see
    :func:`inotify_limit_unwritable`). The periodic scan is far off
    (``reconcile_interval_s``), so only the scan the overflow triggers can recover files."""
    figures = _ingest_run(
        root,
        files=files,
        files_per_s=None,
        env={},
        reconcile_interval_s=reconcile_interval_s,
        wait_s=wait_s,
        inotify_queue=max_queued_events,
    )
    return {"max_queued_events": max_queued_events, **figures}

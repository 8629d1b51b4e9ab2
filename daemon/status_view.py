"""`personad status --watch`: a live terminal view that survives daemon restarts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from daemon.client import ClientError, ControlClient
from daemon.render import _duration, _progress_text, console


def snapshot(socket_path: Path) -> dict[str, Any]:
    with ControlClient(socket_path, timeout=10) as client:
        status = client.call("status")
        status["recent_rejects"] = client.call("rejects", {"limit": 5})["rejects"]
        return dict(status)


def view(status: dict[str, Any] | None, error: str | None = None) -> Group:
    if status is None:
        return Group(Text(f"personad: {error}; retrying...", style="yellow"))
    d = status["daemon"]
    head = Text.assemble(
        (f"personad {d['version']}", "bold"),
        f"  pid {d['pid']}  {d['state']}  up {_duration(d['uptime_s'])}",
        ("  PAUSED" if d.get("paused") else "", "yellow"),
        f"  ingest queue {d.get('ingest', {}).get('queue', 0)}",
    )
    profiles = Table(
        "profile",
        "memories",
        "indexed",
        "rejects",
        "eligible",
        "since last",
        "version",
        "queue",
        expand=True,
    )
    for name, p in (status.get("profiles") or {}).items():
        profiles.add_row(
            name + (" (paused)" if p.get("paused") else ""),
            str(p["memories"]),
            str(p["indexed"]),
            str(p["rejects"]),
            str(p.get("eligible_samples", 0)),
            str(p.get("since_last_training", 0)),
            str(p.get("active_version") or "-"),
            str(p.get("queue", 0)),
        )
    parts: list[Any] = [head, profiles]
    for job in status.get("jobs") or []:
        prog = job.get("progress") or {}
        total = prog.get("total_steps")
        line = Text(
            f"job {job['id']} {job['profile']} {job['kind']} {job['state']}{_progress_text(prog)}"
        )
        parts.append(line)
        if total:
            # In a grid row: a bare ProgressBar ends without a line break.
            bar = Table.grid(padding=(0, 1))
            step = prog.get("step", 0)
            bar.add_row(
                ProgressBar(total=total, completed=step, width=60), f"{100 * step / total:.0f}%"
            )
            parts.append(bar)
    for sched in status.get("schedules") or []:
        parts.append(
            Text(
                f"schedule {sched['kind']} ({sched['cron']}): next {sched['next_run']}", style="dim"
            )
        )
    rejects = status.get("recent_rejects") or []
    if rejects:
        table = Table("recent rejects", "reason", expand=True, show_lines=False)
        for r in rejects:
            table.add_row(f"{r['profile']}: {Path(r['path']).name}", r["reason"][:120])
        parts.append(table)
    return Group(Panel(Group(*parts), title="personad status", border_style="blue"))


def watch(socket_path: Path, interval: float = 1.0, iterations: int | None = None) -> int:
    """Refresh every ``interval`` seconds until interrupted (or ``iterations`` refreshes)."""
    count = 0
    # Ctrl-C or SIGTERM (daemon.interrupt.Interrupted) leaves through Live, which puts
    # the terminal back; the CLI says it stopped.
    with Live(view(None, "connecting"), console=console, refresh_per_second=4) as live:
        while iterations is None or count < iterations:
            try:
                live.update(view(snapshot(socket_path)))
            except ClientError as exc:
                live.update(view(None, str(exc)))
            count += 1
            time.sleep(interval)
    return 0

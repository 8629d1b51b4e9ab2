"""Printing command results for people (rich tables on a terminal)."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(highlight=False)


def ping(result: dict[str, Any], args: argparse.Namespace) -> None:
    console.print(f"personad {result['version']} answers (pid {result['pid']})")


def status(result: dict[str, Any], args: argparse.Namespace) -> None:
    d = result["daemon"]
    ingest = d.get("ingest", {})
    console.print(
        f"[bold]personad {d['version']}[/bold]  pid {d['pid']}  {d['state']}  "
        f"up {_duration(d['uptime_s'])}"
    )
    console.print(f"  state    {d['state_dir']}")
    console.print(f"  profiles {d['profiles_dir']}")
    console.print(
        f"  ingest   {ingest.get('state')}, queue {ingest.get('queue', 0)}, "
        f"files read {ingest.get('files_read', 0)}"
        + (f", [red]{ingest['last_error']}[/red]" if ingest.get("last_error") else "")
    )
    profiles = result.get("profiles") or {}
    if not profiles:
        console.print(f"  no profiles yet: drop files into {d['profiles_dir']}/<profile>/memory/")
    else:
        table = Table(
            "profile",
            "memories",
            "indexed",
            "rejects",
            "samples",
            "eligible",
            "queue",
            "last ingest",
        )
        for name, p in profiles.items():
            table.add_row(
                name,
                str(p["memories"]),
                str(p["indexed"]),
                str(p["rejects"]),
                str(p["samples"]),
                str(p.get("eligible_samples", "")),
                str(p.get("queue", 0)),
                p.get("last_ingest_at") or "-",
            )
        console.print(table)
    jobs = result.get("jobs") or []
    for job in jobs:
        console.print(f"  job {job['id']} {job['profile']} {job['kind']} {job['state']}")


def search(result: dict[str, Any], args: argparse.Namespace) -> None:
    hits = result.get("results") or []
    if not hits:
        console.print("no matching memories")
        return
    for i, h in enumerate(hits, 1):
        text = " ".join(str(h["text"]).split())
        if len(text) > 300:
            text = text[:297] + "..."
        meta = ", ".join(str(v) for v in (h.get("type"), h.get("mode"), h.get("timestamp")) if v)
        console.print(f"[bold]{i}.[/bold] {h['score']:.3f}  [dim]{meta}[/dim]")
        console.print(f"   {text}", markup=False)
        console.print(f"   [dim]{h.get('source')}[/dim]")


def rejects(result: dict[str, Any], args: argparse.Namespace) -> None:
    rows = result.get("rejects") or []
    if not rows:
        console.print("no rejects")
        return
    for r in rows:
        where = f" ({r['locator']})" if r.get("locator") else ""
        console.print(f"[bold]{r['profile']}[/bold] {r['path']}{where}", markup=True)
        console.print(f"   {r['reason']}", markup=False)


def reindex(result: dict[str, Any], args: argparse.Namespace) -> None:
    console.print(
        f"re-indexed {result['indexed']} memories of {result['profile']} in {result['seconds']}s"
    )


def dataset(summary: dict[str, Any], out_dir: Any) -> None:
    ds, m = summary["dataset"], summary["metrics"]
    counts = ds["counts"]
    console.print(f"[bold]dataset[/bold] {out_dir}")
    console.print("  samples  " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if ds.get("excluded_by_reason"):
        console.print(
            "  excluded " + ", ".join(f"{k} {v}" for k, v in ds["excluded_by_reason"].items())
        )
    console.print(
        f"  schema   {ds['schema'].get('family')} ({ds['schema'].get('template_source')})"
    )
    console.print(
        f"  quality  avg assistant length {m['avg_assistant_words']} words, "
        f"short {m['short_share']:.0%}, long {m['long_share']:.0%}, filler {m['filler_share']:.0%}"
    )
    modes = m.get("modes") or {}
    console.print(
        "  modes    "
        + (", ".join(f"{k} {v['count']} ({v['share']:.0%})" for k, v in modes.items()) or "none")
    )
    for name, ind in (m.get("indicators") or {}).items():
        mark = "[green]good[/green]" if ind.get("good") else "[yellow]check[/yellow]"
        console.print(f"  {mark}     {name}: {ind.get('value')} (target {ind.get('target')})")
    for warning in m.get("warnings") or []:
        console.print(f"  [yellow]warning[/yellow]  {warning}", markup=True)
    verdict = ds.get("contamination") or {}
    clean = not verdict.get("offenders")
    console.print("  contamination " + ("[green]none[/green]" if clean else "[red]found[/red]"))


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"

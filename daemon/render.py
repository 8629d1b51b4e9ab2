"""Printing command results for people (rich tables on a terminal)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from services.fidelity.summary import describe, describe_judge

console = Console(highlight=False)


def dashboard(result: dict[str, Any], args: Any) -> None:
    print(result["url"])


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
        for name, p in profiles.items():
            if p.get("active_version"):
                fidelity = describe(p.get("active_fidelity"))
                console.print(f"  {name} {p['active_version']}: {fidelity}")
    for sched in result.get("schedules") or []:
        console.print(f"  schedule {sched['kind']} ({sched['cron']}): next {sched['next_run']}")
    jobs = result.get("jobs") or []
    for job in jobs:
        console.print(
            f"  job {job['id']} {job['profile']} {job['kind']} {job['state']}"
            f"{_progress_text(job.get('progress'))}"
        )


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
    tok = m.get("tokens") or {}
    if tok.get("samples"):
        console.print(
            f"  tokens   min {tok['min']}, avg {tok['avg']}, max {tok['max']} per sample "
            f"({tok['tokenizer']})"
        )
    colours = {"good": "green", "fair": "yellow", "bad": "red"}
    for name, ind in (m.get("indicators") or {}).items():
        tier = ind.get("tier") or ("good" if ind.get("good") else "fair")
        mark = f"[{colours.get(tier, 'yellow')}]{tier:<4}[/{colours.get(tier, 'yellow')}]"
        bad = f", bad {ind['bad']}" if ind.get("bad") else ""
        console.print(f"  {mark}     {name}: {ind.get('value')} (good {ind.get('target')}{bad})")
    for warning in m.get("warnings") or []:
        console.print(f"  [yellow]warning[/yellow]  {warning}", markup=True)
    verdict = ds.get("contamination") or {}
    clean = not verdict.get("offenders")
    console.print("  contamination " + ("[green]none[/green]" if clean else "[red]found[/red]"))


def _progress_text(p: dict[str, Any] | None) -> str:
    if p and p.get("phase") == "downloading" and p.get("download"):
        d = p["download"]
        if not d.get("total_bytes"):
            return f"  downloading {d['repo']}"
        done, total = d["done_bytes"] / 1e9, d["total_bytes"] / 1e9
        return f"  downloading {d['repo']}: {done:.2f} of {total:.2f} GB"
    if p and p.get("plan") and "total_steps" not in p:
        from services.training.job_memory import summary

        return f"  {p.get('phase', 'starting')}: {summary(p['plan'])}"
    if not p or "total_steps" not in p:
        return f"  {p.get('phase')}" if p and p.get("phase") else ""
    parts = [f"  step {p.get('step', 0)}/{p['total_steps']}"]
    if p.get("loss") is not None:
        parts.append(f"loss {p['loss']:.4f}")
    if p.get("eval_loss") is not None:
        parts.append(f"eval {p['eval_loss']:.4f}")
    if p.get("eta_s") is not None:
        parts.append(f"eta {_duration(p['eta_s'])}")
    if p.get("plan"):
        parts.append(f"{p['plan']['strategy']} ~{p['plan']['peak_gib']:.1f} GiB")
    return ", ".join(parts)


def jobs(result: dict[str, Any], args: argparse.Namespace) -> None:
    rows = result.get("jobs") or []
    if not rows:
        console.print("no jobs")
        return
    table = Table("id", "profile", "kind", "mode", "state", "progress", "reason", "created")
    for j in rows:
        table.add_row(
            str(j["id"]),
            j["profile"],
            j["kind"],
            j.get("mode") or "-",
            j["state"],
            _progress_text(j.get("progress")).strip(),
            j.get("reason") or "",
            j["created_at"][:19],
        )
    console.print(table)


def paused(result: dict[str, Any], args: argparse.Namespace) -> None:
    what = result["profile"] or "all profiles"
    console.print(f"{what}: {'paused (ingest goes on)' if result['paused'] else 'resumed'}")


def versions(result: dict[str, Any], args: argparse.Namespace) -> None:
    rows = result.get("versions") or []
    if not rows:
        console.print(f"{result['profile']}: nothing published yet")
        return
    table = Table("version", "kind", "job", "created", "ollama", "recall", "+memories", "style", "")
    for v in rows:
        fidelity = v.get("fidelity") or {}
        table.add_row(
            f"v{v['version']}",
            v["kind"],
            str(v.get("job_id") or "-"),
            str(v["created_at"])[:19],
            v.get("ollama_model") or "-",
            _pct(fidelity.get("recall")),
            _pct(fidelity.get("recall_with_retrieval")),
            _pct(fidelity.get("transfer")),
            "[bold green]active[/bold green]" if v["active"] else "",
        )
    console.print(table)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{value:.0%}"


def rolled_back(result: dict[str, Any], args: argparse.Namespace) -> None:
    before = f"v{result['from']}" if result.get("from") else "none"
    console.print(f"{result['profile']}: active model {before} -> v{result['active']}")


def ask(result: dict[str, Any], args: argparse.Namespace) -> None:
    for m in result.get("memories") or []:
        text = " ".join(str(m["text"]).split())
        console.print(f"[dim]memory {m['score']:.2f}: {text[:100]}[/dim]", markup=True)
    for label, answer in (result.get("answers") or {}).items():
        name = f"{result['profile']} {label}" if label != "base" else "base model"
        console.print(f"[bold]{name}[/bold] ({answer['seconds']:.1f}s):")
        console.print(f"  {answer['text'] or '(no answer)'}", markup=False)


def evaluated(result: dict[str, Any], args: argparse.Namespace) -> None:
    """``eval``: one line per model (the base, then the version), the check, the LLM
    judge's line (when ``eval.judge_model`` is set), the run dir."""
    fidelity = result.get("fidelity") or {}
    probes = fidelity.get("probes")
    console.print(
        f"[bold]{result['profile']} {result['version']}[/bold] against the base model"
        + (f", {probes} probes" if probes is not None else ""),
        markup=True,
    )
    console.print(f"  base: {describe(fidelity.get('reference'))}", markup=False)
    console.print(f"  {result['version']}: {describe(fidelity)}", markup=False)
    check = result.get("check") or {}
    if check.get("summary"):
        mark = "[green]ok[/green]" if check.get("passed") else "[yellow]below the base[/yellow]"
        console.print(f"  {mark} {escape(str(check['summary']))}", markup=True)
    judged = describe_judge(result.get("judge"), ("base", str(result["version"])))
    if judged:
        console.print(f"  {judged}", markup=False)
    console.print(f"  run dir {result['run_dir']}", markup=False)


def cancel(result: dict[str, Any], args: argparse.Namespace) -> None:
    console.print(f"job {result['job']}: {result['state']}")


def follow_job(
    fetch: Callable[[], dict[str, Any]], quiet: bool = False, interval: float = 0.5
) -> dict[str, Any]:
    """Poll a job until it ends, with a progress bar (loss, ETA) unless quiet."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    )
    # Off a terminal (logs, CI) the bar is drawn only at the end: print a line per change.
    plain = not quiet and not console.is_terminal
    last_line = ""
    with Progress(*columns, console=console, disable=quiet or plain, transient=False) as bar:
        task = bar.add_task("queued", total=None, info="")
        while True:
            job = fetch()
            p = job.get("progress") or {}
            if plain:
                detail = _progress_text(p).strip()
                line = f"job {job['id']} {job['state']}" + (f": {detail}" if detail else "")
                key = line.split(", eta")[0]
                if key != last_line:
                    console.print(f"    {line}", markup=False)
                    last_line = key
            if p.get("total_steps"):
                info = _progress_text(p).split(", ", 1)[1] if p.get("loss") is not None else ""
                bar.update(
                    task,
                    total=p["total_steps"],
                    completed=p.get("step", 0),
                    description=f"job {job['id']} training",
                    info=info,
                )
            else:
                what = p.get("phase") or job["state"]
                if what == "downloading":
                    what = _progress_text(p).strip()
                bar.update(task, description=f"job {job['id']} {what}")
            if job["state"] not in ("queued", "running"):
                break
            time.sleep(interval)
    if not quiet:
        reason = f": {job['reason']}" if job.get("reason") else ""
        console.print(f"job {job['id']} {job['state']}{reason}")
        if job.get("run_dir"):
            console.print(f"  run dir {job['run_dir']}")
    return job


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"

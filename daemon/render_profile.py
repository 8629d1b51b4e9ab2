"""Printing for people: a training job's summary (``train``, ``train --dry-run``), a
profile's statistics (``stats``) and a remembered pair (``remember``)."""

from __future__ import annotations

import argparse
from typing import Any

from daemon.render import console


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def summary_lines(s: dict[str, Any]) -> list[str]:
    """The job summary as lines for people."""
    if s.get("error"):
        return [f"  (no summary: {s['error']})"]
    m, d = s["model"], s["dataset"]
    lines = [
        f"  model    {m['base']}: {m['params'] / 1e9:.2f}B parameters, {m['category']}",
        *([f"  warning  {m['warning']}"] if m.get("warning") else []),
        f"  dataset  {d['train']} training + {d['eval']} held-out samples"
        + (" (the whole eligible corpus)" if d.get("all") else " (new since the last training")
        + ("" if d.get("all") else f", {d.get('replayed') or 0} replayed)")
        + f", task {d.get('task_type') or '-'}"
        + (
            " (" + ", ".join(f"{k} {n}" for k, n in d["task_types"].items()) + ")"
            if len(d.get("task_types") or {}) > 1
            else ""
        ),
        f"  run      {s['kind']}, mode {s.get('mode') or 'all'}, preset {s['preset']}"
        + (f", published as {s['name']}" if s.get("name") else ""),
    ]
    settings = ", ".join(
        f"{k} {_value(v['value'])} ({v['source']})" for k, v in s["hyperparameters"].items()
    )
    lines.append(f"  settings {settings}")
    plan = s.get("plan")
    if plan:
        lines.append(
            f"  memory   {plan['strategy']}: ~{plan['peak_gib']:.1f} GiB of "
            f"{plan['device_gib']:.0f} GiB ({plan['device']})"
            + ("" if plan.get("fits", True) else f": does not fit. {plan.get('reason', '')}")
        )
    lines.append(f"  time     about {_duration(float(s['estimate_s']))} ({s['steps']} steps)")
    if s.get("skip"):
        lines.append(f"  skipped  {s['skip']}")
    return lines


def train(result: dict[str, Any], args: argparse.Namespace) -> None:
    if result.get("dry_run"):
        console.print("dry run: nothing queued", markup=False)
    else:
        job = result["job"]
        verb = "queued" if result["created"] else f"already {job['state']} (coalesced)"
        console.print(f"job {job['id']}: {job['kind']} for {job['profile']} {verb}", markup=False)
        if result.get("coalesced"):
            console.print(f"  {result['coalesced']}", markup=False)
    for line in summary_lines(result.get("summary") or {"error": "none given"}):
        console.print(line, markup=False)


def finished(job: dict[str, Any]) -> None:
    """After ``train --wait``: what the job used and made."""
    r = job.get("result") or {}
    parts = []
    if r.get("examples") is not None:
        parts.append(f"{r['examples']} examples")
    if r.get("training_seconds") is not None:
        parts.append(f"{r['training_seconds']:.1f} s of training")
    if r.get("model_size_bytes") is not None:
        parts.append(f"model {r['model_size_bytes'] / 1e6:.1f} MB")
    if parts:
        console.print("  " + ", ".join(parts), markup=False)


def stats(result: dict[str, Any], args: argparse.Namespace) -> None:
    q = result["quality_scores"]
    genres = result["genre_preferences"]
    lines = [
        f"{result['profile']}",
        f"  training examples   {result['training_examples']}",
        f"  until next training {result['examples_until_next_training']}",
        f"  last fine-tune      {result['last_fine_tune'] or 'never'}",
        "  quality             "
        + (
            f"average {q['average']}, highest {q['highest']}, lowest {q['lowest']}"
            if q["average"] is not None
            else "-"
        ),
        "  genres              "
        + (", ".join(f"{k} {n}" for k, n in list(genres.items())[:10]) or "-"),
        f"  training steps      {result['total_training_steps']}",
        "  custom model        "
        + (result["custom_model_name"] if result["custom_model_exists"] else "none yet"),
    ]
    for line in lines:
        console.print(line, markup=False)


def remembered(result: dict[str, Any], args: argparse.Namespace) -> None:
    state = (
        "eligible for training"
        if result["eligible"]
        else f"not trained on: {result.get('excluded')}"
    )
    console.print(
        f"remembered {result['memory_id'][:12]} for {result['profile']} "
        f"(quality {result['quality']:g}, {state})",
        markup=False,
    )
    console.print(f"  {result['path']}", markup=False)
    until = result.get("examples_until_next_training")
    if until is not None:
        console.print(f"  {until} more until the next training", markup=False)

"""Run reports: the loss curves as a PNG and a summary a person can read.

``write_report(run_dir)`` reads ``progress.jsonl``, ``run-summary.json`` and
``eval.json`` and writes ``report.png`` (training loss and eval loss by step, and beside
them the persona fidelity of the reference and the candidate when the gate measured it) and
``report.md`` next to them (or to ``out``), which also gives the LLM judge's figures when
one judged the run (``eval.json``'s ``fidelity_judge``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.durable import write_text
from services.errors import PersonadError
from services.fidelity.summary import describe, describe_judge, judge_summary, version_fidelity


class ReportError(PersonadError):
    """A run directory cannot be reported on."""


@dataclass(frozen=True)
class Report:
    run_dir: Path
    png: Path
    markdown: Path
    text: str


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ReportError(f"cannot read {path}: {exc}") from exc
    return value if isinstance(value, dict) else {}


def read_progress(run_dir: Path) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    try:
        lines = (run_dir / "progress.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return events
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def latest_run(state_dir: Path, profile: str) -> Path:
    """The newest run directory of a profile that has training progress."""
    runs = sorted(
        (p.parent for p in (state_dir / "runs" / profile).glob("*/*/progress.jsonl")),
        key=lambda p: p.stat().st_mtime,
    )
    if not runs:
        raise ReportError(f"profile {profile!r} has no training runs under {state_dir / 'runs'}")
    return runs[-1]


def latest_report(state_dir: Path, profile: str) -> str | None:
    found = sorted(
        (state_dir / "runs" / profile).glob("*/*/report.png"), key=lambda p: p.stat().st_mtime
    )
    return str(found[-1]) if found else None


def _plot_fidelity(ax: Any, fidelity: dict[str, Any]) -> None:
    """Bars: fact recall without and with memories, and style, of the reference and the
    candidate."""
    labels = ["recall", "recall with\nmemories", "style"]
    keys = ["recall", "recall_with_retrieval", "transfer"]
    reference = fidelity.get("reference") or {}
    width = 0.38
    for i, (name, values) in enumerate((("reference", reference), ("candidate", fidelity))):
        heights = [values.get(k) or 0.0 for k in keys]
        ax.bar([x + (i - 0.5) * width for x in range(len(keys))], heights, width, label=name)
    ax.set_xticks(range(len(keys)), labels)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share")
    ax.set_title(f"persona fidelity ({fidelity.get('probes')} probes)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend()


def _plot(
    events: list[dict[str, Any]], png: Path, title: str, fidelity: dict[str, Any] | None = None
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [
        (e["step"], e["loss"])
        for e in events
        if e.get("event") == "step" and isinstance(e.get("loss"), (int, float))
    ]
    evals = [
        (e["step"], e["eval_loss"])
        for e in events
        if e.get("event") == "eval" and isinstance(e.get("eval_loss"), (int, float))
    ]
    if fidelity is None:
        fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    else:
        fig, (ax, bars) = plt.subplots(
            1, 2, figsize=(13, 4.5), dpi=100, gridspec_kw={"width_ratios": [3, 2]}
        )
        _plot_fidelity(bars, fidelity)
    if steps:
        ax.plot([s for s, _ in steps], [v for _, v in steps], label="training loss", lw=1.5)
    if evals:
        ax.plot([s for s, _ in evals], [v for _, v in evals], "o-", label="eval loss", lw=1.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if steps or evals:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no loss recorded", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


def summarize(
    run_dir: Path,
    events: list[dict[str, Any]],
    summary: dict[str, Any],
    evaluation: dict[str, Any],
    published: str | None,
) -> str:
    start = next((e for e in events if e.get("event") == "start"), {})
    done = next((e for e in reversed(events) if e.get("event") == "done"), None)
    error = next((e for e in reversed(events) if e.get("event") == "error"), None)
    evals = [e for e in events if e.get("event") == "eval"]
    metrics = summary.get("metrics") or {}
    if done:
        outcome = "done"
    elif error:
        outcome = f"error: {error.get('message')}"
    else:
        outcome = "unfinished"
    gate = summary.get("gate") or evaluation or ((done or {}).get("metrics") or {}).get("gate")
    lines = [
        f"# Run report: {run_dir.name}",
        "",
        f"- run directory: `{run_dir}`",
        f"- kind: {start.get('kind', '-')}, device: {start.get('device', '-')}, "
        f"steps: {start.get('total_steps', '-')}, train/eval samples: "
        f"{start.get('n_train', '-')}/{start.get('n_eval', '-')}",
        f"- outcome: {outcome}",
    ]
    if evals:
        lines.append(
            f"- eval loss: {_fmt(evals[0].get('eval_loss'))} (step {evals[0].get('step')}) -> "
            f"{_fmt(evals[-1].get('eval_loss'))} (step {evals[-1].get('step')})"
        )
    lines += ["", "## Dataset quality", ""]
    if metrics:
        lines.append(
            f"- samples: {metrics.get('total')}, average response: "
            f"{metrics.get('avg_assistant_words')} words, "
            f"short: {_fmt(metrics.get('short_share'))}, long: {_fmt(metrics.get('long_share'))}, "
            f"filler: {_fmt(metrics.get('filler_share'))}"
        )
        modes = metrics.get("modes") or {}
        lines.append(
            "- modes: "
            + ", ".join(f"{k} {v.get('count')} ({_fmt(v.get('share'))})" for k, v in modes.items())
        )
        for warning in metrics.get("warnings") or []:
            lines.append(f"- warning: {warning}")
    else:
        lines.append("- no dataset summary")
    lines += ["", "## Gate", ""]
    if isinstance(gate, dict) and gate:
        verdict = "passed" if gate.get("passed") else "rejected"
        lines.append(f"- verdict: {verdict}: {gate.get('reason', '')}")
        for part in ("heldout", "regression"):
            numbers = gate.get(part)
            if isinstance(numbers, dict) and "candidate" in numbers:
                lines.append(
                    f"- {part} loss: reference {_fmt(numbers.get('reference'))}, "
                    f"candidate {_fmt(numbers.get('candidate'))}"
                )
    else:
        lines.append("- no gate verdict recorded")
    lines += ["", "## Persona fidelity", ""]
    fidelity = version_fidelity(gate) if isinstance(gate, dict) else None
    if fidelity is not None:
        lines.append(f"- candidate: {describe(fidelity)}")
        lines.append(
            f"- reference ({fidelity.get('transfer_against')}): {describe(fidelity['reference'])}"
        )
        check = "passed" if fidelity.get("passed") else "failed"
        lines.append(f"- probes: {fidelity.get('probes')}; check {check}")
    else:
        lines.append("- not measured")
    judged = evaluation.get("fidelity_judge")
    if isinstance(judged, dict):
        summary = judge_summary(judged)
        against = summary.get("against")
        reference = f"reference ({against})" if against else "reference"
        lines.append(
            f"- {describe_judge(summary, (reference, 'candidate'))} (not part of the verdict)"
        )
    lines += ["", "## Published", "", f"- {published or 'not published'}", ""]
    return "\n".join(lines)


def write_report(run_dir: Path, out: Path | None = None, published: str | None = None) -> Report:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir} is not a run directory")
    events = read_progress(run_dir)
    summary = _read_json(run_dir / "run-summary.json")
    if not events and not summary:
        raise ReportError(f"{run_dir} has neither progress.jsonl nor run-summary.json")
    evaluation = _read_json(run_dir / "eval.json")
    png = out or run_dir / "report.png"
    _plot(
        events,
        png,
        f"{run_dir.parent.parent.name} {run_dir.name}",
        version_fidelity(evaluation),
    )
    text = summarize(run_dir, events, summary, evaluation, published)
    markdown = png.with_suffix(".md")
    write_text(markdown, text + f"\n![loss curves]({png.name})\n")
    return Report(run_dir, png, markdown, text)


def run_overview(run_dir: Path) -> dict[str, Any]:
    """A run's loss curves as points, its gate verdict and fidelity numbers (for the
    dashboard; the same sources as the report)."""
    events = read_progress(run_dir)
    summary = _read_json(run_dir / "run-summary.json")
    evaluation = _read_json(run_dir / "eval.json")
    done = next((e for e in reversed(events) if e.get("event") == "done"), None)
    gate = summary.get("gate") or evaluation or ((done or {}).get("metrics") or {}).get("gate")

    def points(event: str, key: str) -> list[list[float]]:
        return [
            [e["step"], e[key]]
            for e in events
            if e.get("event") == event
            and isinstance(e.get("step"), int | float)
            and isinstance(e.get(key), int | float)
        ]

    verdict = None
    if isinstance(gate, dict) and gate:
        verdict = {"passed": bool(gate.get("passed")), "reason": gate.get("reason")}
    return {
        "run_dir": str(run_dir),
        "train_loss": points("step", "loss"),
        "eval_loss": points("eval", "eval_loss"),
        "gate": verdict,
        "fidelity": version_fidelity(gate) if isinstance(gate, dict) else None,
    }

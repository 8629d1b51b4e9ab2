"""A version's fidelity in a few numbers, from its gate verdict (``eval.json``'s
``"fidelity"``), for ``status``, ``versions`` and run reports; and the LLM judge's record
(``"fidelity_judge"``) in a few numbers and one line."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from services.jsonl import read_object

SETTINGS = ("without_retrieval", "with_retrieval")


def _recall(scores: Mapping[str, Any], setting: str) -> float | None:
    value = ((scores.get(setting) or {}).get("recall") or {}).get("mean")
    return float(value) if isinstance(value, int | float) else None


def model_summary(scores: Mapping[str, Any]) -> dict[str, Any]:
    """``{"recall", "recall_with_retrieval", "transfer", "stray_tags", "stopped"}`` of one
    model's fidelity scores (None where it was not measured)."""
    without = scores.get("without_retrieval") or {}
    transfer = without.get("transfer")
    hygiene = [(scores.get(s) or {}).get("hygiene") or {} for s in SETTINGS]
    stray = [
        int(h["with_stray_tags"]) for h in hygiene if isinstance(h.get("with_stray_tags"), int)
    ]
    stopped = [
        float(h["stopped_share"])
        for h in hygiene
        if isinstance(h.get("stopped_share"), int | float)
    ]
    return {
        "recall": _recall(scores, "without_retrieval"),
        "recall_with_retrieval": _recall(scores, "with_retrieval"),
        "transfer": float(transfer) if isinstance(transfer, int | float) else None,
        "stray_tags": max(stray) if stray else None,
        "stopped": min(stopped) if stopped else None,
    }


def version_fidelity(evaluation: Mapping[str, Any]) -> dict[str, Any] | None:
    """The candidate's summary, with its reference's beside it (``"reference"``, and the
    base model's, ``"base"``, when the reference was the active version), from a gate
    verdict; None when the gate measured no fidelity."""
    fidelity = evaluation.get("fidelity")
    if not isinstance(fidelity, Mapping) or not isinstance(fidelity.get("candidate"), Mapping):
        return None
    return {
        **model_summary(fidelity["candidate"]),
        "probes": fidelity.get("probes"),
        "passed": fidelity.get("passed"),
        "reference": model_summary(fidelity.get("reference") or {}),
        "transfer_against": fidelity.get("transfer_against"),
        **(
            {"base": model_summary(fidelity["base"])}
            if isinstance(fidelity.get("base"), Mapping)
            else {}
        ),
    }


def describe(summary: Mapping[str, Any] | None) -> str:
    """One line for people: ``recall 70% (with memories 90%), style 80%, 0 stray tags``."""
    if not summary:
        return "no fidelity measured"

    def pct(v: Any) -> str:
        return "-" if v is None else f"{v:.0%}"

    parts = [f"recall {pct(summary.get('recall'))}"]
    parts[0] += f" (with memories {pct(summary.get('recall_with_retrieval'))})"
    if summary.get("transfer") is not None:
        parts.append(f"style {pct(summary.get('transfer'))}")
    if summary.get("stray_tags") is not None:
        parts.append(f"{summary['stray_tags']} with stray tags")
    return ", ".join(parts)


def run_fidelity(run_dir: str | Path | None) -> dict[str, Any] | None:
    """:func:`version_fidelity` of a run directory's ``eval.json``; None when there is none
    (read again only when the file changed)."""
    if not run_dir:
        return None
    path = Path(run_dir) / "eval.json"
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        return None
    return _read_fidelity(str(path), stamp)


@functools.lru_cache(maxsize=256)
def _read_fidelity(path: str, stamp: int) -> dict[str, Any] | None:
    return version_fidelity(read_object(Path(path)))


PAIRWISE = ("candidate", "reference", "tie", "disagreed", "unparsable")


def judge_summary(record: Mapping[str, Any]) -> dict[str, Any]:
    """``{"model", "against", "error", "match": {setting: {"reference", "candidate"}: mean
    score}, "pairwise": {"candidate", "reference", "tie", "disagreed", "unparsable",
    "candidate_share"}}`` of a judge's record (``services.fidelity.judge``), the pairs
    counted over both settings."""
    settings = record.get("settings") or {}
    match = {
        s: {
            m: ((v.get("match") or {}).get(m) or {}).get("mean") for m in ("reference", "candidate")
        }
        for s, v in settings.items()
    }
    totals = {k: 0 for k in PAIRWISE}
    for values in settings.values():
        for k in PAIRWISE:
            totals[k] += int((values.get("pairwise") or {}).get(k) or 0)
    judged = totals["candidate"] + totals["reference"] + totals["tie"]
    share = (totals["candidate"] + totals["tie"] / 2) / judged if judged else None
    return {
        "model": record.get("model"),
        "against": record.get("against"),
        "error": record.get("error"),
        "match": match,
        "pairwise": {**totals, "candidate_share": share},
    }


def describe_judge(
    summary: Mapping[str, Any] | None, labels: tuple[str, str] = ("reference", "candidate")
) -> str | None:
    """One line for people (of :func:`judge_summary`), e.g. ``judge qwen2.5:7b: persona
    match reference 4.5 -> candidate 7.0 of 10 (with memories 6.0 -> 8.5); preferred:
    candidate 5, reference 1, tie 2 (1 where the orders disagreed)``; None without one."""
    if not summary:
        return None
    head = f"judge {summary.get('model')}"
    if summary.get("error"):
        return f"{head}: not judged: {summary['error']}"
    ref, cand = labels
    match = summary.get("match") or {}

    def score(setting: str, model: str) -> str:
        mean = (match.get(setting) or {}).get(model)
        return "-" if mean is None else f"{mean:.1f}"

    line = (
        f"{head}: persona match {ref} {score('without_retrieval', 'reference')} -> "
        f"{cand} {score('without_retrieval', 'candidate')} of 10"
    )
    if "with_retrieval" in match:
        line += (
            f" (with memories {score('with_retrieval', 'reference')} -> "
            f"{score('with_retrieval', 'candidate')})"
        )
    pairs = summary.get("pairwise") or {}
    line += (
        f"; preferred: {cand} {pairs.get('candidate', 0)}, {ref} {pairs.get('reference', 0)}, "
        f"tie {pairs.get('tie', 0)} ({pairs.get('disagreed', 0)} where the orders disagreed)"
    )
    if pairs.get("unparsable"):
        line += f", {pairs['unparsable']} unparsable"
    return line

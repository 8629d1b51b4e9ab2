"""The evaluation gate's verdict: the loss checks, the decision, and the files it is
written to (``eval.json``; ``run-summary.json``'s ``"gate"`` key)."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services import durable
from services.jsonl import read_object
from services.training.config_model import GateSettings
from services.training.gate.loss import LossStat

EVAL_FILE = "eval.json"
RUN_SUMMARY = "run-summary.json"


def compare(
    name: str, candidate: LossStat, reference: LossStat, limit_factor: float, rule: str
) -> dict[str, Any]:
    """One loss check: passes when the candidate's loss is at most the reference's x factor."""
    c, r = candidate.loss, reference.loss
    limit = r * limit_factor
    passed = math.isfinite(c) and math.isfinite(limit) and c <= limit
    change = (c - r) / r * 100 if r and math.isfinite(c) and math.isfinite(r) else math.nan
    relation = "<=" if passed else ">"
    return {
        "candidate": c,
        "reference": r,
        "limit": limit,
        "passed": passed,
        "change_pct": change,
        "samples": candidate.samples,
        "tokens": candidate.tokens,
        "summary": (
            f"{name} loss {c:.4f} {relation} {limit:.4f} "
            f"(reference {r:.4f} x {rule}; {change:+.1f}%)"
        ),
    }


def loss_checks(
    candidate: Mapping[str, LossStat],
    reference: Mapping[str, LossStat],
    regression_sets: Sequence[str],
    settings: GateSettings,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(the held-out check, when the held-out set was scored; the regression check over
    ``regression_sets`` combined, when there are any)."""
    heldout = regression = None
    if "heldout" in candidate:
        heldout = compare(
            "held-out",
            candidate["heldout"],
            reference["heldout"],
            1 - settings.min_improvement,
            f"(1 - {settings.min_improvement:g})",
        )
    if regression_sets:
        regression = compare(
            "regression",
            LossStat.combine([candidate[n] for n in regression_sets]),
            LossStat.combine([reference[n] for n in regression_sets]),
            1 + settings.max_regression,
            f"(1 + {settings.max_regression:g})",
        )
    return heldout, regression


def decide(
    heldout: dict[str, Any] | None,
    regression: dict[str, Any] | None,
    probe: dict[str, Any] | None,
    fidelity: dict[str, Any] | None = None,
) -> tuple[bool, str, list[str]]:
    """(passed, one-line reason, every failing reason)."""
    failures: list[str] = []
    notes: list[str] = []
    for check in (heldout, regression):
        if check is not None:
            (notes if check["passed"] else failures).append(check["summary"])
    if fidelity is not None:
        if fidelity["passed"]:
            notes.append(fidelity["summary"])
        failures += fidelity["failures"]
    if probe is not None:
        if probe["passed"]:
            notes.append(f"tag probe clean ({probe['checked']} outputs)")
        for f in probe["foreign"]:
            failures.append(f"tag probe: {f['mode']} sample {f['id']} wrote {', '.join(f['tags'])}")
    if failures:
        return False, "; ".join(failures), failures
    return True, "; ".join(notes) or "nothing to compare", []


def verdict(
    *,
    heldout: dict[str, Any] | None,
    regression: dict[str, Any] | None,
    probe: dict[str, Any] | None,
    reference: dict[str, Any],
    settings: GateSettings,
    warnings: list[str],
    started: float,
    fidelity: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The verdict of the checks (see the package docstring); ``started`` is the gate's
    ``time.perf_counter()`` start."""
    passed, reason, reasons = decide(heldout, regression, probe, fidelity)
    return {
        "passed": passed,
        "reason": reason,
        "reasons": reasons,
        "reference": reference,
        "heldout": heldout,
        "regression": regression,
        "probe": None if probe is None else {k: probe[k] for k in ("passed", "checked", "foreign")},
        "fidelity": fidelity,
        "settings": settings.model_dump(),
        "warnings": warnings,
        "seconds": round(time.perf_counter() - started, 3),
    }


def disabled_verdict(reference: dict[str, Any], settings: GateSettings) -> dict[str, Any]:
    """The verdict when ``gate.enabled`` is false: passed, nothing compared."""
    return {
        "passed": True,
        "reason": "gate disabled (gate.enabled is false)",
        "reasons": [],
        "enabled": False,
        "reference": reference,
        "settings": settings.model_dump(),
    }


def eval_details(
    *,
    candidate: dict[str, Any],
    candidate_losses: Mapping[str, LossStat],
    reference_losses: Mapping[str, LossStat],
    regression_sets: Mapping[str, Path],
    probe: dict[str, Any] | None,
    fidelity_outputs: list[dict[str, Any]] | None = None,
    fidelity_judge: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What ``eval.json`` holds beside the verdict: every number, the probe outputs and the
    LLM judge's record (null without a judge)."""
    return {
        "created": now(),
        "candidate": candidate,
        "losses": {
            "candidate": {k: v.to_dict() for k, v in candidate_losses.items()},
            "reference": {k: v.to_dict() for k, v in reference_losses.items()},
        },
        "regression_sets": {name: str(path) for name, path in regression_sets.items()},
        "probe_outputs": [] if probe is None else probe["outputs"],
        "fidelity_outputs": fidelity_outputs or [],
        "fidelity_judge": fidelity_judge,
    }


def write_results(run_dir: Path, gate: dict[str, Any], details: dict[str, Any]) -> None:
    """``eval.json`` (the verdict and ``details``) and the verdict under ``run-summary.json``'s
    ``"gate"`` (its other keys kept), each written atomically (``services.durable``)."""
    durable.write_json(run_dir / EVAL_FILE, {**gate, **details})
    record_in_summary(run_dir, "gate", gate)


def record_in_summary(run_dir: Path, key: str, value: Any) -> None:
    """``value`` under ``run-summary.json``'s ``key``, its other keys kept, written
    atomically (``services.durable``)."""
    summary = read_object(run_dir / RUN_SUMMARY)
    summary[key] = value
    durable.write_json(run_dir / RUN_SUMMARY, summary)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")

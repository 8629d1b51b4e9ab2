"""The ``eval`` command's machinery: a published version's model and base, a run directory
holding its chat format and probes (:func:`prepare_eval`), and the evaluation child
(``python -m services.training.gate.evaluate_version``) that answers them
(:func:`run_eval`). Failures are :class:`CommandError` with the command's error codes."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.control import CommandError
from services.curation import Sample
from services.dataset_build import SCHEMA_APPLIED, select_samples
from services.durable import write_bytes, write_jsonl, write_text
from services.errors import PersonadError
from services.fidelity.judge import judge_config
from services.ledger import Ledger
from services.persona_style import serving_head
from services.publish import PublishError
from services.publish.local import LocalRegistry
from services.run_prep import (
    OWN_PROBES,
    PROBES_FILE,
    Retrieve,
    fidelity_probes,
    new_run_dir,
    own_probes,
)
from services.settings import Settings
from services.training.command import judge_argv
from services.training.config_model import GateSettings


@dataclass(frozen=True)
class EvalRun:
    """What ``eval`` asks its child: the version's model (and adapter), its base."""

    profile: str
    version: int
    run_dir: Path
    model: str
    adapter: Path | None
    base: str


class EvalChildren:
    """The evaluation children running; :meth:`terminate` ends them (SIGTERM) when the
    daemon stops. Thread-safe."""

    def __init__(self) -> None:
        self._children: set[subprocess.Popen[str]] = set()
        self._lock = threading.Lock()

    def add(self, child: subprocess.Popen[str]) -> None:
        with self._lock:
            self._children.add(child)

    def discard(self, child: subprocess.Popen[str]) -> None:
        with self._lock:
            self._children.discard(child)

    def terminate(self) -> None:
        with self._lock:
            for child in self._children:
                child.terminate()


def prepare_eval(
    ledger: Ledger, settings: Settings, retrieve: Retrieve, profile: str, number: int | None
) -> EvalRun:
    """The version's model and base, and a new run directory holding its chat format
    and the probes (with the memories retrieval finds for each)."""
    s = settings
    if number is None:
        number = ledger.active_version(profile)
        if number is None:
            raise CommandError(
                "not_published", f"{profile} has no active version: nothing to evaluate"
            )
    row = next((v for v in ledger.versions(profile) if v["version"] == number), None)
    if row is None:
        known = ", ".join(f"v{v['version']}" for v in ledger.versions(profile)) or "none"
        raise CommandError(
            "not_published", f"{profile} has no version v{number} (published: {known})"
        )
    registry = LocalRegistry(s.state_dir / "models")
    try:
        model, adapter = registry.version_model(profile, number)
        info = registry.info(profile, number)
    except PublishError as exc:
        raise CommandError("not_published", str(exc)) from exc
    base = str(info.get("base") or row.get("base") or s.training.base_model)
    trained_in = row.get("run_dir") or (info.get("info") or {}).get("run_dir")
    schema = Path(trained_in) / SCHEMA_APPLIED if trained_in else None
    if schema is None or not schema.is_file():
        where = schema or "no training run recorded"
        raise CommandError(
            "eval_failed",
            f"{profile} v{number}: no {SCHEMA_APPLIED} of its training run ({where}): "
            "the chat format it was trained in is unknown",
        )
    try:
        own = own_probes(s.profiles / profile / OWN_PROBES)
    except PersonadError as exc:
        raise CommandError("eval_failed", str(exc)) from exc
    samples = [Sample.from_record(r) for r in ledger.sample_records(profile)]
    held_out = select_samples(samples, mode=None, max_samples=None)  # best first
    limit = max(probe_limit(s.training.config), len(own))
    head = serving_head(ledger, profile, info, None)  # what the version was trained with
    probes = fidelity_probes(profile, held_out, own, retrieve, limit, head)
    if not probes:
        raise CommandError(
            "eval_failed",
            f"{profile} has nothing to ask: write questions into "
            f"{s.profiles / profile / OWN_PROBES} "
            '(one {"question", "reference"} per line) or add held-out conversations',
        )
    run_dir = new_run_dir(s.state_dir, profile, f"eval-v{number}")
    write_bytes(run_dir / SCHEMA_APPLIED, schema.read_bytes())
    write_jsonl(run_dir / PROBES_FILE, probes)
    return EvalRun(profile, number, run_dir, model, adapter, base)


def run_eval(settings: Settings, run: EvalRun, children: EvalChildren) -> dict[str, Any]:
    """The child's result, ``{"fidelity", "fidelity_judge"}`` (the judge's record, null
    without ``eval.judge_model``); ``eval_failed`` with its error line when it fails."""
    s = settings
    argv = [
        s.training.python or sys.executable,
        "-m",
        "services.training.gate.evaluate_version",
        "--run-dir",
        str(run.run_dir),
        "--model",
        run.model,
        "--base",
        run.base,
        "--cache-dir",
        str(s.state_dir / "base-models"),
        "--version",
        f"v{run.version}",
        "--device",
        s.training.device,
    ]
    if run.adapter is not None:
        argv += ["--adapter", str(run.adapter)]
    argv += judge_argv(judge_config(s.eval.judge_model, s.ollama.url, s.eval.judge_timeout_s))
    timeout = s.ask.timeout_s * 4
    with subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as child:
        children.add(child)
        try:
            stdout, stderr = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            stdout, stderr = child.communicate()
            raise CommandError(
                "eval_failed", f"the evaluation did not finish within {timeout:.0f}s"
            ) from None
        finally:
            children.discard(child)
            write_text(run.run_dir / "child.stderr", stderr or "")
    try:
        out = json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = (stderr or "").strip().splitlines()[-1:] or ["no output"]
        raise CommandError(
            "eval_failed", f"the evaluation failed (exit {child.returncode}): {tail[0]}"
        ) from None
    if not isinstance(out, dict) or "error" in out or child.returncode != 0:
        error = out.get("error") if isinstance(out, dict) else None
        raise CommandError("eval_failed", str(error or f"exit {child.returncode}"))
    fidelity = out.get("fidelity")
    if not isinstance(fidelity, dict):
        raise CommandError("eval_failed", "the evaluation printed no fidelity")
    judged = out.get("fidelity_judge")
    return {"fidelity": fidelity, "fidelity_judge": judged if isinstance(judged, dict) else None}


def probe_limit(config: dict[str, Any]) -> int:
    """``gate.fidelity_probes`` of ``training.config`` (dotted or nested), else the
    default."""
    gate = config.get("gate")
    value = config.get("gate.fidelity_probes")
    if value is None and isinstance(gate, dict):
        value = gate.get("fidelity_probes")
    if value is None:
        return GateSettings().fidelity_probes
    try:
        return GateSettings(fidelity_probes=value).fidelity_probes
    except ValueError:
        return GateSettings().fidelity_probes

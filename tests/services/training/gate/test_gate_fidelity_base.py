"""With an active version as the reference, the gate also asks the base model the fidelity
probes: every run shows what training on the person added to the base, not only to the
last version. Real gate runs on the tiny model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from services.fidelity.summary import version_fidelity
from tests.services.training.gate.test_gate_judge import gate_run, probed_run, random_adapter

pytestmark = pytest.mark.slow


def test_against_the_active_version_the_base_answers_too(
    tmp_path: Path, tiny_model: Path, tiny_tokenizer: Any
) -> None:
    run_dir = probed_run(tmp_path / "first", tiny_model, tiny_tokenizer)
    active = random_adapter(tmp_path / "v1-adapter", tiny_model, tiny_tokenizer, seed=9)
    second = tmp_path / "second"
    shutil.copytree(run_dir, second)

    against_base = gate_run(run_dir, tiny_model, None)["fidelity"]
    reference = {"reference_model": str(tiny_model), "reference_adapter": active}
    against_active = gate_run(second, tiny_model, None, **reference)["fidelity"]

    assert "base" not in against_base  # the base is the reference already
    assert against_active["transfer_against"] == "active"
    # The base's scores and answers are those the base gave as the reference of the
    # first run; the active version's answers are its own.
    assert against_active["base"] == against_base["reference"]
    first = json.loads((run_dir / "eval.json").read_text())["fidelity_outputs"]
    rows = json.loads((second / "eval.json").read_text())["fidelity_outputs"]
    assert [r["answers"]["base"] for r in rows] == [r["answers"]["reference"] for r in first]
    assert [r["answers"]["candidate"] for r in rows] == [r["answers"]["candidate"] for r in first]
    assert [r["answers"]["reference"] for r in rows] != [r["answers"]["base"] for r in rows]
    # Versions and status show the base beside the version.
    summary = version_fidelity({"fidelity": against_active})
    first_summary = version_fidelity({"fidelity": against_base})
    assert summary is not None and first_summary is not None
    assert summary["base"] == first_summary["reference"]
    assert "base" not in first_summary

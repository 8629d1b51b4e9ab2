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
from services.training.config import resolve_config
from services.training.dataset_reader import read_dataset, select
from services.training.gate import evaluate_candidate
from tests.services.training.gate.test_eval_gate import FAST, prepare
from tests.services.training.gate.test_gate_judge import PROBES
from tests.services.training.training_helpers import REPO

pytestmark = pytest.mark.slow


def _adapter(path: Path, tiny_model: Path, tiny_tokenizer: Any, seed: int) -> Path:
    """A LoRA adapter with random, non-zero weights (a model that answers differently)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = LoraConfig(
        r=4, target_modules="all-linear", task_type="CAUSAL_LM", init_lora_weights=False
    )
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model), config)
    model.save_pretrained(str(path))
    tiny_tokenizer.save_pretrained(str(path))
    return path


def _gate(run_dir: Path, tiny_model: Path, active: Path | None) -> dict[str, Any]:
    resolved = resolve_config(
        base_model=tiny_model,
        kind="lora",
        n_samples=40,
        mode=None,
        preset=None,
        job_args={**FAST, "gate.fidelity_tokens": 6, "gate.probe_tokens": 6},
        etc_dir=REPO / "etc",
    )
    return evaluate_candidate(
        run_dir=run_dir,
        kind="lora",
        base_dir=tiny_model,
        artifact=run_dir / "adapter",
        resolved=resolved,
        selection=select(read_dataset(run_dir / "fine_tune_dataset.jsonl"), resolved.config),
        cache_dir=run_dir.parent / "cache",
        general_set=None,
        reference_model=None if active is None else str(tiny_model),
        reference_adapter=active,
    )


def test_against_the_active_version_the_base_answers_too(
    tmp_path: Path, tiny_model: Path, tiny_tokenizer: Any
) -> None:
    run_dir = prepare(tmp_path / "first", tiny_model, tiny_tokenizer, "lora")
    (run_dir / "fidelity_probes.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PROBES))
    _adapter(run_dir / "adapter", tiny_model, tiny_tokenizer, seed=5)
    active = _adapter(tmp_path / "v1-adapter", tiny_model, tiny_tokenizer, seed=9)
    second = tmp_path / "second"
    shutil.copytree(run_dir, second)

    against_base = _gate(run_dir, tiny_model, None)["fidelity"]
    against_active = _gate(second, tiny_model, active)["fidelity"]

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

"""The memory plan of a prepared run: in config.json before the job starts, or a refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.ledger import Ledger
from services.run_prep import Device
from services.training.config import ResolvedConfig
from services.training.job_memory import MemoryPlanError
from tests.services.test_run_prep_probes import _ingest, prepare_alice


def _prepare(tmp_path: Path, model: Path, device: Device, kind: str = "lora") -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    with Ledger(tmp_path / "ledger.db") as ledger:
        _ingest(ledger, tmp_path)
        return prepare_alice(ledger, tmp_path / "run", model, kind=kind, device=device)


def test_the_plan_and_its_estimate_go_into_config_json(tmp_path: Path, tiny_model: Path) -> None:
    run_dir = _prepare(tmp_path, tiny_model, Device(device="cpu", gpu_memory_gb=8))
    resolved = ResolvedConfig.read(run_dir / "config.json")
    plan = resolved.plan
    assert plan is not None
    assert plan["strategy"] == "lora" and plan["fits"] is True
    assert plan["device_gib"] == 8 and plan["device_source"] == "training.gpu_memory_gb"
    assert 0 < plan["peak_gib"] < 8 * 0.9
    assert plan["tokens"] > 0 and plan["estimate_s"] > 0
    assert plan["params"] == resolved.model.params


def test_a_model_that_cannot_fit_is_refused_before_loading(tmp_path: Path) -> None:
    model = tmp_path / "big"
    model.mkdir()
    (model / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llama",
                "hidden_size": 8192,
                "num_hidden_layers": 80,
                "intermediate_size": 28672,
                "vocab_size": 128256,
                "num_attention_heads": 64,
                "num_key_value_heads": 8,
                "tie_word_embeddings": False,
            }
        )
    )
    (model / "tokenizer_config.json").write_text("{}")
    with pytest.raises(MemoryPlanError) as err:
        _prepare(tmp_path, model, Device(gpu_memory_gb=24), kind="full")
    message = str(err.value)
    assert "full fine-tune of 70.6B needs ~" in message and "24 GiB" in message
    assert "qlora needs ~" in message
    assert not (tmp_path / "run" / "config.json").exists()


def test_a_torchrun_job_is_planned_for_its_ranks(tmp_path: Path, tiny_model: Path) -> None:
    one = _prepare(tmp_path / "one", tiny_model, Device(device="cpu", gpu_memory_gb=8))
    two = _prepare(
        tmp_path / "two",
        tiny_model,
        Device(device="cpu", gpu_memory_gb=8, launcher="torchrun", nproc=2),
    )
    plan_one = ResolvedConfig.read(one / "config.json").plan or {}
    plan_two = ResolvedConfig.read(two / "config.json").plan or {}
    assert (plan_one["devices"], plan_two["devices"]) == (1, 2)
    assert plan_two["estimate_s"] == pytest.approx(plan_one["estimate_s"] / 2, rel=0.05)

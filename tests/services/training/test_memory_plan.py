"""The memory planner on paper: strategies, micro-batches, refusals and fallbacks."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from services.training.memory_plan import (
    ModelShape,
    Settings,
    choose,
    estimate,
    fallback,
    job_devices,
)
from services.training.model_shape import device_memory, model_shape, shape_from_config

LLAMA_8B = {
    "model_type": "llama",
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "intermediate_size": 14336,
    "vocab_size": 128256,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "tie_word_embeddings": False,
    "hidden_act": "silu",
}


def gpu(kind: str, micro: int = 2, effective: int = 16, seq: int = 2048) -> Settings:
    return Settings(
        kind=kind,
        device="cuda",
        bf16=True,
        seq_len=seq,
        micro_batch=micro,
        effective_batch=effective,
        checkpointing=True,
        lora_r=16,
    )


@pytest.fixture
def llama8b() -> ModelShape:
    return shape_from_config(LLAMA_8B)


def test_shapes_from_config_count_an_8b_model(llama8b: ModelShape) -> None:
    assert 7.9e9 < llama8b.params < 8.1e9
    assert llama8b.linear_params > 0.85 * llama8b.params - llama8b.embedding_params
    assert 30e6 < llama8b.lora_params(16) < 50e6  # peft: 41.9M for r=16 on all linear layers


def test_a_full_fine_tune_of_8b_on_24_gib_is_refused_with_the_ways_out(
    llama8b: ModelShape,
) -> None:
    plan = choose(llama8b, gpu("full"), device_gib=24, device_source="test")
    assert not plan.fits
    assert plan.alternatives["full"] > 120  # 16 bytes a parameter
    assert plan.alternatives["qlora"] < plan.alternatives["lora"] < 24
    assert "full fine-tune of 8.0B needs ~" in plan.reason
    assert "this GPU has 24 GiB" in plan.reason
    assert "lora needs ~" in plan.reason and "qlora needs ~" in plan.reason
    assert "training.launcher" in plan.reason


def test_lora_picks_the_best_that_fits_and_qlora_below_it(llama8b: ModelShape) -> None:
    assert choose(llama8b, gpu("lora"), device_gib=24, device_source="t").strategy == "lora"
    small = choose(llama8b, gpu("lora"), device_gib=12, device_source="t")
    assert (small.strategy, small.fits) == ("qlora", True)
    assert small.peak_gib <= 12 * 0.9
    tiny = choose(llama8b, gpu("lora"), device_gib=4, device_source="t")
    assert not tiny.fits and "LoRA of 8.0B needs" in tiny.reason


def test_full_8bit_when_full_does_not_fit(llama8b: ModelShape) -> None:
    plan = choose(llama8b, gpu("full"), device_gib=100, device_source="t")
    assert plan.strategy == "full-8bit" and plan.fits
    assert choose(llama8b, gpu("full"), device_gib=160, device_source="t").strategy == "full"


def test_the_micro_batch_falls_and_the_effective_batch_stays(llama8b: ModelShape) -> None:
    s = gpu("lora", micro=8, effective=16, seq=4096)
    big = choose(llama8b, replace(s, checkpointing=False), device_gib=80, device_source="t")
    assert big.micro_batch == 8 and big.strategy == "lora"
    plan = choose(llama8b, s, device_gib=40, device_source="t", checkpointing_fixed=True)
    assert plan.fits and plan.strategy == "lora"
    assert plan.micro_batch < 8
    assert plan.micro_batch * plan.gradient_accumulation_steps == 16


def test_peaks_grow_with_the_micro_batch_and_without_checkpointing(llama8b: ModelShape) -> None:
    one = estimate(llama8b, "lora", gpu("lora", micro=1))
    four = estimate(llama8b, "lora", gpu("lora", micro=4))
    no_ckpt = estimate(llama8b, "lora", replace(gpu("lora", micro=4), checkpointing=False))
    assert one.peak < four.peak < no_ckpt.peak
    assert estimate(llama8b, "qlora", gpu("lora")).weights < 0.4 * four.weights


def test_fallback_halves_the_micro_batch_then_goes_to_qlora(llama8b: ModelShape) -> None:
    s = gpu("lora", micro=4, effective=16)
    plan = choose(llama8b, s, device_gib=80, device_source="t")
    steps = []
    while plan is not None:
        steps.append((plan.strategy, plan.micro_batch))
        plan = fallback(plan, llama8b, s)
    assert steps == [("lora", 4), ("lora", 2), ("lora", 1), ("qlora", 1)]


def test_fallback_records_the_plan_that_failed(llama8b: ModelShape) -> None:
    s = gpu("full", micro=1, effective=8)
    plan = choose(llama8b, s, device_gib=200, device_source="t")
    nxt = fallback(plan, llama8b, s)
    assert nxt is not None and nxt.strategy == "full-8bit"
    assert nxt.fallback_from is not None and nxt.fallback_from["strategy"] == "full"
    assert fallback(nxt, llama8b, s) is None


def test_shapes_of_a_model_not_downloaded_come_from_config_json(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_8B))
    assert model_shape(tmp_path) == model_shape(tmp_path / "config.json")
    assert model_shape(tmp_path).layers == 32


def test_shapes_of_the_tiny_model(tiny_model: Path) -> None:
    shape = model_shape(tiny_model)
    assert (shape.hidden, shape.layers, shape.intermediate) == (32, 2, 64)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert shape.params == sum(p.numel() for p in model.parameters())


def test_device_memory_override_and_cpu_limit() -> None:
    assert device_memory(device="auto", gpu_memory_gb=24, memory_limit_mb=None) == (
        "cuda",
        24.0,
        "training.gpu_memory_gb",
    )
    kind, gib, source = device_memory(device="cpu", gpu_memory_gb=None, memory_limit_mb=512)
    assert (kind, gib, source) == ("cpu", 0.5, "training.memory_limit_mb")


def test_one_device_per_job_today() -> None:
    assert job_devices() == 1
    assert job_devices("single", visible_gpus=8) == 1
    assert job_devices("torchrun", visible_gpus=4) == 4
    assert job_devices("torchrun", visible_gpus=4, nproc=2) == 2

"""lora.scale: how much of a trained LoRA adapter is kept, on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from services.training.adapter_scale import (
    CALIBRATION_SET,
    GRID,
    choose_scale,
    rescale_adapter,
    scale_adapter,
)
from services.training.command import ExitCode
from services.training.gate.sets import GENERAL_SET, chat_renderer, read_eval_set
from tests.services.training.test_training_child import events_of, prepare
from tests.services.training.training_helpers import drifted_adapter, run_child


def _loaded(tiny_model: Path, adapter: Path) -> tuple[Any, Any, list[Any]]:
    from services.training.inference import load_for_inference

    model, tokenizer = load_for_inference(tiny_model, adapter=adapter, cache_dir=adapter.parent)
    samples = read_eval_set(CALIBRATION_SET, chat_renderer(adapter, tokenizer))
    return model, tokenizer, samples


def _lora_b(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}


def test_the_calibration_set_shares_no_prompt_with_the_gates_general_set() -> None:
    def prompts(path: Path) -> set[str]:
        return {json.loads(line)["messages"][0]["content"] for line in path.open()}

    calibration, general = prompts(CALIBRATION_SET), prompts(GENERAL_SET)
    assert len(calibration) == 24
    assert not calibration & general


def test_an_adapter_that_drifts_far_keeps_the_largest_share_within_the_budget(
    tmp_path: Path, tiny_model: Path
) -> None:
    model, tokenizer, samples = _loaded(
        tiny_model, drifted_adapter(tiny_model, tmp_path / "a", 0.2)
    )
    trained = _lora_b(model)
    full = choose_scale(model, tokenizer, samples, budget=1e9)
    assert full["scale"] == 1.0 and full["within"]
    drift_at_full = full["drift"]
    assert drift_at_full > 1e-3

    budget = drift_at_full / 2
    choice = choose_scale(model, tokenizer, samples, budget=budget)
    assert 0 < choice["scale"] < 1.0 and choice["within"] and choice["drift"] <= budget
    drifts = {t["scale"]: t["drift"] for t in choice["tried"]}
    # the next larger share tried was over the budget: the largest share within it is kept
    larger = [s for s in drifts if s > choice["scale"]]
    assert larger and drifts[min(larger)] > budget
    # bisection: far fewer evaluations than shares
    assert len(drifts) <= 5 < len(GRID)
    # the model is left as it was trained
    assert all(torch.equal(trained[n], p) for n, p in _lora_b(model).items())


def test_no_share_within_the_budget_keeps_the_smallest_and_says_so(
    tmp_path: Path, tiny_model: Path
) -> None:
    model, tokenizer, samples = _loaded(
        tiny_model, drifted_adapter(tiny_model, tmp_path / "a", 0.5)
    )
    choice = choose_scale(model, tokenizer, samples, budget=0.0)
    assert choice["scale"] == GRID[-1] and not choice["within"]


def test_an_adapter_that_changes_nothing_is_kept_whole(tmp_path: Path, tiny_model: Path) -> None:
    adapter = drifted_adapter(tiny_model, tmp_path / "a", 0.0)
    before = load_file(str(adapter / "adapter_model.safetensors"))
    choice = scale_adapter(adapter, tiny_model, "auto", run_dir=adapter)
    assert choice["scale"] == 1.0 and choice["drift"] == pytest.approx(0.0, abs=1e-6)
    after = load_file(str(adapter / "adapter_model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_rescaling_a_saved_adapter_scales_its_change_to_the_model(
    tmp_path: Path, tiny_model: Path
) -> None:
    from transformers import AutoModelForCausalLM

    adapter = drifted_adapter(tiny_model, tmp_path / "a", 0.02)
    before = load_file(str(adapter / "adapter_model.safetensors"))
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(tiny_model)(input_ids=ids).logits
    choice = scale_adapter(adapter, tiny_model, 0.5, run_dir=adapter)
    assert choice["scale"] == 0.5
    after = load_file(str(adapter / "adapter_model.safetensors"))
    for key, value in before.items():
        expected = value * 0.5 if "lora_B" in key else value
        assert torch.allclose(after[key], expected), key
    # lora_B is the last factor of every delta: the model moved half as far (to first order)
    half, _, _ = _loaded(tiny_model, adapter)
    rescale_adapter(adapter, 2.0)
    whole, _, _ = _loaded(tiny_model, adapter)
    with torch.no_grad():
        d_half = (half(input_ids=ids).logits - base).norm()
        d_whole = (whole(input_ids=ids).logits - base).norm()
    assert 0.3 < float(d_half / d_whole) < 0.7


def test_a_small_profiles_lora_run_reports_the_share_it_kept(
    tmp_path: Path, tiny_model: Path, tiny_tokenizer: Any
) -> None:
    run_dir = prepare(tmp_path, tiny_model, tiny_tokenizer, "lora", num_epochs=1, save_steps=100)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["config"]["lora"]["scale"] == "auto"
    assert config["sources"]["lora.scale"] == "smart"
    proc = run_child(run_dir, "lora", tiny_model)
    assert proc.returncode == ExitCode.OK, proc.stderr[-3000:]
    events, parser = events_of(proc.stdout)
    assert parser.garbage == 0
    kept = events[-1].metrics["adapter_scale"]
    assert kept["scale"] in GRID and kept["budget"] > 0 and kept["tried"]
    assert kept["scale"] == 1.0 or kept["within"]
    summary = json.loads((run_dir / "run-summary.json").read_text())
    assert summary["adapter_scale"] == kept and "gate" in summary

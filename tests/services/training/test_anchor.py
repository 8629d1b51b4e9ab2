"""lora.anchor: a LoRA trained with the drift penalty stays nearer its base on general text."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from services.training.adapter_scale import (
    CALIBRATION_SET,
    answer_logprobs,
    drift,
    encoded_answers,
)
from services.training.anchor import ANCHOR_SET, AnchorLoss
from services.training.command import ExitCode
from services.training.config import SMALL_PROFILE_ANCHOR
from services.training.gate.sets import GENERAL_SET, chat_renderer, read_eval_set
from services.training.progress import StepEvent
from tests.services.training.test_training_child import events_of, prepare
from tests.services.training.training_helpers import drifted_adapter, run_child


def _prompts(path: Path) -> set[str]:
    return {json.loads(line)["messages"][0]["content"] for line in path.open()}


def test_the_anchor_set_shares_no_prompt_with_the_sets_that_judge_drift() -> None:
    anchors = _prompts(ANCHOR_SET)
    assert len(anchors) == 24
    assert not anchors & _prompts(GENERAL_SET)
    assert not anchors & _prompts(CALIBRATION_SET)


def test_the_anchor_pulls_a_drifted_adapter_back_to_its_base_on_text_it_never_saw(
    tmp_path: Path, tiny_model: Path
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter_dir = drifted_adapter(tiny_model, tmp_path / "a", 0.2)  # far from its base
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model), adapter_dir, is_trainable=True
    )
    render = chat_renderer(adapter_dir, tokenizer)
    held_out = encoded_answers(read_eval_set(CALIBRATION_SET, render), tokenizer, model.device, 128)
    with torch.no_grad(), model.disable_adapter():
        base = answer_logprobs(model, held_out)
    before = drift(model, held_out, base)

    anchors = encoded_answers(read_eval_set(ANCHOR_SET, render), tokenizer, model.device, 128)
    anchor = AnchorLoss(model, anchors, 1.0, contextlib.nullcontext)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    kls = []
    for _ in range(24):
        kls.append(anchor.step())
        optimizer.step()
        optimizer.zero_grad()
    after = drift(model, held_out, base)
    assert kls[0] > 0 and sum(kls[-4:]) < sum(kls[:4])
    assert after < 0.5 * before, (before, after)


def test_a_small_profiles_lora_run_reports_its_drift_penalty_at_every_step(
    tmp_path: Path, tiny_model: Path, tiny_tokenizer: Any
) -> None:
    run_dir = prepare(tmp_path, tiny_model, tiny_tokenizer, "lora", num_epochs=1, save_steps=100)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["config"]["lora"]["anchor"] == SMALL_PROFILE_ANCHOR
    assert config["sources"]["lora.anchor"] == "smart"
    proc = run_child(run_dir, "lora", tiny_model)
    assert proc.returncode == ExitCode.OK, proc.stderr[-3000:]
    events, parser = events_of(proc.stdout)
    assert parser.garbage == 0
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert steps and all(e.raw["anchor_kl"] >= 0 for e in steps)
    # without it (a setting of 0) the steps carry none
    off = prepare(
        tmp_path / "off", tiny_model, tiny_tokenizer, "lora", num_epochs=1, lora={"anchor": 0.0}
    )
    proc = run_child(off, "lora", tiny_model)
    assert proc.returncode == ExitCode.OK, proc.stderr[-3000:]
    events, _ = events_of(proc.stdout)
    assert not any("anchor_kl" in e.raw for e in events if isinstance(e, StepEvent))

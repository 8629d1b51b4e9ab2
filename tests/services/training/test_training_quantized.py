"""QLoRA (a 4-bit NF4 base) and 8-bit AdamW in the training child, on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from services.training.config import ResolvedConfig
from services.training.merge import merge_adapter
from services.training.progress import DoneEvent, StartEvent
from tests.services.training.test_training_child import events_of, prepare
from tests.services.training.training_helpers import run_child


def planned(run_dir: Path, strategy: str) -> None:
    """Give the run's config.json a memory plan of ``strategy`` (as the planner writes it)."""
    path = run_dir / "config.json"
    resolved = ResolvedConfig.read(path)
    resolved.plan = {"strategy": strategy}
    resolved.write(run_dir)


def train(tmp_path: Path, model: Path, kind: str, strategy: str) -> tuple[Path, Any, Any]:
    tokenizer = AutoTokenizer.from_pretrained(model)
    run_dir = prepare(tmp_path, model, tokenizer, kind, gate={"enabled": False})
    planned(run_dir, strategy)
    done = run_child(run_dir, kind, model)
    assert done.returncode == 0, done.stderr[-3000:]
    events, _ = events_of(done.stdout)
    start = next(e for e in events if isinstance(e, StartEvent))
    end = next(e for e in events if isinstance(e, DoneEvent))
    return run_dir, start.raw, end.metrics


def test_qlora_trains_adapters_on_a_4bit_base_and_merges_into_full_precision(
    tmp_path: Path, tiny_model_64: Path
) -> None:
    run_dir, start, metrics = train(tmp_path, tiny_model_64, "lora", "qlora")
    assert start["memory_strategy"] == "qlora"
    assert start["quantized_layers"] == 14  # 2 blocks x q, k, v, o, gate, up, down
    assert start["trainable_params"] < start["total_params"] / 2
    assert metrics["memory_strategy"] == "qlora"
    assert metrics["eval_loss"] < metrics["eval_loss_initial"]
    merged = merge_adapter(tiny_model_64, run_dir / "adapter", tmp_path / "merged")
    model = AutoModelForCausalLM.from_pretrained(merged)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert not any("lora" in name for name, _ in model.named_parameters())
    check = json.loads((run_dir / "merge_check.json").read_text())
    assert check["memory_strategy"] == "qlora" and check["ok"]
    assert check["training_eval_loss"] == metrics["eval_loss"]
    assert abs(check["merged_eval_loss"] - check["adapter_eval_loss"]) <= 0.01 * abs(
        check["adapter_eval_loss"]
    )


def test_every_qlora_adapter_learns_after_an_evaluation(tiny_model_64: Path) -> None:
    """The recipe evaluates before it trains: a 4-bit layer that ran without gradients must
    still pass gradients back to the adapters below it (bitsandbytes' CPU inference layout
    does not)."""
    from peft import LoraConfig, get_peft_model

    from services.training.quantized import load_4bit

    base = load_4bit(tiny_model_64, torch.device("cpu"), torch.float32)
    torch.manual_seed(0)
    model = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    ids = torch.randint(0, base.config.vocab_size, (1, 24))
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    silent = [
        name
        for name, p in model.named_parameters()
        if "lora_B" in name and (p.grad is None or not p.grad.abs().sum())
    ]
    assert not silent


def test_a_full_fine_tune_with_8bit_adamw(tmp_path: Path, tiny_model_64: Path) -> None:
    _, start, metrics = train(tmp_path, tiny_model_64, "full", "full-8bit")
    assert start["optimizer"] == "AdamW8bit"
    assert metrics["memory_strategy"] == "full-8bit"
    assert metrics["eval_loss"] < metrics["eval_loss_initial"]

"""Loading the model a run trains (training child only: imports torch and transformers).

:func:`load_model` gives the model to train and the transformers model under it, for each
memory strategy (``memory_plan``): the base in ``dtype`` (``full``, ``full-8bit``,
``lora``) or in 4-bit NF4 (``qlora``, see ``quantized``), with LoRA adapters for a LoRA,
and gradient checkpointing when asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from services.training.config_model import TrainingConfig


def load_model(
    base_dir: Path,
    kind: str,
    cfg: TrainingConfig,
    device: torch.device,
    dtype: torch.dtype,
    checkpointing: bool,
    strategy: str | None = None,
) -> tuple[Any, Any]:
    """(the model to train, the transformers model under it): for LoRA a peft model whose
    adapters are the only trainable weights, for a full fine-tune the model itself.
    ``strategy`` ``qlora``: the base in 4-bit NF4 computing in ``dtype`` (``quantized``)."""
    if strategy == "qlora":
        from services.training.quantized import load_4bit

        base: Any = load_4bit(base_dir, device, dtype)
        if checkpointing:
            base.enable_input_require_grads()
    else:
        base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
        base.to(device)
    model: Any = base
    if kind == "lora":
        from peft import LoraConfig, get_peft_model

        lora = cfg.lora
        config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora.target_modules,
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(base, config)
    if checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, base

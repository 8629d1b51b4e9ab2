"""QLoRA's 4-bit base and 8-bit AdamW, with bitsandbytes (training child only).

- ``qlora``: the base's linear layers load as 4-bit NF4 with double quantization (the
  quantization constants quantized too), computing in bf16 on a GPU and fp32 on a CPU; the
  output layer stays in the compute dtype. bitsandbytes' CPU kernels need each quantized
  layer's input size to be a multiple of its 64-weight blocks: a layer that is not stays
  in the compute dtype (:func:`unquantizable`). The LoRA adapters on it are fp32.
  On a CPU with AVX512-BF16, bitsandbytes repacks a 4-bit layer's weights for its
  inference kernel the first time the layer runs without gradients (the recipe's first
  evaluation), and that kernel passes no gradient back to the layer's input: the adapters
  below it would stop learning (QLoRA's held-out loss 24% above LoRA's on SmolLM2-135M
  after 12 steps; 0.3% below it with the repacking off: bench/MEMORY.md). :func:`load_4bit` turns
  the repacking off.
- ``full-8bit``: AdamW with 8-bit states (:func:`optimizer_class`), paged on a GPU (its
  states move to host memory under pressure instead of failing).

A QLoRA adapter is published like any other: merged into the base loaded in full precision
(``services.training.merge``); the gate, ``ask`` and ``eval`` run it on that base too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

NF4_BLOCK = 64


def unquantizable(base_dir: Path) -> list[str]:
    """Names of linear layers whose input size is not a multiple of NF4_BLOCK (read from
    the meta-device model: no weights loaded)."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(base_dir)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module.in_features % NF4_BLOCK
    ]


def load_4bit(base_dir: Path, device: torch.device, compute: torch.dtype) -> Any:
    """The base model with NF4 linear layers on ``device`` (see the module docstring)."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    skip = ["lm_head", *(unquantizable(base_dir) if device.type == "cpu" else [])]
    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
        llm_int8_skip_modules=skip,
    )
    where = f"{device.type}:{device.index or 0}" if device.type == "cuda" else "cpu"
    model = AutoModelForCausalLM.from_pretrained(
        base_dir, quantization_config=config, dtype=compute, device_map={"": where}
    )
    if device.type == "cpu":
        keep_differentiable(model)
    return model


def keep_differentiable(model: Any) -> None:
    """Keep bitsandbytes from repacking the 4-bit layers for its CPU inference kernel,
    which has no backward (see the module docstring)."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def quantized_layers(model: Any) -> int:
    """How many of the model's layers hold 4-bit weights."""
    import bitsandbytes as bnb

    return sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())


def optimizer_class(device: torch.device) -> type[torch.optim.Optimizer]:
    """8-bit AdamW: paged on a GPU, plain on a CPU."""
    import bitsandbytes as bnb

    cls = bnb.optim.PagedAdamW8bit if device.type == "cuda" else bnb.optim.AdamW8bit
    return cls

"""QLoRA's 4-bit base and 8-bit AdamW, with bitsandbytes (training child only).

- ``qlora``: the base's linear layers load as 4-bit NF4 with double quantization (the
  quantization constants quantized too), computing in bf16 on a GPU and fp32 on a CPU; the
  output layer stays in the compute dtype. bitsandbytes' CPU kernels need each quantized
  layer's input size to be a multiple of its 64-weight blocks: a layer that is not stays
  in the compute dtype (:func:`unquantizable`). The LoRA adapters on it are fp32.
- ``full-8bit``: AdamW with 8-bit states (:func:`optimizer_class`), paged on a GPU (its
  states move to host memory under pressure instead of failing).

A QLoRA adapter is published like any other: merged into the base loaded in full precision
(``services.training.merge``).
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
    return AutoModelForCausalLM.from_pretrained(
        base_dir, quantization_config=config, dtype=compute, device_map={"": where}
    )


def quantized_layers(model: Any) -> int:
    """How many of the model's layers hold 4-bit weights."""
    import bitsandbytes as bnb

    return sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())


def optimizer_class(device: torch.device) -> type[torch.optim.Optimizer]:
    """8-bit AdamW: paged on a GPU, plain on a CPU."""
    import bitsandbytes as bnb

    cls = bnb.optim.PagedAdamW8bit if device.type == "cuda" else bnb.optim.AdamW8bit
    return cls

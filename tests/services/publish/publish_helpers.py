"""Small model and adapter directories, laid out as training writes them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file


def write_full_model(
    directory: Path, *, architecture: str = "LlamaForCausalLM", seed: int = 0
) -> Path:
    """config.json, model.safetensors and tokenizer files of a tiny model."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    config = {
        "architectures": [architecture],
        "model_type": architecture.removesuffix("ForCausalLM").lower(),
        "hidden_size": 8,
        "num_hidden_layers": 1,
        "vocab_size": 16,
    }
    (directory / "config.json").write_text(json.dumps(config))
    save_file(
        {
            "model.embed_tokens.weight": rng.standard_normal((16, 8)).astype(np.float16),
            "model.layers.0.self_attn.q_proj.weight": rng.standard_normal((8, 8)).astype(
                np.float16
            ),
        },
        str(directory / "model.safetensors"),
    )
    vocab = {f"t{i}": i for i in range(16)}
    (directory / "tokenizer.json").write_text(json.dumps({"model": {"vocab": vocab}}))
    (directory / "tokenizer_config.json").write_text(json.dumps({"eos_token": "t1"}))
    return directory


def write_adapter(directory: Path, *, base: str = "base-model", seed: int = 0) -> Path:
    """adapter_config.json and adapter_model.safetensors of a tiny peft LoRA adapter."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    config = {
        "peft_type": "LORA",
        "base_model_name_or_path": base,
        "r": 2,
        "lora_alpha": 4,
        "target_modules": ["q_proj"],
        "task_type": "CAUSAL_LM",
    }
    (directory / "adapter_config.json").write_text(json.dumps(config))
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    save_file(
        {
            f"{prefix}.lora_A.weight": rng.standard_normal((2, 8)).astype(np.float32),
            f"{prefix}.lora_B.weight": rng.standard_normal((8, 2)).astype(np.float32),
        },
        str(directory / "adapter_model.safetensors"),
    )
    return directory

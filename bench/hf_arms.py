"""What the off-the-shelf arms of bench/train.py share, so that they differ only in their
trainer: the base model (fp32, or 4-bit NF4 for QLoRA), the LoRA config and the
TrainingArguments keys (one set of hyperparameters, no warm-up, no checkpoints, no tqdm)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_base(base_dir: Path, strategy: str) -> Any:
    """The base model on the CPU: fp32, or 4-bit NF4 (fp32 compute) for ``qlora``."""
    import torch
    from transformers import AutoModelForCausalLM

    if strategy == "qlora":
        from services.training.quantized import load_4bit

        return load_4bit(base_dir, torch.device("cpu"), torch.float32)
    return AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)


def lora_config(hyper: dict[str, Any]) -> Any:
    from peft import LoraConfig

    lora = hyper["lora"]
    return LoraConfig(
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=lora["target_modules"],
        task_type="CAUSAL_LM",
    )


def training_args(out: Path, batch: int, accum: int, hyper: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of ``TrainingArguments`` (and of TRL's ``SFTConfig``)."""
    return {
        "output_dir": str(out),
        "per_device_train_batch_size": batch,
        "gradient_accumulation_steps": accum,
        "num_train_epochs": hyper["num_epochs"],
        "learning_rate": hyper["learning_rate"],
        "lr_scheduler_type": hyper["lr_scheduler"],
        "warmup_steps": 0,
        "weight_decay": hyper["weight_decay"],
        "max_grad_norm": hyper["max_grad_norm"],
        "logging_steps": 1,
        "save_strategy": "no",
        "eval_strategy": "no",
        "report_to": [],
        "seed": hyper["seed"],
        "use_cpu": True,
        "disable_tqdm": True,
    }

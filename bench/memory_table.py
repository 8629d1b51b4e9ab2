"""The memory planner's choice on paper: models of 0.5B to 70B on GPUs of 16 to 80 GiB.

Each model is described by its published ``config.json`` sizes (nothing is downloaded);
each job takes its size category's defaults (``modelinfo.CATEGORY_DEFAULTS``: batch size
as the micro-batch, times accumulation as the effective batch, LoRA rank) at
``--seq`` tokens, bf16, gradient checkpointing as the recipe's ``auto`` (on from 2B) with
the planner free to turn it on. For a LoRA job and a full fine-tune on each GPU it prints
the plan (strategy, micro-batch, peak GiB) or what does not fit. Then the planner's
estimate beside torchtune's published peaks for Llama 3.1 8B on one RTX 4090.

    .venv/bin/python bench/memory_table.py [--seq 2048]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.training.memory_plan import MemoryPlan, Settings, choose, estimate
from services.training.model_shape import shape_from_config
from services.training.modelinfo import CATEGORY_DEFAULTS, size_category


def config(h: int, layers: int, inter: int, vocab: int, heads: int, kv: int, tied: bool) -> Any:
    return {
        "model_type": "llama",
        "hidden_size": h,
        "num_hidden_layers": layers,
        "intermediate_size": inter,
        "vocab_size": vocab,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "tie_word_embeddings": tied,
    }


MODELS = {
    "Qwen2.5-0.5B": config(896, 24, 4864, 151936, 14, 2, True),
    "Qwen2.5-1.5B": config(1536, 28, 8960, 151936, 12, 2, True),
    "Llama-3.1-8B": config(4096, 32, 14336, 128256, 32, 8, False),
    "Qwen2.5-14B": config(5120, 48, 13824, 152064, 40, 8, False),
    "Qwen2.5-32B": config(5120, 64, 27648, 152064, 40, 8, False),
    "Llama-3.1-70B": config(8192, 80, 28672, 128256, 64, 8, False),
}
GPUS = (16, 24, 48, 80)


def cell(plan: MemoryPlan) -> str:
    if not plan.fits:
        return f"no (cheapest {plan.strategy} ~{plan.peak_gib:.0f})"
    ckpt = ", ckpt" if plan.gradient_checkpointing else ""
    return f"{plan.strategy} mb {plan.micro_batch}{ckpt}: {plan.peak_gib:.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seq", type=int, default=2048)
    args = p.parse_args()
    for kind in ("lora", "full"):
        print(f"\n{kind} job, seq {args.seq}, bf16 (GiB peak on the chosen plan)\n")
        print("| model | params | " + " | ".join(f"{g} GiB" for g in GPUS) + " |")
        print("|---|---|" + "---|" * len(GPUS))
        for name, cfg in MODELS.items():
            shape = shape_from_config(cfg)
            category = size_category(shape.params)
            d = CATEGORY_DEFAULTS[category]
            s = Settings(
                kind=kind,
                device="cuda",
                bf16=True,
                seq_len=args.seq,
                micro_batch=d.batch_size,
                effective_batch=d.batch_size * d.gradient_accumulation_steps,
                checkpointing=category not in ("tiny", "small"),
                lora_r=d.lora_r,
            )
            cells = [cell(choose(shape, s, device_gib=g, device_source="paper")) for g in GPUS]
            print(f"| {name} | {shape.params / 1e9:.2f}B | " + " | ".join(cells) + " |")
    torchtune()


def torchtune() -> None:
    """Llama 3.1 8B on one 4090 (torchtune's README: LoRA 16.2 GiB, QLoRA 7.4 GiB peak;
    recipes lora/qlora_finetune_single_device: batch 2, rank 8, activation checkpointing,
    bf16). Alpaca samples run a few hundred tokens: the estimate at 512 and 1024."""
    shape = shape_from_config(MODELS["Llama-3.1-8B"])
    print("\nLlama 3.1 8B, micro-batch 2, rank 8, checkpointing, bf16 (GiB)\n")
    print("| strategy | torchtune measured | planner, seq 512 | planner, seq 1024 |")
    print("|---|---|---|---|")
    for strategy, published in (("lora", 16.2), ("qlora", 7.4)):
        peaks = []
        for seq in (512, 1024):
            s = Settings("lora", "cuda", True, seq, 2, 16, True, 8)
            peaks.append(estimate(shape, strategy, s).peak)  # type: ignore[arg-type]
        print(f"| {strategy} | {published} | {peaks[0]:.1f} | {peaks[1]:.1f} |")


if __name__ == "__main__":
    main()

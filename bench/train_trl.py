"""bench/train.py's TRL arm: ``trl.SFTTrainer`` as a user would configure it.

The strongest off-the-shelf set-up for this job: the bench's samples in TRL's
conversational prompt-completion format (TRL renders them with the model's chat template,
as the bench rendered ours, and takes the loss on the completion only), padding-free
batching (``padding_free=True``: a batch's samples concatenated into one row, no padding,
``position_ids`` restarting at each sample), the same LoRA config, learning rate, schedule,
epochs, batch, seed and precision as the other arms (fp32; gradient checkpointing off:
TRL's defaults of bf16 and checkpointing are turned off to match). For QLoRA TRL gets the
same 4-bit model as ours (``services.training.quantized.load_4bit``) and the LoRA config as
``peft_config``; TRL then keeps the adapters in bf16 (its QLoRA default).

TRL documents padding-free batching as supported with FlashAttention 2/3 only; on a CPU
there is none, so the model runs SDPA, and transformers derives a block-diagonal causal
mask from the ``position_ids`` (exact: :func:`services.training.loss.packing_works`
checks it and the arm prints it), at the cost of attention over the whole row.
``--trl-padded`` runs TRL's other choice, its default collator (each batch padded to its
longest sample, with an attention mask), as a fourth arm.

trl is a benchmark-only dependency: ``.venv/bin/pip install 'personad[bench]'`` (or
``.venv/bin/pip install 'trl==1.16.0'``).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

INSTALL = (
    "the TRL arm needs trl, a benchmark-only dependency: .venv/bin/pip install "
    "'trl==1.16.0' (or the project's 'bench' extra); or leave the arm out with "
    "--arms ours,trainer"
)


def require_trl() -> None:
    """Exit with how to install trl when it is missing."""
    try:
        import trl  # noqa: F401
    except ImportError:
        raise SystemExit(INSTALL) from None


def run_trl(
    records: list[dict[str, Any]],
    base_dir: Path,
    out: Path,
    *,
    batch: int,
    accum: int,
    hyper: dict[str, Any],
    strategy: str,
    padding_free: bool = True,
) -> dict[str, Any]:
    """Train with ``SFTTrainer`` and score the result with the bench's eval function."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from bench.hf_arms import load_base, lora_config, training_args
    from services.training.batching import collate, encode
    from services.training.dataset_reader import Record
    from services.training.loss import TokenLoss, eval_loss, packing_works

    wall = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    train = [r for r in records if r["split"] == "train"]
    dataset = Dataset.from_list(
        [{"prompt": r["messages"][:1], "completion": r["messages"][1:]} for r in train]
    )
    torch.manual_seed(hyper["seed"])
    model = load_base(base_dir, strategy)
    peft_config = lora_config(hyper)
    args = SFTConfig(
        **training_args(out, batch, accum, hyper),
        bf16=False,
        gradient_checkpointing=False,
        padding_free=padding_free,
        # padding-free batching does not truncate: every sample fits max_seq_length
        max_length=None if padding_free else hyper["max_seq_length"],
        completion_only_loss=True,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
    if max(lengths) > hyper["max_seq_length"]:
        raise SystemExit("a sample is longer than max_seq_length: padding-free would not cut it")
    start, cpu_start = time.perf_counter(), time.process_time()
    result = trainer.train()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start

    peft_model = trainer.model
    base = peft_model.get_base_model()
    as_records = [
        Record(r["id"], r["prompt"], r["completion"], r["weight"], r["split"]) for r in records
    ]
    eval_ex, _ = encode([r for r in as_records if r.split == "eval"], tokenizer, 1024)
    train_ex, _ = encode([r for r in as_records if r.split == "train"], tokenizer, 1024)
    pad_id = tokenizer.pad_token_id or 0
    order = sorted(range(len(eval_ex)), key=lambda i: len(eval_ex[i]))
    eval_batches = [
        collate([eval_ex[i] for i in order[j : j + batch]], pad_id)
        for j in range(0, len(order), batch)
    ]
    scorer = TokenLoss(peft_model, base)
    loss = eval_loss(peft_model, scorer, eval_batches, torch.device("cpu"), contextlib.nullcontext)
    exact = packing_works(scorer, train_ex, torch.device("cpu"))
    tokens = sum(lengths) * hyper["num_epochs"]
    adapter_dtype = next(p.dtype for p in peft_model.parameters() if p.requires_grad)
    return {
        "tokens_per_s": tokens / seconds,
        "samples_per_s": len(lengths) * hyper["num_epochs"] / seconds,
        "train_seconds": seconds,
        "train_cpu_seconds": cpu_seconds,
        "train_tokens": tokens,
        "sample_tokens": sorted(lengths),
        "padding_share": 0.0 if padding_free else None,
        "steps": result.global_step,
        "eval_loss": loss,
        "wall_s": time.perf_counter() - wall,
        "packed_rows_exact": exact,
        "attention": base.config._attn_implementation,
        "adapter_dtype": str(adapter_dtype).removeprefix("torch."),
    }

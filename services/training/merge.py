"""Merging a LoRA adapter into its base model (child only: imports torch, transformers, peft).

Command line::

    python -m services.training.merge --base SPEC --adapter DIR --out DIR --cache-dir DIR

writes ``DIR`` (``--out``) as a full model: safetensors weights, config and tokenizer (the
adapter directory's tokenizer when it has one, else the base's). Exit codes as
``services.training.command.ExitCode``.

A LoRA adapter is merged into the base loaded in fp32. A QLoRA adapter (its run's memory
plan says ``qlora``) is merged into the base it trained on: the 4-bit NF4 base, dequantized
to fp32. It learned on those weights; merged into the original ones instead, SmolLM2-135M
scored 2.3% worse than its training run measured after 12 steps (bench/MEMORY.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from services.training.base_model import resolve_base_model
from services.training.command import ExitCode
from services.training.errors import BadInputError, TrainingError
from services.training.merge_check import eval_set, record, run_strategy


class MergeMismatch(TrainingError):
    """The merged model does not score as the adapter on its base did."""


def merge_base(base_dir: Path, adapter_dir: Path) -> tuple[Any, str]:
    """(the fp32 model the adapter is merged into, what it is: ``fp32`` or
    ``nf4-dequantized``; see the module docstring)."""
    import torch
    from transformers import AutoModelForCausalLM

    if run_strategy(adapter_dir.parent) == "qlora":
        from services.training.quantized import load_4bit

        quantized = load_4bit(base_dir, torch.device("cpu"), torch.float32)
        base = quantized.dequantize()
        base.is_loaded_in_4bit = False
        return base, "nf4-dequantized"
    return AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32), "fp32"


def merge_adapter(base_dir: Path, adapter_dir: Path, out_dir: Path) -> Path:
    """Write ``base_dir`` in fp32 (a QLoRA adapter's: dequantized from the 4-bit base it
    trained on) with the adapter at ``adapter_dir`` merged in to ``out_dir``; when the
    adapter sits in its run directory, check the merged model against it on the run's eval
    samples first (``merge_check``)."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    if not (adapter_dir / "adapter_config.json").is_file():
        raise BadInputError(f"{adapter_dir}: not a LoRA adapter (no adapter_config.json)")
    has_tokenizer = any(
        (adapter_dir / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")
    )
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir if has_tokenizer else base_dir)
    evals = eval_set(adapter_dir, tokenizer)
    base, merged_into = merge_base(base_dir, adapter_dir)
    adapted = PeftModel.from_pretrained(base, adapter_dir)
    before = evals.loss(adapted, base) if evals else None
    merged = adapted.merge_and_unload()
    if evals is not None and before is not None:
        after = evals.loss(merged, merged)
        assert after is not None
        check = record(adapter_dir, before, after, merged_into)
        if not check["ok"]:
            raise MergeMismatch(
                f"the merged model's eval loss {after:.4f} is not its adapter's {before:.4f} "
                f"(within {check['tolerance']:.0%})"
            )
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.rename(tmp, out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.training.merge")
    parser.add_argument("--base", required=True, help="base model spec (see base_model)")
    parser.add_argument("--adapter", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--cache-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        base_dir = resolve_base_model(args.base, args.cache_dir)
        merge_adapter(base_dir, args.adapter, args.out)
    except BadInputError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return ExitCode.BAD_INPUT
    except MergeMismatch as exc:
        sys.stderr.write(f"error: {exc}\n")
        return ExitCode.ERROR
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())

"""Merging a LoRA adapter into its base model (child only: imports torch, transformers, peft).

Command line::

    python -m services.training.merge --base SPEC --adapter DIR --out DIR --cache-dir DIR

writes ``DIR`` (``--out``) as a full model: safetensors weights, config and tokenizer (the
adapter directory's tokenizer when it has one, else the base's). Exit codes as
``services.training.command.ExitCode``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from services.training.base_model import resolve_base_model
from services.training.command import ExitCode
from services.training.errors import BadInputError, TrainingError
from services.training.merge_check import eval_set, record


class MergeMismatch(TrainingError):
    """The merged model does not score as the adapter on its base did."""


def merge_adapter(base_dir: Path, adapter_dir: Path, out_dir: Path) -> Path:
    """Write ``base_dir`` (loaded in full precision) with the adapter at ``adapter_dir``
    merged in to ``out_dir``; when the adapter sits in its run directory, check the merged
    model against it on the run's eval samples first (``merge_check``)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (adapter_dir / "adapter_config.json").is_file():
        raise BadInputError(f"{adapter_dir}: not a LoRA adapter (no adapter_config.json)")
    has_tokenizer = any(
        (adapter_dir / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")
    )
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir if has_tokenizer else base_dir)
    evals = eval_set(adapter_dir, tokenizer)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    adapted = PeftModel.from_pretrained(base, adapter_dir)
    before = evals.loss(adapted, base) if evals else None
    merged = adapted.merge_and_unload()
    if evals is not None and before is not None:
        after = evals.loss(merged, merged)
        assert after is not None
        check = record(adapter_dir, before, after)
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

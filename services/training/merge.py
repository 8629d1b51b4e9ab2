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
from services.training.errors import BadInputError


def merge_adapter(base_dir: Path, adapter_dir: Path, out_dir: Path) -> Path:
    """Write ``base_dir`` with the adapter at ``adapter_dir`` merged in to ``out_dir``."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (adapter_dir / "adapter_config.json").is_file():
        raise BadInputError(f"{adapter_dir}: not a LoRA adapter (no adapter_config.json)")
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    has_tokenizer = any(
        (adapter_dir / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")
    )
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir if has_tokenizer else base_dir)
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
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())

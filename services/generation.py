"""``python -m services.generation``: one answer of a model, for ``personad ask``.

Runs in a child process so that the daemon never imports torch; the loading and the
generation are ``services.training.inference``'s.

Command line::

    python -m services.generation --model SPEC_OR_DIR [--adapter DIR] --cache-dir DIR
        --prompt-file FILE [--max-new-tokens N] [--temperature T] [--no-repeat-ngram N]
        [--device cpu|cuda|auto]

``--model`` is a base model spec (see ``services.training.base_model``: ``embedded:smollm2``,
a ``.gguf`` file, a hub id in the local cache) or a full model directory; ``--adapter`` a
LoRA adapter directory applied on top of it. ``--prompt-file`` holds the prompt, already
rendered in the model's chat format through its generation prompt. Prints one JSON object
on stdout: ``{"text": "..."}``, or ``{"error": "..."}`` with exit code 3 (bad input, such as
a model that cannot be found) or 1 (anything else). Everything else goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import structlog

from services.training.command import ExitCode
from services.training.errors import BadInputError
from services.training.inference import generate, load_for_inference


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m services.generation", description=__doc__)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--model", required=True)
    p.add_argument("--adapter", type=Path)
    p.add_argument("--cache-dir", required=True, type=Path)
    p.add_argument("--prompt-file", required=True, type=Path)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument(
        "--no-repeat-ngram", type=int, default=0, help="never repeat an n-gram of this size"
    )
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # stdout carries only the answer: anything else printed goes to stderr
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    try:
        if args.max_new_tokens < 0:
            raise BadInputError("--max-new-tokens must be 0 or more")
        try:
            prompt = args.prompt_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise BadInputError(f"cannot read the prompt file: {exc}") from exc
        model, tokenizer = load_for_inference(
            args.model, adapter=args.adapter, cache_dir=args.cache_dir, device=args.device
        )
        text = generate(
            model,
            tokenizer,
            prompt,
            args.max_new_tokens,
            args.temperature,
            no_repeat_ngram=args.no_repeat_ngram,
        )
        result: dict[str, Any] = {"text": text}
        code = ExitCode.OK
    except BadInputError as exc:
        result, code = {"error": str(exc)}, ExitCode.BAD_INPUT
    except Exception as exc:
        result, code = {"error": f"{type(exc).__name__}: {exc}"}, ExitCode.ERROR
    out.write(json.dumps(result, ensure_ascii=False) + "\n")
    out.close()
    return int(code)


if __name__ == "__main__":
    sys.exit(main())

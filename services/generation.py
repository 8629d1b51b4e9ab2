"""``python -m services.generation``: a model's answers, for ``personad ask``.

Runs in a child process so that the daemon never imports torch; the loading and the
generation are ``services.training.inference``'s.

Command line::

    python -m services.generation --model SPEC_OR_DIR [--adapter DIR] --cache-dir DIR
        (--prompt-file FILE | --serve) [--max-new-tokens N] [--temperature T]
        [--no-repeat-ngram N] [--stop S]... [--device cpu|cuda|auto]

``--model`` is a base model spec (see ``services.training.base_model``: ``embedded:smollm2``,
a ``.gguf`` file, a hub id in the local cache) or a full model directory; ``--adapter`` a
LoRA adapter directory applied on top of it, merged into the weights once at load (every
token then costs what the base model's does). ``--stop`` (repeatable) adds a stop string to
the model's own (eos and its family's stop tokens); the answer ends before it.

One answer: ``--prompt-file`` holds the prompt, already rendered in the model's chat
format through its generation prompt. Prints one JSON object on stdout:
``{"text": "...", "stopped": true}`` (``stopped``: it ended at eos or a stop string, not by
running out of tokens), or ``{"error": "..."}`` with exit code 3 (bad input, such as a
model that cannot be found) or 1 (anything else).

Serving (``--serve``): loads the model once and prints one ready line,
``{"ready": true, "model": SPEC, "adapter": DIR|null, "seconds": LOAD_TIME}`` (or
``{"ready": false, "error": "..."}`` and exits 3 or 1), then reads JSON lines on stdin,
``{"id": ..., "prompt": "...", "max_new_tokens"?: N, "temperature"?: T, "stop"?: [...],
"no_repeat_ngram"?: N}`` (what is left out takes the command line's value; ``stop`` adds to
the model's stops and the command line's), and answers each with one line,
``{"id": ..., "text": "...", "stopped": bool, "seconds": S}`` or ``{"id": ..., "error":
"..."}``. It exits 0 at the end of stdin. Everything else goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import IO, Any

import structlog

from services.training.command import ExitCode
from services.training.errors import BadInputError
from services.training.inference import default_stops, generate_answer, load_for_inference


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m services.generation", description=__doc__)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--model", required=True)
    p.add_argument("--adapter", type=Path)
    p.add_argument("--cache-dir", required=True, type=Path)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompt-file", type=Path, help="answer the prompt in this file")
    what.add_argument(
        "--serve", action="store_true", help="load once, answer JSON lines from stdin"
    )
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument(
        "--no-repeat-ngram", type=int, default=0, help="never repeat an n-gram of this size"
    )
    p.add_argument(
        "--stop",
        action="append",
        default=[],
        help="a stop string besides the model's own (repeatable)",
    )
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # stdout carries only the answers: anything else printed goes to stderr
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    try:
        return serve(args, out) if args.serve else answer_once(args, out)
    finally:
        out.close()


def _write(out: IO[str], obj: dict[str, Any]) -> None:
    out.write(json.dumps(obj, ensure_ascii=False) + "\n")
    out.flush()


def _failure(exc: Exception) -> tuple[dict[str, Any], ExitCode]:
    if isinstance(exc, BadInputError):
        return {"error": str(exc)}, ExitCode.BAD_INPUT
    return {"error": f"{type(exc).__name__}: {exc}"}, ExitCode.ERROR


def _check_tokens(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise BadInputError("max_new_tokens must be an integer, 0 or more")
    return n


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    # An adapter is merged into the weights once: an answer then costs what the base's does.
    return load_for_inference(
        args.model, adapter=args.adapter, cache_dir=args.cache_dir, device=args.device, merge=True
    )


def answer_once(args: argparse.Namespace, out: IO[str]) -> int:
    """The one-shot command: the answer to ``--prompt-file``."""
    try:
        if args.max_new_tokens < 0:
            raise BadInputError("--max-new-tokens must be 0 or more")
        try:
            prompt = args.prompt_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise BadInputError(f"cannot read the prompt file: {exc}") from exc
        model, tokenizer = _load(args)
        done = generate_answer(
            model,
            tokenizer,
            prompt,
            args.max_new_tokens,
            args.temperature,
            stop=default_stops(tokenizer) + args.stop,
            no_repeat_ngram=args.no_repeat_ngram,
        )
        result: dict[str, Any] = {"text": done.text, "stopped": done.stopped}
        code = ExitCode.OK
    except Exception as exc:
        result, code = _failure(exc)
    _write(out, result)
    return int(code)


def serve(args: argparse.Namespace, out: IO[str]) -> int:
    """``--serve``: load once, print the ready line, answer request lines until EOF."""
    started = time.monotonic()
    try:
        if args.max_new_tokens < 0:
            raise BadInputError("--max-new-tokens must be 0 or more")
        model, tokenizer = _load(args)
    except Exception as exc:
        result, code = _failure(exc)
        _write(out, {"ready": False, **result})
        return int(code)
    stops = default_stops(tokenizer) + args.stop
    _write(
        out,
        {
            "ready": True,
            "model": args.model,
            "adapter": str(args.adapter) if args.adapter else None,
            "seconds": round(time.monotonic() - started, 3),
        },
    )
    for line in sys.stdin:
        if line.strip():
            _write(out, _answer_request(line, model, tokenizer, stops, args))
    return int(ExitCode.OK)


def _answer_request(
    line: str, model: Any, tokenizer: Any, stops: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    """One request line's answer line (``{"id", "error"}`` when it cannot be answered)."""
    started = time.monotonic()
    rid: Any = None
    try:
        try:
            request = json.loads(line)
        except ValueError as exc:
            raise BadInputError(f"not a JSON line: {exc}") from exc
        if not isinstance(request, dict):
            raise BadInputError("a request is a JSON object")
        rid = request.get("id")
        prompt = request.get("prompt")
        if not isinstance(prompt, str):
            raise BadInputError("'prompt' must be a string")
        extra = request.get("stop") or []
        if not isinstance(extra, list) or not all(isinstance(s, str) for s in extra):
            raise BadInputError("'stop' must be a list of strings")
        done = generate_answer(
            model,
            tokenizer,
            prompt,
            _check_tokens(request.get("max_new_tokens", args.max_new_tokens)),
            float(request.get("temperature", args.temperature)),
            stop=list(dict.fromkeys(stops + extra)),
            no_repeat_ngram=int(request.get("no_repeat_ngram", args.no_repeat_ngram)),
        )
    except Exception as exc:
        return {"id": rid, **_failure(exc)[0]}
    return {
        "id": rid,
        "text": done.text,
        "stopped": done.stopped,
        "seconds": round(time.monotonic() - started, 3),
    }


if __name__ == "__main__":
    sys.exit(main())

"""``python -m services.training.gate.evaluate_version``: a published version's persona
fidelity on demand (``personad eval``), measured as the gate measures a candidate's.

Command line::

    python -m services.training.gate.evaluate_version --run-dir DIR --model SPEC_OR_DIR
        [--adapter DIR] --base SPEC --cache-dir DIR [--version LABEL]
        [--device cpu|cuda|auto] [--max-new-tokens N] [--tolerance T]
        [--judge-model NAME [--judge-host URL] [--judge-timeout S]]

``DIR`` holds ``fidelity_probes.jsonl`` (the probes, with their memories) and
``schema_applied.json`` (the chat format the version was trained in). The base model
(``--base``) answers every probe as ``ask`` would, without and with its memories, then the
version (``--model``, a full model directory or a base spec, with the LoRA ``--adapter`` on
top when given). Both are scored as in the gate (:mod:`services.training.gate.fidelity`),
the base being the reference and what style is compared with. ``DIR/fidelity.json`` gets
``{"created", "version", "model", "adapter", "base", "fidelity", "outputs",
"fidelity_judge"}`` (``fidelity`` shaped as the gate verdict's, ``outputs`` every answer per
probe, model and setting, ``fidelity_judge`` the record of the Ollama model
``--judge-model`` that also judged the answers (:mod:`services.fidelity.judge`), or null).

Prints one JSON line on stdout, ``{"fidelity": ..., "fidelity_judge": ...}``, or
``{"error": "..."}``; everything else goes to stderr. The judge never makes it fail. Exit
codes as ``services.training.command.ExitCode``: 0 ok, 1 error, 2 usage, 3 bad input (no
probes, no chat format, a model that cannot be found), 4 out of memory, 5 cancelled by
SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import traceback
from pathlib import Path
from types import FrameType
from typing import IO, Any

import structlog

from services.durable import json_text, write_text
from services.fidelity.judge import JudgeConfig
from services.training.command import ExitCode, add_judge_arguments, judge_of
from services.training.config_model import GateSettings
from services.training.errors import BadInputError
from services.training.gate.fidelity import PROBES_FILE, judge_fidelity, outputs, read_probes
from services.training.gate.judge import Fidelity, Models, _free_memory, fidelity_verdict
from services.training.gate.sets import prompt_renderer
from services.training.gate.verdict import now

log = structlog.get_logger(__name__)

RESULT_FILE = "fidelity.json"


class Cancelled(BaseException):
    """SIGTERM or SIGINT arrived."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise Cancelled(signal.Signals(signum).name)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    gate = GateSettings()
    p = argparse.ArgumentParser(
        prog="python -m services.training.gate.evaluate_version", description=__doc__
    )
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--run-dir", required=True, type=Path)
    p.add_argument("--model", required=True, help="the version's model: a directory or a spec")
    p.add_argument("--adapter", type=Path, help="the version's LoRA adapter, on --model")
    p.add_argument("--base", required=True, help="the base model spec it is compared with")
    p.add_argument("--cache-dir", required=True, type=Path)
    p.add_argument("--version", help="the version's name for fidelity.json (v3)")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    p.add_argument("--max-new-tokens", type=int, default=gate.fidelity_tokens)
    p.add_argument("--tolerance", type=float, default=gate.fidelity_tolerance)
    add_judge_arguments(p)
    return p.parse_args(argv)


def _adapter_tokenizer(adapter: Path, fallback: Any) -> Any:
    """The adapter's tokenizer when training saved one beside it, else ``fallback``."""
    if any((adapter / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(adapter)
    return fallback


def evaluate_version(
    run_dir: Path,
    *,
    model: str,
    adapter: Path | None,
    base: str,
    cache_dir: Path,
    device: str = "cpu",
    version: str | None = None,
    max_new_tokens: int = GateSettings().fidelity_tokens,
    tolerance: float = GateSettings().fidelity_tolerance,
    judge: JudgeConfig | None = None,
) -> dict[str, Any]:
    """Both models' answers and scores (and the judge's record); writes ``fidelity.json``;
    returns its ``fidelity`` and ``fidelity_judge``."""
    probes = read_probes(run_dir / PROBES_FILE)
    if not probes:
        raise BadInputError(f"no fidelity probes in {run_dir / PROBES_FILE}")
    if max_new_tokens < 1:
        raise BadInputError("--max-new-tokens must be 1 or more")
    if not 0 <= tolerance <= 1:
        raise BadInputError("--tolerance must be from 0 to 1")
    if adapter is not None and not (adapter / "adapter_config.json").is_file():
        raise BadInputError(f"--adapter {adapter}: not a LoRA adapter directory")
    models = Models(
        "lora" if adapter is not None else "full",
        Path(base),
        adapter if adapter is not None else Path(model),
        cache_dir,
        device,
    )
    _free_memory()
    loaded, tokenizer = models.load_reference()  # the base
    prompt = prompt_renderer(run_dir, tokenizer)
    if prompt is None:
        raise BadInputError(f"no chat format: {run_dir / 'schema_applied.json'} is missing")
    fidelity = Fidelity(probes, prompt, max_new_tokens)
    answers = {"reference": fidelity.answers(loaded, tokenizer)}
    log.info("base answered", probes=len(probes))
    if adapter is not None and model == base:
        loaded = models.add_adapter(loaded)  # the adapter sits on this very base
        tokenizer = _adapter_tokenizer(adapter, tokenizer)
    else:
        del loaded
        _free_memory()
        from services.training.inference import load_for_inference

        loaded, tokenizer = load_for_inference(
            model, adapter=adapter, cache_dir=cache_dir, device=device
        )
    answers["candidate"] = fidelity.answers(loaded, tokenizer)
    log.info("version answered", probes=len(probes))
    del loaded
    _free_memory()
    result = fidelity_verdict(fidelity, answers, models, tolerance)
    judged = None if judge is None else judge_fidelity(judge, probes, answers, "base")
    record = {
        "created": now(),
        "version": version,
        "model": model,
        "adapter": str(adapter) if adapter is not None else None,
        "base": base,
        "fidelity": result,
        "outputs": outputs(probes, {"base": answers["reference"], "version": answers["candidate"]}),
        "fidelity_judge": judged,
    }
    write_text(run_dir / RESULT_FILE, json_text(record))
    return {"fidelity": result, "fidelity_judge": judged}


def _is_oom(exc: BaseException) -> bool:
    torch: Any = sys.modules.get("torch")
    return isinstance(exc, MemoryError) or (
        torch is not None and isinstance(exc, torch.OutOfMemoryError)
    )


def _write(out: IO[str], obj: dict[str, Any]) -> None:
    out.write(json.dumps(obj, ensure_ascii=False, allow_nan=False) + "\n")
    out.flush()


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # stdout carries only the result line: anything else goes to stderr
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        result: dict[str, Any] = evaluate_version(
            args.run_dir,
            model=args.model,
            adapter=args.adapter,
            base=args.base,
            cache_dir=args.cache_dir,
            device=args.device,
            version=args.version,
            max_new_tokens=args.max_new_tokens,
            tolerance=args.tolerance,
            judge=judge_of(args),
        )
        code = ExitCode.OK
    except BadInputError as exc:
        result, code = {"error": str(exc)}, ExitCode.BAD_INPUT
    except Cancelled as exc:
        result, code = {"error": f"cancelled by {exc}"}, ExitCode.CANCELLED
    except BaseException as exc:
        code = ExitCode.OOM if _is_oom(exc) else ExitCode.ERROR
        result = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stderr.write("".join(traceback.format_exception(exc)))
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        _write(out, json.loads(json_text(result)))  # NaN and infinity as null
    finally:
        out.close()
    return int(code)


if __name__ == "__main__":
    sys.exit(main())

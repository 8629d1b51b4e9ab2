"""The training child: ``python -m services.training``.

::

    python -m services.training --run-dir DIR --kind lora|full --base SPEC --cache-dir DIR
        [--config FILE] [--progress-fd N] [--merge] [--device auto|cpu|cuda] [--threads N]
        [--reference-model SPEC_OR_DIR [--reference-adapter DIR]]
        [--judge-model NAME [--judge-host URL] [--judge-timeout S]]

``--run-dir``    holds ``fine_tune_dataset.jsonl``; receives ``progress.jsonl``, ``train.log``,
                 ``checkpoints/`` and the artifact (``adapter/`` or ``model/``).
``--base``       base model spec: ``embedded:smollm2``, a model directory, a ``.gguf`` file or a
                 hub id in ``<cache-dir>/hub`` or the Hugging Face cache (see
                 ``services.training.base_model``).
``--cache-dir``  where GGUF files are converted once, e.g. ``<state>/base-models``.
``--config``     a resolved ``config.json`` (``ResolvedConfig.write``); default
                 ``<run-dir>/config.json``; when that is missing too, the configuration is
                 resolved here from the shipped ``etc/`` and written there.
``--progress-fd`` an inherited file descriptor for the JSON-lines progress events (see
                 ``services.training.progress``); they are always appended to
                 ``progress.jsonl`` too. With 1 (stdout), stray output is sent to stderr.
``--merge``      for LoRA: also write the adapter merged into the base under ``model/``.
``--device``     ``auto`` (default): CUDA when available, else CPU.
``--threads``    torch CPU threads (default: torch's choice).
``--reference-model`` the model the evaluation gate compares the candidate with, normally the
                 active one: a base spec or a full model directory; ``--reference-adapter``
                 a LoRA adapter on it. Default: the base model the run trained from.
``--judge-model`` an Ollama model that also judges the gate's fidelity answers, at
                 ``--judge-host`` (default Ollama's own address), ``--judge-timeout`` seconds
                 per question; recorded in ``eval.json``'s ``fidelity_judge``, never a
                 reason to reject (``services.fidelity.judge``).

The child runs as a recipe: parse the arguments, read and validate the dataset, resolve
the configuration, then :class:`services.training.recipe.FineTuneRecipe`'s ``setup()`` and
``train()``, the gate, ``cleanup()``, and the exit code.

After training, the evaluation gate (``services.training.gate``; config ``gate``) judges the
artifact: its verdict is the ``done`` event's ``metrics["gate"]``
(``{"passed": bool, "reason": str, ...}``), also written to ``eval.json`` and to
``run-summary.json``'s ``"gate"`` key. A rejected candidate still exits 0: the daemon
reads the verdict.

Exit codes: ``services.training.command.ExitCode`` (0 ok, 1 error, 2 usage, 3 bad input,
4 out of memory, 5 cancelled by SIGTERM/SIGINT); every failure ends with an ``error`` event.
The dataset is validated before torch is imported, so bad input fails in well under a second.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

import structlog

from services.shipped import etc_dir
from services.training.base_model import locate, parse_spec, resolve_base_model
from services.training.command import ExitCode, add_judge_arguments, judge_of
from services.training.config import CONFIG_FILE, ResolvedConfig, resolve_config
from services.training.dataset_reader import DATASET_FILE, Selection, read_dataset, select
from services.training.errors import BadInputError, TrainingConfigError
from services.training.hub_download import HubUnreachable, fetch_missing
from services.training.progress import ProgressWriter
from services.training.ranks import Ranks, die_with_parent, progress_fd

if TYPE_CHECKING:
    from services.training.recipe import FineTuneRecipe

SHIPPED_ETC = etc_dir()
log = structlog.get_logger("services.training")


class Cancelled(BaseException):
    """SIGTERM or SIGINT arrived."""


class _Tee:
    """A file-like that writes to every stream it holds (train.log and stderr)."""

    def __init__(self, *streams: TextIO):
        self.streams = streams

    def write(self, text: str) -> int:
        for s in self.streams:
            s.write(text)
            s.flush()
        return len(text)

    def flush(self) -> None:
        for s in self.streams:
            s.flush()


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m services.training", description=__doc__)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--run-dir", required=True, type=Path)
    p.add_argument("--kind", required=True, choices=("lora", "full"))
    p.add_argument("--base", required=True)
    p.add_argument("--cache-dir", required=True, type=Path)
    p.add_argument("--config", type=Path)
    p.add_argument("--progress-fd", type=int)
    p.add_argument("--merge", action="store_true")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int)
    p.add_argument("--reference-model")
    p.add_argument("--reference-adapter", type=Path)
    add_judge_arguments(p)
    args = p.parse_args(argv)
    if args.reference_adapter is not None and args.reference_model is None:
        p.error("--reference-adapter needs --reference-model (the model it applies to)")
    return args


def _setup_logging(run_dir: Path, ranks: Ranks | None) -> TextIO | None:
    """train.log and stderr; a rank other than 0 logs to stderr only, named by its rank."""
    if ranks is not None and not ranks.main:
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S"),
                lambda _, __, event: {**event, "rank": ranks.rank},
                structlog.dev.ConsoleRenderer(colors=False),
            ],
            logger_factory=structlog.PrintLoggerFactory(sys.stderr),
            cache_logger_on_first_use=True,
        )
        return None
    log_file = open(run_dir / "train.log", "a", encoding="utf-8")  # noqa: SIM115 - process-long
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S"),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        logger_factory=structlog.PrintLoggerFactory(_Tee(log_file, sys.stderr)),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    return log_file


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise Cancelled(signal.Signals(signum).name)


def _resolved(args: argparse.Namespace, n_samples: int) -> ResolvedConfig:
    path = args.config or args.run_dir / CONFIG_FILE
    if path.is_file():
        resolved = ResolvedConfig.read(path)
        if resolved.kind != args.kind:
            raise BadInputError(
                f"{path} was resolved for kind {resolved.kind!r}, not {args.kind!r}"
            )
        return resolved
    if args.config is not None:
        raise BadInputError(f"config file not found: {path}")
    resolved = resolve_config(
        base_model=locate(args.base, args.cache_dir),
        kind=args.kind,
        n_samples=n_samples,
        mode=None,
        preset=None,
        job_args={},
        etc_dir=SHIPPED_ETC,
    )
    resolved.write(args.run_dir)
    return resolved


def _check_reference(model: str | None, adapter: Path | None, cache_dir: Path) -> None:
    """A gate reference that cannot be found fails the run before it trains."""
    if model is not None:
        locate(model, cache_dir)
    if adapter is not None and not (adapter / "adapter_config.json").is_file():
        raise BadInputError(f"--reference-adapter {adapter}: not a LoRA adapter directory")


# What an allocation that failed says when it is not a torch.OutOfMemoryError: torch's CPU
# allocator raises a plain RuntimeError (under an address-space limit, say), and so do
# some CUDA paths.
OOM_MESSAGES = ("can't allocate memory", "cannot allocate memory", "out of memory")


def _is_oom(exc: BaseException) -> bool:
    torch: Any = sys.modules.get("torch")
    if isinstance(exc, MemoryError) or (
        torch is not None and isinstance(exc, torch.OutOfMemoryError)
    ):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in OOM_MESSAGES)


class RankProgress(ProgressWriter):
    """The progress of a rank other than 0: only its own failure (the ``error`` event)."""

    def emit(self, event: str, **fields: Any) -> None:
        if event == "error":
            super().emit(event, **fields)


def _progress(args: argparse.Namespace, ranks: Ranks | None) -> ProgressWriter:
    fd = args.progress_fd if ranks is None else progress_fd(args.progress_fd)
    if fd == 1:  # keep the protocol stream clean: anything else printed goes to stderr
        fd = os.dup(1)
        os.dup2(2, 1)
    writer = ProgressWriter if ranks is None or ranks.main else RankProgress
    return writer(args.run_dir / "progress.jsonl", fd)


def _gate(
    args: argparse.Namespace,
    recipe: FineTuneRecipe,
    artifact: Path,
    resolved: ResolvedConfig,
    selection: Selection,
) -> dict[str, Any]:
    from services.training.gate import evaluate_candidate

    return evaluate_candidate(
        run_dir=args.run_dir,
        kind=args.kind,
        base_dir=recipe.base_dir,
        artifact=artifact,
        resolved=resolved,
        selection=selection,
        cache_dir=args.cache_dir,
        reference_model=args.reference_model,
        reference_adapter=args.reference_adapter,
        device=args.device,
        judge=judge_of(args),
    )


def _recipe(
    args: argparse.Namespace,
    ranks: Ranks | None,
    progress: ProgressWriter,
    resolved: ResolvedConfig,
    selection: Selection,
) -> FineTuneRecipe:
    """The recipe: this process alone, or its rank's share of a torchrun job."""
    common: dict[str, Any] = {
        "run_dir": args.run_dir,
        "kind": args.kind,
        "base_dir": resolve_base_model(args.base, args.cache_dir),
        "resolved": resolved,
        "selection": selection,
        "device_name": args.device,
        "merge": args.merge,
        "progress": progress,
    }
    if ranks is None:
        from services.training.recipe import FineTuneRecipe

        return FineTuneRecipe(**common)
    from services.training.distributed import DistributedRecipe, init_process_group

    common["device_name"] = init_process_group(ranks, args.device)
    return DistributedRecipe(ranks=ranks, **common)


def _run(args: argparse.Namespace, progress: ProgressWriter, ranks: Ranks | None) -> None:
    """Dataset, configuration, the recipe's setup and training, the gate, the ``done``
    event. torch is first imported after the dataset and the configuration are checked.
    Under torchrun every rank trains; rank 0 alone then runs the gate and reports."""
    records = read_dataset(args.run_dir / DATASET_FILE)
    base = parse_spec(args.base)
    if base.kind == "hub" and ranks is None:  # run by hand: a hub base is fetched here
        fetch_missing(base.location, args.cache_dir, progress)
    resolved = _resolved(args, len(records))
    selection = select(records, resolved.config)
    _check_reference(args.reference_model, args.reference_adapter, args.cache_dir)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    recipe = _recipe(args, ranks, progress, resolved, selection)
    try:
        recipe.setup()
        artifact, metrics = recipe.train()
        if ranks is not None:
            from services.training.distributed import close_process_group

            close_process_group()
            if not ranks.main:
                return
        metrics["gate"] = _gate(args, recipe, artifact, resolved, selection)
    finally:
        recipe.cleanup()
    progress.emit("done", metrics=metrics, artifact=str(artifact))
    log.info(
        "done",
        artifact=str(artifact),
        eval_loss=metrics["eval_loss"],
        gate=metrics["gate"]["passed"],
    )


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    ranks = Ranks.from_env()
    if ranks is not None:
        die_with_parent()
    args.run_dir.mkdir(parents=True, exist_ok=True)
    progress = _progress(args, ranks)
    log_file = _setup_logging(args.run_dir, ranks)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        _run(args, progress, ranks)
        code, message = ExitCode.OK, ""
    except (BadInputError, TrainingConfigError) as exc:
        code, message = ExitCode.BAD_INPUT, str(exc)
    except HubUnreachable as exc:
        code, message = ExitCode.ERROR, str(exc)
    except Cancelled as exc:
        code, message = ExitCode.CANCELLED, f"cancelled by {exc}"
    except BaseException as exc:
        code = ExitCode.OOM if _is_oom(exc) else ExitCode.ERROR
        message = f"{type(exc).__name__}: {exc}"
        log.error("traceback", text="".join(traceback.format_exception(exc)))
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if code != ExitCode.OK:
        if ranks is not None:
            message = f"rank {ranks.rank}: {message}"
        log.error("training failed", message=message, exit_code=int(code))
        progress.emit("error", message=message, code=int(code))
    progress.close()
    if log_file is not None:
        log_file.close()
    return code


if __name__ == "__main__":
    sys.exit(main())

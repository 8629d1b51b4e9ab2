"""The training child's command lines and exit codes, for the daemon's job supervisor.

Train (see ``services/training/__main__.py``)::

    python -m services.training --run-dir DIR --kind lora|full --base SPEC --cache-dir DIR
        [--config FILE] [--progress-fd N] [--merge] [--device auto|cpu|cuda] [--threads N]
        [--reference-model SPEC_OR_DIR [--reference-adapter DIR]]
        [--judge-model NAME [--judge-host URL] [--judge-timeout S]]

``--reference-model`` / ``--reference-adapter``: what the evaluation gate compares the
candidate with (the active model; default: the base the run trained from).
``--judge-model``: an Ollama model that also judges the gate's fidelity answers
(``services.fidelity.judge``; ``eval.judge_model``), at ``--judge-host``.

Merge a LoRA adapter into a full model (see ``services/training/merge.py``)::

    python -m services.training.merge --base SPEC --adapter DIR --out DIR --cache-dir DIR

Pass the progress pipe's write end with ``pass_fds=(fd,)`` and ``--progress-fd fd``.

Under torchrun (``nproc_per_node``)::

    python -m torch.distributed.run --standalone --nproc-per-node N --max-restarts 0 \
        -m services.training --run-dir DIR ...
"""

from __future__ import annotations

import argparse
import enum
import sys
from pathlib import Path

from services.fidelity.judge import DEFAULT_HOST, DEFAULT_TIMEOUT_S, JudgeConfig


class ExitCode(enum.IntEnum):
    """How the training child ended; every failure also writes a final ``error`` event."""

    OK = 0
    ERROR = 1  # anything unexpected; the traceback is in train.log
    USAGE = 2  # bad command line (argparse)
    BAD_INPUT = 3  # dataset missing, empty, malformed or too small; base model not found
    OOM = 4  # out of memory (torch.OutOfMemoryError or MemoryError)
    CANCELLED = 5  # SIGTERM or SIGINT


def torchrun_processes(launcher: str, nproc_per_node: int | None) -> int | str | None:
    """The ranks of a job (``training.launcher``, ``training.nproc_per_node``): None for one
    process without torchrun; else the configured count, or ``"gpu"`` (torchrun starts one
    rank per visible GPU). The memory planner (``memory_plan.job_devices``) plans a job
    for this many devices."""
    if launcher != "torchrun":
        return None
    return nproc_per_node if nproc_per_node is not None else "gpu"


def build_command(
    *,
    run_dir: Path,
    kind: str,
    base: str,
    cache_dir: Path,
    config: Path | None = None,
    progress_fd: int | None = None,
    merge: bool = False,
    device: str | None = None,
    threads: int | None = None,
    reference_model: str | None = None,
    reference_adapter: Path | None = None,
    judge: JudgeConfig | None = None,
    python: str = sys.executable,
    nproc_per_node: int | str | None = None,
) -> list[str]:
    """The argv that trains ``kind`` on ``<run_dir>/fine_tune_dataset.jsonl``: one process,
    or with ``nproc_per_node`` (a count, or ``gpu``: every visible GPU) the same child
    under torchrun, one rank per process (see ``services.training.ranks``)."""
    argv = [python]
    if nproc_per_node is not None:
        argv += ["-m", "torch.distributed.run", "--standalone"]
        argv += ["--nproc-per-node", str(nproc_per_node), "--max-restarts", "0"]
    argv += ["-m", "services.training", "--run-dir", str(run_dir), "--kind", kind]
    argv += ["--base", base, "--cache-dir", str(cache_dir)]
    if config is not None:
        argv += ["--config", str(config)]
    if progress_fd is not None:
        argv += ["--progress-fd", str(progress_fd)]
    if merge:
        argv.append("--merge")
    if device is not None:
        argv += ["--device", device]
    if threads is not None:
        argv += ["--threads", str(threads)]
    if reference_model is not None:
        argv += ["--reference-model", reference_model]
        if reference_adapter is not None:
            argv += ["--reference-adapter", str(reference_adapter)]
    elif reference_adapter is not None:
        raise ValueError("reference_adapter needs reference_model (the model it applies to)")
    return argv + judge_argv(judge)


def judge_argv(judge: JudgeConfig | None) -> list[str]:
    """``--judge-model``, ``--judge-host``, ``--judge-timeout`` (none without a judge)."""
    if judge is None:
        return []
    return [
        "--judge-model",
        judge.model,
        "--judge-host",
        judge.host,
        "--judge-timeout",
        f"{judge.timeout_s:g}",
    ]


def add_judge_arguments(parser: argparse.ArgumentParser) -> None:
    """The judge's options of a child's command line."""
    parser.add_argument("--judge-model", help="an Ollama model judging persona fidelity")
    parser.add_argument("--judge-host", help="its Ollama server (default: Ollama's own)")
    parser.add_argument("--judge-timeout", type=float, help="seconds per question to it")


def judge_of(args: argparse.Namespace) -> JudgeConfig | None:
    """The judge a child's parsed arguments name; None when none is."""
    if not args.judge_model:
        return None
    timeout = args.judge_timeout if args.judge_timeout and args.judge_timeout > 0 else None
    return JudgeConfig(
        args.judge_model, args.judge_host or DEFAULT_HOST, timeout or DEFAULT_TIMEOUT_S
    )


def build_merge_command(
    *, base: str, adapter: Path, out: Path, cache_dir: Path, python: str = sys.executable
) -> list[str]:
    """The argv that merges the LoRA adapter at ``adapter`` into ``base`` and writes ``out``."""
    return [
        python,
        "-m",
        "services.training.merge",
        "--base",
        base,
        "--adapter",
        str(adapter),
        "--out",
        str(out),
        "--cache-dir",
        str(cache_dir),
    ]

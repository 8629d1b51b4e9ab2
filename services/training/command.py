"""The training child's command lines and exit codes, for the daemon's job supervisor.

Train (see ``services/training/__main__.py``)::

    python -m services.training --run-dir DIR --kind lora|full --base SPEC --cache-dir DIR
        [--config FILE] [--progress-fd N] [--merge] [--device auto|cpu|cuda] [--threads N]
        [--reference-model SPEC_OR_DIR [--reference-adapter DIR]]

``--reference-model`` / ``--reference-adapter``: what the evaluation gate compares the
candidate with (the active model; default: the base the run trained from).

Merge a LoRA adapter into a full model (see ``services/training/merge.py``)::

    python -m services.training.merge --base SPEC --adapter DIR --out DIR --cache-dir DIR

Pass the progress pipe's write end with ``pass_fds=(fd,)`` and ``--progress-fd fd``.
"""

from __future__ import annotations

import enum
import sys
from pathlib import Path


class ExitCode(enum.IntEnum):
    """How the training child ended; every failure also writes a final ``error`` event."""

    OK = 0
    ERROR = 1  # anything unexpected; the traceback is in train.log
    USAGE = 2  # bad command line (argparse)
    BAD_INPUT = 3  # dataset missing, empty, malformed or too small; base model not found
    OOM = 4  # out of memory (torch.OutOfMemoryError or MemoryError)
    CANCELLED = 5  # SIGTERM or SIGINT


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
    python: str = sys.executable,
) -> list[str]:
    """The argv that trains ``kind`` on ``<run_dir>/fine_tune_dataset.jsonl``."""
    argv = [python, "-m", "services.training", "--run-dir", str(run_dir), "--kind", kind]
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
    return argv


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

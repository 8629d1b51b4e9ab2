"""What the benches share to run the training child (``python -m services.training``):
its environment and the metrics of its ``done`` event."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from services.training.progress import DoneEvent, parse_line

REPO = Path(__file__).resolve().parents[1]


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment with the repository first on ``PYTHONPATH`` (the
    caller's entries kept after it) and ``extra`` set."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def done_metrics(stdout: str) -> dict[str, Any]:
    """The ``done`` event's metrics in the child's progress output (``--progress-fd 1``)."""
    for line in stdout.splitlines():
        if isinstance(event := parse_line(line), DoneEvent):
            return event.metrics
    raise ValueError("the training child's output has no done event")

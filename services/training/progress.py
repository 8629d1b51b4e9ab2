"""The training child's progress protocol: one JSON object per line.

Events (every one also carries ``"ts"``, seconds since the epoch)::

    {"event": "start", "total_steps", "epochs", "n_train", "n_eval", ...}
    {"event": "step", "step", "loss", "lr", "tokens_per_s", "eta_s"}
    {"event": "eval", "step", "eval_loss"}            # step 0: the untrained model
    {"event": "checkpoint", "step", "path", "eval_loss"}
    {"event": "done", "metrics": {...}, "artifact": "<run_dir>/adapter"}
    {"event": "error", "message", "code"}             # code: the exit code that follows
    {"event": "download", "repo", "done_bytes", "total_bytes"}  # a hub base being fetched

:class:`ProgressWriter` (child side) writes them to a file descriptor and appends them to
``<run_dir>/progress.jsonl``. :class:`ProgressParser` (daemon side) turns a byte stream into
typed events; it tolerates garbage, lines split across reads and oversized lines (dropped
and counted).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.durable import finite

MAX_LINE_BYTES = 64 * 1024


@dataclass(frozen=True)
class StartEvent:
    total_steps: int
    raw: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class StepEvent:
    step: int
    loss: float | None  # None: not finite (diverged)
    lr: float
    tokens_per_s: float
    eta_s: float
    raw: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class EvalEvent:
    step: int
    eval_loss: float | None
    raw: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class CheckpointEvent:
    step: int
    path: str
    raw: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class DoneEvent:
    metrics: dict[str, Any]
    artifact: str
    raw: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class ErrorEvent:
    message: str
    code: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class DownloadEvent:
    repo: str
    done_bytes: int
    total_bytes: int
    raw: dict[str, Any] = field(default_factory=dict, compare=False)


Event = (
    StartEvent | StepEvent | EvalEvent | CheckpointEvent | DoneEvent | ErrorEvent | DownloadEvent
)


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(v)
    return v


def _num(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise TypeError(v)
    return float(v)


def _loss(v: Any) -> float | None:
    return None if v is None else _num(v)


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError(v)
    return v


def event_from_dict(obj: Any) -> Event | None:
    """The typed event of a decoded JSON object; None when it is not a valid event."""
    if not isinstance(obj, dict):
        return None
    try:
        match obj.get("event"):
            case "start":
                return StartEvent(_int(obj["total_steps"]), obj)
            case "step":
                return StepEvent(
                    _int(obj["step"]),
                    _loss(obj["loss"]),
                    _num(obj["lr"]),
                    _num(obj["tokens_per_s"]),
                    _num(obj["eta_s"]),
                    obj,
                )
            case "eval":
                return EvalEvent(_int(obj["step"]), _loss(obj["eval_loss"]), obj)
            case "checkpoint":
                return CheckpointEvent(_int(obj["step"]), _str(obj["path"]), obj)
            case "done":
                metrics = obj["metrics"]
                if not isinstance(metrics, dict):
                    return None
                return DoneEvent(metrics, _str(obj["artifact"]), obj)
            case "error":
                code = obj.get("code")
                return ErrorEvent(_str(obj["message"]), None if code is None else _int(code), obj)
            case "download":
                done, total = _int(obj["done_bytes"]), _int(obj["total_bytes"])
                return DownloadEvent(_str(obj["repo"]), done, total, obj)
    except (KeyError, TypeError):
        return None
    return None


def parse_line(line: bytes | str) -> Event | None:
    """One line (without its newline) as a typed event; None for anything else."""
    try:
        text = line.decode("utf-8") if isinstance(line, bytes) else line
        return event_from_dict(json.loads(text))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


class ProgressParser:
    """Incremental parser: :meth:`feed` it bytes as they arrive, :meth:`close` at end of stream.

    ``garbage`` counts non-empty lines that were not valid events; ``oversized`` counts lines
    longer than ``max_line`` bytes, which are dropped without being buffered whole.
    """

    def __init__(self, max_line: int = MAX_LINE_BYTES):
        self.max_line = max_line
        self.garbage = 0
        self.oversized = 0
        self._buf = bytearray()
        self._skipping = False

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                self._append(data[start:])
                return events
            self._append(data[start:nl])
            if self._skipping:
                self._skipping = False
            else:
                self._emit(events)
            self._buf.clear()
            start = nl + 1

    def close(self) -> list[Event]:
        """Parse what is left after the last newline (a final line without one)."""
        events: list[Event] = []
        if not self._skipping:
            self._emit(events)
        self._buf.clear()
        self._skipping = False
        return events

    def _append(self, chunk: bytes) -> None:
        if self._skipping:
            return
        if len(self._buf) + len(chunk) > self.max_line:
            self.oversized += 1
            self._skipping = True
            self._buf.clear()
            return
        self._buf += chunk

    def _emit(self, events: list[Event]) -> None:
        line = bytes(self._buf).strip()
        if not line:
            return
        event = parse_line(line)
        if event is None:
            self.garbage += 1
        else:
            events.append(event)


class ProgressWriter:
    """Child side: writes each event as one line to ``fd`` (if given) and to ``path``.

    A closed pipe (the reader went away) only stops the writes to ``fd``.
    """

    def __init__(self, path: Path, fd: int | None = None):
        self.path = path
        self.fd = fd
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def emit(self, event: str, **fields: Any) -> None:
        record = finite({"event": event, "ts": round(time.time(), 3), **fields})
        line = (json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
        self._file.write(line.decode("utf-8"))
        self._file.flush()
        if self.fd is not None:
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(self.fd, view) :]
            except OSError:
                self.fd = None

    def close(self) -> None:
        self._file.close()


@dataclass
class Tally:
    """Where the loop stands: the step, its epoch and loss, and the counts behind the
    throughput metrics (tokens, padded slots, seconds spent in steps)."""

    step: int = 0
    epoch: int = 0
    loss: float = math.nan
    tokens: int = 0
    slots: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0

"""Reading JSON-lines files (one JSON object per non-blank line) and JSON object files.

Every reader of a personad JSONL file (a run's ``fine_tune_dataset.jsonl``, a regression
or general evaluation set) takes its objects from :func:`read_objects`, which names the
line at fault (``path:N``) in the error it raises. What the objects must hold is the
caller's business.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_objects(
    path: Path, *, what: str, error: type[Exception]
) -> list[tuple[str, dict[str, Any]]]:
    """``[(where, object), ...]`` for each non-blank line of ``path``, ``where`` being
    ``path:N``. Raises ``error`` when the file is missing (``"<what> not found: path"``),
    unreadable, or a line is not a JSON object."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise error(f"{what} not found: {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{what} unreadable: {path}: {exc}") from exc
    out: list[tuple[str, dict[str, Any]]] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{where}: not JSON: {exc.msg}") from exc
        except RecursionError as exc:
            raise error(f"{where}: nested too deeply") from exc
        if not isinstance(obj, dict):
            raise error(f"{where}: not a JSON object")
        out.append((where, obj))
    return out


def read_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; {} when it is missing, unreadable or not an object (for
    files that may not be there yet, such as a run's ``eval.json``)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}

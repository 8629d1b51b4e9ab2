"""``personad remember``: one prompt/completion pair (ZEGA's ``collect_training_example``)
written as a memory file into the profile's memory folder, which stays the source of
truth; the watcher ingests it as any other file.

The file is ``<profiles_dir>/<profile>/memory/remembered/<UTC time>-<sha256[:12]>.json``,
one prompt/completion record ``{"prompt", "completion", "timestamp", "quality_score"?,
"metadata"?}``, written to a hidden temporary file beside it, fsynced and renamed into
place (``services.durable``), so the watcher never reads half of it. The record is parsed
and curated before it is written: what the parser would reject is refused here with the
reason, and the answer says the memory's id and whether its sample is eligible.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.curation import CurationRules, curate
from services.durable import fsync_dir, write_text
from services.errors import PersonadError
from services.memories import parse_bytes

FOLDER = "remembered"
MAX_TEXT = 100_000  # characters of a prompt or a completion


class RememberError(PersonadError):
    """A pair that cannot be remembered (empty text, a quality out of range, metadata
    that is not an object, a record the parser would reject)."""


@dataclass(frozen=True)
class Remembered:
    path: Path
    memory_id: str
    eligible: bool
    quality: float
    excluded: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "memory_id": self.memory_id,
            "eligible": self.eligible,
            "quality": self.quality,
            "excluded": self.excluded,
        }


def _record(
    prompt: Any, completion: Any, quality: Any, metadata: Any, now: datetime
) -> dict[str, Any]:
    for name, text in (("prompt", prompt), ("completion", completion)):
        if not isinstance(text, str) or not text.strip():
            raise RememberError(f"the {name} is empty; say what was asked and what was answered")
        if len(text) > MAX_TEXT:
            raise RememberError(f"the {name} is longer than {MAX_TEXT:,} characters")
    record: dict[str, Any] = {
        "prompt": prompt.strip(),
        "completion": completion.strip(),
        "timestamp": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    if quality is not None:
        if (
            isinstance(quality, bool)
            or not isinstance(quality, int | float)
            or not math.isfinite(quality)
            or not 0 <= quality <= 10
        ):
            raise RememberError(f"quality must be a number from 0 to 10, not {quality!r}")
        record["quality_score"] = quality
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise RememberError('metadata must be a JSON object, e.g. {"topic": "cooking"}')
        record["metadata"] = metadata
    return record


def remember(
    memory_dir: Path,
    *,
    prompt: Any,
    completion: Any,
    quality: Any = None,
    metadata: Any = None,
    rules: CurationRules,
    now: datetime | None = None,
) -> Remembered:
    """Write one pair into ``memory_dir`` (the profile's ``memory/`` folder, created when
    missing); raises :class:`RememberError` for bad input, ``OSError`` when it cannot be
    written."""
    now = now or datetime.now(UTC)
    record = _record(prompt, completion, quality, metadata, now)
    text = json.dumps(record, ensure_ascii=False, indent=2) + "\n"
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    name = f"{now.strftime('%Y%m%dT%H%M%S')}-{digest[:12]}.json"
    parsed = parse_bytes(name, text.encode("utf-8"))
    if parsed.problems or len(parsed.memories) != 1:
        reason = "; ".join(p.reason for p in parsed.problems) or "no memory in the record"
        raise RememberError(f"this pair cannot be remembered: {reason}")
    memory = parsed.memories[0]
    sample = curate(memory, rules)
    folder = memory_dir / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    path = write_text(folder / name, text)
    fsync_dir(folder)
    return Remembered(
        path=path,
        memory_id=memory.id,
        eligible=sample.excluded is None,
        quality=round(sample.quality, 3),
        excluded=sample.excluded,
    )

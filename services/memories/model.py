"""The records that parsing produces: memories and per-record problems."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

# The memory formats of docs/ARCHITECTURE.md ("Memory formats").
FORMATS = (
    "metahuman",
    "prompt_completion",
    "prompt_response",
    "alpaca",
    "chat",
    "qa",
    "prose",
)


def canonical_json(value: Any) -> str:
    """A stable JSON text: sorted keys, no insignificant whitespace, real UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_id(canonical: dict[str, Any]) -> str:
    """The memory id: sha256 of the canonical content (never of the path or the file)."""
    return hashlib.sha256(canonical_json(canonical).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Memory:
    """One memory, whatever format it came in.

    ``prompt`` is what the person saw, thought or was asked (MetaHuman ``content``,
    ``prompt``, ``instruction`` + ``input``, a chat's last user turn, a ``Q:``);
    ``response`` is what they answered, did or wrote (``response``, ``completion``,
    ``output``, the assistant turn, the ``A:``, a prose chunk); it is ``None`` when the
    memory has none (a bare observation).
    """

    id: str
    format: str
    type: str
    prompt: str
    response: str | None = None
    timestamp: str | None = None
    importance: float | None = None
    quality_score: float | None = None
    tags: tuple[str, ...] = ()
    entities: tuple[Any, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    # Earlier turns of a chat, as {"role", "content"} dicts, oldest first.
    context: tuple[dict[str, str], ...] = ()
    # Where in its file the record sits ("line 3", "row 5", "message 4", "chunk 2").
    locator: str = ""

    @property
    def text(self) -> str:
        """The text that is embedded and shown in search results."""
        if self.response:
            return f"{self.prompt}\n{self.response}" if self.prompt else self.response
        return self.prompt

    @property
    def cognitive_mode(self) -> str | None:
        mode = self.metadata.get("cognitiveMode")
        return mode if isinstance(mode, str) else None

    def to_record(self) -> dict[str, Any]:
        """A JSON-able dict of every field (for the ledger and run directories)."""
        return {
            "id": self.id,
            "format": self.format,
            "type": self.type,
            "prompt": self.prompt,
            "response": self.response,
            "timestamp": self.timestamp,
            "importance": self.importance,
            "quality_score": self.quality_score,
            "tags": list(self.tags),
            "entities": list(self.entities),
            "metadata": self.metadata,
            "context": [dict(m) for m in self.context],
            "locator": self.locator,
        }

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Memory:
        return cls(
            id=rec["id"],
            format=rec["format"],
            type=rec["type"],
            prompt=rec["prompt"],
            response=rec.get("response"),
            timestamp=rec.get("timestamp"),
            importance=rec.get("importance"),
            quality_score=rec.get("quality_score"),
            tags=tuple(rec.get("tags") or ()),
            entities=tuple(rec.get("entities") or ()),
            metadata=dict(rec.get("metadata") or {}),
            context=tuple(dict(m) for m in rec.get("context") or ()),
            locator=rec.get("locator", ""),
        )


@dataclass(frozen=True)
class Problem:
    """Why one record, or a whole file (``locator == ""``), was not taken.

    ``reason`` is written for a person: what is wrong and what to do about it.
    """

    reason: str
    locator: str = ""


@dataclass
class ParseResult:
    memories: list[Memory] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

"""MetaHuman OS episodic events: one JSON object, one memory.

``content`` is usually a string (what was seen, thought or said). Some events carry it as
an object ``{"userMessage", "assistantMessage"}``: then the user message is the prompt and
the assistant message the response. A top-level ``response`` wins over
``assistantMessage``. The memory id is over the whole event object, as written, less
MetaHuman's own processing bookkeeping (``metadata.processed``, ``processedAt``): a
pipeline marking an event processed rewrites the file, and that is not a new memory.
"""

from __future__ import annotations

from typing import Any

from .errors import RecordError
from .fields import (
    describe,
    get_list,
    get_metadata,
    get_number,
    get_str,
    get_timestamp,
    memory_id,
    normalise_text,
)
from .model import Memory

DEFAULT_TYPE = "observation"
# Top-level event fields kept in the memory's metadata (unless metadata has them already).
_KEPT = {"id": "eventId", "userId": "userId", "links": "links"}
# Metadata keys MetaHuman changes when it processes an event; not part of the memory.
_BOOKKEEPING = ("processed", "processedAt")


def _identity(obj: dict[str, Any]) -> dict[str, Any]:
    """The event as it counts for the memory id."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not any(k in meta for k in _BOOKKEEPING):
        return obj
    return {**obj, "metadata": {k: v for k, v in meta.items() if k not in _BOOKKEEPING}}


def is_event(obj: dict[str, Any]) -> bool:
    return "content" in obj and any(k in obj for k in ("type", "timestamp", "id"))


def _content(obj: dict[str, Any]) -> tuple[str, str | None]:
    content = obj["content"]
    if isinstance(content, str):
        return normalise_text(content), None
    if isinstance(content, dict) and ("userMessage" in content or "assistantMessage" in content):
        try:
            user = get_str(content, "userMessage", required=False)
            assistant = get_str(content, "assistantMessage", required=False)
        except RecordError as exc:
            raise RecordError(f"in content: {exc}") from None
        return user or "", assistant
    raise RecordError(
        "content must be a string, or an object with userMessage and assistantMessage; "
        f"got {describe(content)}"
    )


def parse_event(obj: dict[str, Any], locator: str) -> Memory:
    prompt, assistant = _content(obj)
    response = get_str(obj, "response", required=False)
    if response is None:
        response = assistant
    if not prompt.strip() and not (response or "").strip():
        raise RecordError("content is empty; there is nothing to remember")
    kind = obj.get("type")
    if kind is None:
        kind = DEFAULT_TYPE
    elif not isinstance(kind, str) or not kind.strip():
        raise RecordError(
            f"type must be a non-empty string such as observation or conversation, "
            f"got {describe(kind)}"
        )
    metadata = get_metadata(obj)
    for field, key in _KEPT.items():
        if obj.get(field) is not None and key not in metadata:
            metadata[key] = obj[field]
    return Memory(
        id=memory_id(_identity(obj)),
        format="metahuman",
        type=kind,
        prompt=prompt,
        response=response,
        timestamp=get_timestamp(obj),
        importance=get_number(obj, "importance", 0, 1),
        tags=get_list(obj, "tags", strings=True),
        entities=get_list(obj, "entities", strings=False),
        metadata=metadata,
        locator=locator,
    )

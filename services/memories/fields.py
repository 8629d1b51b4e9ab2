"""Field checks and the memory builder shared by the record parsers.

Every check raises :class:`RecordError` with a message a person can act on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from .errors import RecordError
from .model import Memory, content_id


def normalise_text(text: str) -> str:
    """CRLF -> LF; nothing else about the text changes."""
    return text.replace("\r\n", "\n")


def describe(value: Any) -> str:
    """A short, JSON-flavoured description of a value for problem messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return 'the string "' + text.replace("\n", "\\n") + '"'
    return kind_of(value)


def kind_of(value: Any) -> str:
    """The JSON kind of a value: "a number", "an array", ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def get_str(obj: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
    """A string field (CRLF normalised); ``None`` when optional and absent or null."""
    value = obj.get(key)
    if value is None:
        if not required:
            return None
        if key in obj:
            raise RecordError(f"field '{key}' is null; it must be a string")
        raise RecordError(f"missing field '{key}'")
    if not isinstance(value, str):
        raise RecordError(f"field '{key}' must be a string, got {describe(value)}")
    return normalise_text(value)


def get_number(obj: Mapping[str, Any], key: str, low: float, high: float) -> float | None:
    """An optional number within ``[low, high]``, as a float."""
    value = obj.get(key)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        # Only floats: math.isfinite overflows on an int of hundreds of digits.
        or (isinstance(value, float) and not math.isfinite(value))
        or not low <= value <= high
    ):
        raise RecordError(
            f"{key} must be a number from {low:g} to {high:g}, got {describe(value)}; "
            "fix the value or remove the field"
        )
    return float(value)


def get_timestamp(obj: Mapping[str, Any], key: str = "timestamp") -> str | None:
    """An optional timestamp: an ISO 8601 string is kept as given; a number is taken as
    epoch seconds and written as ISO 8601 UTC (``2023-11-14T22:13:20Z``)."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            datetime.fromisoformat(value.strip())
        except ValueError:
            raise RecordError(
                f"{key} {describe(value)} is not an ISO 8601 date-time "
                "(e.g. 2025-11-06T12:00:00Z) nor epoch seconds; fix it or remove the field"
            ) from None
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RecordError(
            f"{key} must be an ISO 8601 string or a number of epoch seconds, got {describe(value)}"
        )
    try:
        moment = datetime.fromtimestamp(value, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise RecordError(
            f"{key} {describe(value)} is out of range as epoch seconds; fix it or remove the field"
        ) from None
    if moment.microsecond == 0:
        spec = "seconds"
    elif moment.microsecond % 1000 == 0:
        spec = "milliseconds"
    else:
        spec = "microseconds"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")


def get_metadata(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The optional ``metadata`` object (absent or null -> ``{}``)."""
    value = obj.get("metadata")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RecordError(f"metadata must be an object, got {describe(value)}")
    return dict(value)


def get_list(obj: Mapping[str, Any], key: str, *, strings: bool) -> tuple[Any, ...]:
    """An optional list (absent or null -> ``()``); ``strings`` demands string items."""
    value = obj.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise RecordError(f"{key} must be an array, got {describe(value)}")
    if strings:
        for item in value:
            if not isinstance(item, str):
                raise RecordError(f"{key} must be an array of strings, found {describe(item)}")
    return tuple(value)


def memory_id(canonical: dict[str, Any]) -> str:
    """:func:`content_id`, with text that cannot be stored turned into a record problem."""
    try:
        return content_id(canonical)
    except UnicodeEncodeError:
        raise RecordError(
            "the text holds invalid Unicode (an unpaired surrogate such as \\ud800); "
            "fix the escape sequence or re-save the text"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise RecordError(f"the record cannot be stored as JSON ({exc})") from None


def record_memory(
    *,
    format: str,
    type: str,
    prompt: str,
    response: str,
    obj: Mapping[str, Any],
    locator: str,
    context: Sequence[dict[str, str]] = (),
    extra_metadata: Mapping[str, Any] | None = None,
) -> Memory:
    """A memory for a prompt/response-like record.

    Optional fields read from ``obj``: ``quality_score`` (0..10), ``metadata`` (object),
    ``timestamp``. The id is over the content only: type, prompt, response, context and
    whichever of those optional fields are present; never the format's field names, the
    file, the line or ``extra_metadata`` (which is derived, e.g. a prose chunk number).
    """
    quality = get_number(obj, "quality_score", 0, 10)
    metadata = get_metadata(obj)
    timestamp = get_timestamp(obj)
    if not prompt.strip() and not response.strip():
        raise RecordError("the record is empty (no prompt and no response text); remove it")
    canonical: dict[str, Any] = {"type": type, "prompt": prompt, "response": response}
    if quality is not None:
        canonical["quality_score"] = quality
    if metadata:
        canonical["metadata"] = metadata
    if timestamp is not None:
        canonical["timestamp"] = timestamp
    if context:
        canonical["context"] = [dict(m) for m in context]
    return Memory(
        id=memory_id(canonical),
        format=format,
        type=type,
        prompt=prompt,
        response=response,
        timestamp=timestamp,
        quality_score=quality,
        metadata={**metadata, **(extra_metadata or {})},
        context=tuple(dict(m) for m in context),
        locator=locator,
    )

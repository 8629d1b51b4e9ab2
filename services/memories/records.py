"""Instruction-style records: prompt/completion, prompt/response and alpaca.

- ``{"prompt", "completion"}`` -> format ``prompt_completion``, type ``conversation``
- ``{"prompt", "response"}`` -> format ``prompt_response``, type ``conversation``
- ``{"instruction", "input", "output"}`` -> format ``alpaca``, type ``task``; the prompt is
  the instruction, plus a blank line and the input when the input is not empty.

Each may carry ``quality_score`` (0..10), ``metadata`` (object) and ``timestamp``; other
fields are ignored. The same prompt and response give the same id whichever of the two
conversation shapes, or container, they came in.
"""

from __future__ import annotations

from typing import Any

from .fields import get_str, record_memory
from .model import Memory

# format -> (prompt field, response field); alpaca is handled on its own.
_FIELDS = {
    "prompt_completion": ("prompt", "completion"),
    "prompt_response": ("prompt", "response"),
}
RECORD_FORMATS = ("alpaca", "prompt_completion", "prompt_response")


def record_format(obj: dict[str, Any]) -> str | None:
    """Which record format the object's fields name, if any."""
    if "instruction" in obj and "output" in obj:
        return "alpaca"
    if "prompt" in obj and "completion" in obj:
        return "prompt_completion"
    if "prompt" in obj and "response" in obj:
        return "prompt_response"
    return None


def parse_record(obj: dict[str, Any], format: str, locator: str) -> Memory:
    if format == "alpaca":
        instruction = get_str(obj, "instruction") or ""
        extra = get_str(obj, "input", required=False) or ""
        prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        response = get_str(obj, "output") or ""
        kind = "task"
    else:
        prompt_field, response_field = _FIELDS[format]
        prompt = get_str(obj, prompt_field) or ""
        response = get_str(obj, response_field) or ""
        kind = "conversation"
    return record_memory(
        format=format, type=kind, prompt=prompt, response=response, obj=obj, locator=locator
    )

"""What a published model is served with, and its Modelfile text.

TEMPLATE and stop tokens come from the family's chat schema; SYSTEM is the caller's, or
the schema's ``ollama_system``; PARAMETERs are the schema's, overridden by the caller's.
Values are written the way Ollama's own Modelfile formatter quotes them
(parser/parser.go): bare when they can be, ``"..."`` around leading or trailing blanks,
``\"\"\"...\"\"\"`` around newlines or quotes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from services.publish.errors import PublishError
from services.schemas import ChatSchema

TRIPLE = '"""'


def served_parameters(
    schema: ChatSchema, parameters: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The schema's Ollama parameters with its stop tokens, then the caller's overrides."""
    merged: dict[str, Any] = dict(schema.ollama_parameters)
    merged["stop"] = list(schema.stop)
    merged.update(parameters or {})
    return merged


def served_system(schema: ChatSchema, system: str | None) -> str | None:
    """``system`` when given (``""``: none at all), else the schema's ``ollama_system``."""
    if system is not None:
        return system or None
    return schema.ollama_system or None


def served_fields(
    schema: ChatSchema, system: str | None, parameters: Mapping[str, Any] | None
) -> dict[str, Any]:
    """What a version is created with: ``template``, ``system`` and ``parameters``."""
    return {
        "template": schema.ollama_template,
        "system": served_system(schema, system),
        "parameters": served_parameters(schema, parameters),
    }


def _quote(value: str, what: str) -> str:
    if TRIPLE in value:
        raise PublishError(f'{what} contains """ and cannot be written to a Modelfile')
    if "\n" in value or '"' in value:
        return f"{TRIPLE}{value}{TRIPLE}"
    if value == "" or value != value.strip():
        return f'"{value}"'
    return value


def _scalar(value: Any, what: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _quote(value, what)
    raise PublishError(f"{what}: {value!r} is not a value a Modelfile PARAMETER can hold")


def render_modelfile(
    source: str,
    *,
    template: str,
    adapter: str | None = None,
    system: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    comments: Sequence[str] = (),
) -> str:
    """The Modelfile: comments, FROM, ADAPTER, TEMPLATE, SYSTEM, then one line per PARAMETER
    value (a list, such as ``stop``, gives one line per item)."""
    if TRIPLE in template:
        raise PublishError('the template contains """ and cannot be written to a Modelfile')
    lines = [f"# {c}" for c in comments]
    lines.append(f"FROM {source}")
    if adapter is not None:
        lines.append(f"ADAPTER {adapter}")
    lines.append(f"TEMPLATE {TRIPLE}{template}{TRIPLE}")
    if system:
        if TRIPLE in system:
            raise PublishError('the system prompt contains """ and cannot be written')
        lines.append(f"SYSTEM {TRIPLE}{system}{TRIPLE}")
    for key, value in (parameters or {}).items():
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:
            lines.append(f"PARAMETER {key} {_scalar(item, f'PARAMETER {key}')}")
    return "\n".join(lines) + "\n"

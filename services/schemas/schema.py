"""Model-family chat schemas: ``etc/schemas/<family>.json``, validated on load."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from services.schemas import _jinja
from services.schemas.errors import SchemaError
from services.shipped import etc_dir

FAMILIES: tuple[str, ...] = ("qwen", "llama", "phi", "gptj", "smollm")

DEFAULT_ETC_DIR = etc_dir()


@dataclass(frozen=True)
class ChatSchema:
    """One family's chat format, as loaded from ``etc/schemas/<family>.json``.

    ``chat_template`` is the fallback Jinja template (the family's real Hugging Face
    template where there is one); ``ollama_template`` / ``ollama_parameters`` are what
    a Modelfile gets (TEMPLATE, PARAMETER); ``stop`` equals
    ``ollama_parameters["stop"]``; ``ollama_system``, when set, is the Modelfile SYSTEM
    that makes Ollama render a conversation without a system message the way the
    fallback template does. ``notes`` record where training and serving differ.
    """

    family: str
    chat_template: str
    bos_token: str | None
    eos_token: str
    pad_token: str | None
    stop: tuple[str, ...]
    ollama_template: str
    ollama_parameters: dict[str, Any] = field(hash=False)
    unk_token: str | None = None
    ollama_template_name: str | None = None
    ollama_system: str | None = None
    model_types: tuple[str, ...] = ()
    name_patterns: tuple[str, ...] = ()
    template_markers: tuple[str, ...] = ()
    hf_models: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    path: Path | None = field(default=None, compare=False)

    @property
    def special_tokens(self) -> dict[str, str]:
        """The named special tokens that are set, as templates receive them."""
        tokens = {
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "unk_token": self.unk_token,
            "pad_token": self.pad_token,
        }
        return {k: v for k, v in tokens.items() if v is not None}


_REQUIRED = (
    "family",
    "chat_template",
    "bos_token",
    "eos_token",
    "pad_token",
    "stop",
    "ollama_template",
    "ollama_parameters",
)
_OPTIONAL = (
    "unk_token",
    "ollama_template_name",
    "ollama_system",
    "model_types",
    "name_patterns",
    "template_markers",
    "hf_models",
    "notes",
    "sources",
)
_TOKEN_KEYS = ("bos_token", "pad_token", "unk_token")


def schema_path(family: str, etc_dir: Path | None = None) -> Path:
    return (etc_dir or DEFAULT_ETC_DIR) / "schemas" / f"{family}.json"


def load_schema(family: str, etc_dir: Path | None = None) -> ChatSchema:
    """Load and validate ``<etc_dir>/schemas/<family>.json`` (default etc_dir: <repo>/etc)."""
    if family not in FAMILIES:
        raise SchemaError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    path = schema_path(family, etc_dir)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SchemaError("schema file not found", path=path) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SchemaError(f"cannot read schema file: {exc}", path=path) from exc
    except json.JSONDecodeError as exc:
        raise SchemaError(f"invalid JSON: {exc}", path=path) from exc
    return _validate(raw, family, path)


class _Fields:
    """The schema file's JSON object, read key by key; each problem is a SchemaError that
    names the file and the key."""

    def __init__(self, raw: dict[str, Any], path: Path) -> None:
        self.raw = raw
        self.path = path

    def fail(self, key: str | None, problem: str) -> SchemaError:
        return SchemaError(problem, path=self.path, key=key)

    def optional_text(self, key: str) -> str | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string or null, got {type(value).__name__}")
        if not value:
            raise self.fail(key, "must not be empty (use null)")
        return value

    def text(self, key: str) -> str:
        value = self.optional_text(key)
        if value is None:
            raise self.fail(key, "must be a string, got null")
        return value

    def strings(self, key: str, *, required: bool = False) -> tuple[str, ...]:
        value = self.raw.get(key, [])
        if isinstance(value, str) and key == "notes":
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(key, "must be a list of non-empty strings")
        if required and not value:
            raise self.fail(key, "must not be empty")
        return tuple(value)


def _fields(raw: Any, family: str, path: Path) -> _Fields:
    """The object's keys checked: no unknown one, every required one, the right family."""
    if not isinstance(raw, dict):
        raise SchemaError("the schema must be a JSON object", path=path, key=None)
    fields = _Fields(raw, path)
    for key in raw:
        if key not in _REQUIRED and key not in _OPTIONAL:
            raise fields.fail(key, "unknown key")
    for key in _REQUIRED:
        if key not in raw:
            raise fields.fail(key, "missing required key")
    if raw["family"] != family:
        raise fields.fail("family", f"is {raw['family']!r} but the file is for {family!r}")
    return fields


def _ollama_template(fields: _Fields) -> str:
    template = fields.text("ollama_template")
    if "{{" not in template:
        raise fields.fail("ollama_template", "is not a Go template (no {{ action }})")
    return template


def _ollama_parameters(fields: _Fields, stop: tuple[str, ...]) -> dict[str, Any]:
    parameters = fields.raw["ollama_parameters"]
    if not isinstance(parameters, dict):
        raise fields.fail("ollama_parameters", "must be an object")
    if "stop" in parameters and parameters["stop"] != list(stop):
        raise fields.fail("ollama_parameters", "its 'stop' differs from the schema's 'stop'")
    return parameters


def _name_patterns(fields: _Fields) -> tuple[str, ...]:
    patterns = fields.strings("name_patterns")
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise fields.fail(
                "name_patterns", f"invalid regular expression {pattern!r}: {exc}"
            ) from exc
    return patterns


def _check_renders(schema: ChatSchema, fields: _Fields) -> None:
    """The template must compile and render the simplest conversation in both modes."""
    try:
        compiled = _jinja.compile_template(schema.chat_template)
        for add_generation_prompt in (False, True):
            _jinja.render(
                compiled,
                [{"role": "user", "content": "hi"}],
                add_generation_prompt=add_generation_prompt,
                special_tokens=schema.special_tokens,
                template_kwargs={},
            )
    except jinja2.TemplateError as exc:
        raise fields.fail("chat_template", f"does not render: {exc}") from exc


def _validate(raw: Any, family: str, path: Path) -> ChatSchema:
    fields = _fields(raw, family, path)
    chat_template = fields.text("chat_template")
    eos_token = fields.text("eos_token")
    tokens = {key: fields.optional_text(key) for key in _TOKEN_KEYS}
    stop = fields.strings("stop", required=True)
    ollama_template = _ollama_template(fields)
    parameters = _ollama_parameters(fields, stop)
    name_patterns = _name_patterns(fields)
    schema = ChatSchema(
        family=family,
        chat_template=chat_template,
        bos_token=tokens["bos_token"],
        eos_token=eos_token,
        pad_token=tokens["pad_token"],
        stop=stop,
        ollama_template=ollama_template,
        ollama_parameters=parameters,
        unk_token=tokens["unk_token"],
        ollama_template_name=fields.optional_text("ollama_template_name"),
        ollama_system=fields.optional_text("ollama_system"),
        model_types=fields.strings("model_types"),
        name_patterns=name_patterns,
        template_markers=fields.strings("template_markers"),
        hf_models=fields.strings("hf_models"),
        notes=fields.strings("notes"),
        sources=fields.strings("sources"),
        path=path,
    )
    _check_renders(schema, fields)
    return schema

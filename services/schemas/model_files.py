"""What a model directory (or GGUF file) says about its chat format.

Reads only small JSON files (config.json, tokenizer_config.json,
special_tokens_map.json, chat_template.jinja) or a GGUF file's metadata; loads no
weights and imports no transformers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.gguf_file import gguf_reader, is_gguf
from services.schemas.errors import SchemaError

# transformers' SPECIAL_TOKENS_ATTRIBUTES: the named tokens a template receives.
SPECIAL_TOKEN_KEYS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)

_GGUF_TOKEN_IDS = {
    "bos_token": "tokenizer.ggml.bos_token_id",
    "eos_token": "tokenizer.ggml.eos_token_id",
    "unk_token": "tokenizer.ggml.unknown_token_id",
    "sep_token": "tokenizer.ggml.seperator_token_id",
    "pad_token": "tokenizer.ggml.padding_token_id",
    "cls_token": "tokenizer.ggml.cls_token_id",
    "mask_token": "tokenizer.ggml.mask_token_id",
}


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    chat_template: str | None = None
    template_source: str | None = None
    special_tokens: dict[str, str] = field(default_factory=dict, hash=False)
    model_type: str | None = None
    names: tuple[str, ...] = ()


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaError(f"cannot read {path}: {exc}", path=path) from exc
    return data if isinstance(data, dict) else None


def _token_text(value: Any) -> str | None:
    # A token is saved as a string or as an AddedToken dict {"content": ...}.
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


def _short_name(name: str) -> str:
    # A hub id stays whole; a local path keeps only its last two parts.
    return "/".join(Path(name).parts[-2:]) if name else name


def _template_from_config(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # [{"name": ..., "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        default = named.get("default")
        return default if isinstance(default, str) else None
    if isinstance(value, dict):
        default = value.get("default")
        return default if isinstance(default, str) else None
    return None


def read_model_dir(path: Path) -> ModelInfo:
    """Read a Hugging Face model directory the way transformers' tokenizer loading does.

    The chat template is ``chat_template.jinja`` if present, else tokenizer_config.json's
    ``chat_template`` (the ``default`` one of a list). Special tokens come from
    tokenizer_config.json, then special_tokens_map.json.
    """
    config = _read_json(path / "config.json") or {}
    tok_config = _read_json(path / "tokenizer_config.json") or {}
    tok_map = _read_json(path / "special_tokens_map.json") or {}

    template: str | None = None
    source: str | None = None
    jinja_file = path / "chat_template.jinja"
    if jinja_file.is_file():
        template, source = jinja_file.read_text(encoding="utf-8"), str(jinja_file)
    else:
        template = _template_from_config(tok_config.get("chat_template"))
        if template is not None:
            source = f"{path / 'tokenizer_config.json'}:chat_template"

    tokens: dict[str, str] = {}
    for key in SPECIAL_TOKEN_KEYS:
        value = _token_text(tok_config.get(key)) if key in tok_config else None
        if value is None and key not in tok_config:
            value = _token_text(tok_map.get(key))
        if value is not None:
            tokens[key] = value

    names = [path.name]
    for key in ("_name_or_path", "name_or_path"):
        for source_dict in (config, tok_config):
            value = source_dict.get(key)
            if isinstance(value, str) and value:
                names.append(_short_name(value))
    model_type = config.get("model_type")
    return ModelInfo(
        path=path,
        chat_template=template,
        template_source=source,
        special_tokens=tokens,
        model_type=model_type if isinstance(model_type, str) else None,
        names=tuple(dict.fromkeys(n for n in names if n)),
    )


def read_gguf(path: Path) -> ModelInfo:
    """Read the chat template, special tokens and names from a GGUF file's metadata."""
    try:
        reader = gguf_reader(path)
    except ImportError as exc:
        raise SchemaError("reading a GGUF file needs the 'gguf' package", path=path) from exc
    except Exception as exc:  # the reader raises bare ValueErrors and struct errors
        raise SchemaError(f"cannot read GGUF metadata: {exc}", path=path) from exc

    def value(key: str, index: int | None = None) -> Any:
        f = reader.fields.get(key)
        if f is None:
            return None
        return f.contents(index) if index is not None else f.contents()

    tokens: dict[str, str] = {}
    if "tokenizer.ggml.tokens" in reader.fields:
        for name, key in _GGUF_TOKEN_IDS.items():
            token_id = value(key)
            if isinstance(token_id, int):
                token = value("tokenizer.ggml.tokens", token_id)
                if isinstance(token, str):
                    tokens[name] = token
    template = value("tokenizer.chat_template")
    names = [path.stem] + [
        v for v in (value("general.name"), value("general.basename")) if isinstance(v, str) and v
    ]
    architecture = value("general.architecture")
    return ModelInfo(
        path=path,
        chat_template=template if isinstance(template, str) else None,
        template_source=f"{path}:tokenizer.chat_template" if isinstance(template, str) else None,
        special_tokens=tokens,
        model_type=architecture if isinstance(architecture, str) else None,
        names=tuple(dict.fromkeys(names)),
    )


def read_model(path: Path) -> ModelInfo:
    """A model directory, or a single ``.gguf`` file."""
    if path.is_file() and is_gguf(path):
        return read_gguf(path)
    if path.is_dir():
        return read_model_dir(path)
    raise SchemaError(f"not a model directory or GGUF file: {path}", path=path)

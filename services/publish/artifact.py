"""A training artifact on disk: its files, their digests, its architecture."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from services.publish.errors import PublishError

Kind = Literal["lora", "full"]
KINDS: tuple[str, ...] = ("lora", "full")
ADAPTER_CONFIG = "adapter_config.json"
MODEL_CONFIG = "config.json"
# What Ollama's create reads from a model or adapter directory (parser.filesForModel):
# weights, JSON configuration and tokenizer files, a standalone chat template.
OLLAMA_SUFFIXES = (".safetensors", ".json", ".model", ".jinja", ".gguf")


def check_kind(kind: str) -> Kind:
    if kind not in KINDS:
        raise PublishError(f"kind must be 'lora' or 'full', got {kind!r}")
    return kind  # type: ignore[return-value]


def artifact_files(directory: Path) -> dict[str, Path]:
    """Every regular file below ``directory`` (hidden ones apart), by relative POSIX name."""
    if not directory.is_dir():
        raise PublishError(f"{directory}: not a directory")
    files: dict[str, Path] = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        files[rel.as_posix()] = path
    if not files:
        raise PublishError(f"{directory}: no files to publish")
    return files


def ollama_files(directory: Path) -> dict[str, Path]:
    """The files of ``directory`` that Ollama's create uses (optimizer states and the
    like stay home)."""
    files = {
        rel: p for rel, p in artifact_files(directory).items() if rel.endswith(OLLAMA_SUFFIXES)
    }
    if not files:
        raise PublishError(f"{directory}: no weights or configuration files for Ollama")
    return files


def check_artifact(directory: Path, kind: Kind) -> None:
    """The artifact has the file its kind needs (``adapter_config.json`` / ``config.json``)."""
    needed = ADAPTER_CONFIG if kind == "lora" else MODEL_CONFIG
    if not (directory / needed).is_file():
        what = "a LoRA adapter" if kind == "lora" else "a full model"
        raise PublishError(f"{directory}: not {what} (no {needed})")


def sha256_file(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def architecture(model_dir: Path) -> str | None:
    """The first of ``architectures`` in ``config.json``; None when it names none."""
    path = model_dir / MODEL_CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PublishError(f"{model_dir}: not a model directory (no {MODEL_CONFIG})") from exc
    except (OSError, ValueError) as exc:
        raise PublishError(f"{path}: cannot read it: {exc}") from exc
    archs = config.get("architectures") if isinstance(config, dict) else None
    if isinstance(archs, list) and archs and isinstance(archs[0], str):
        return archs[0]
    return None

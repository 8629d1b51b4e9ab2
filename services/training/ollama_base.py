"""Base models installed in Ollama: ``ollama:NAME`` (``ollama:llama3.1:8b-instruct-q4_K_M``).

The model is asked for through Ollama's API (``show``: is it installed, its format,
family, size and quantization, and the ``FROM`` line of its Modelfile, which names the
blob on the server's machine), and its GGUF is then read from Ollama's blob store on this
machine, the way the server lays it out (``server/modelpath.go``, ``types/model/name.go``):
the manifest ``<models>/manifests/<host>/<namespace>/<model>/<tag>`` (``registry.ollama.ai``
and ``library`` by default, ``latest`` when no tag is given) lists a layer of media type
``application/vnd.ollama.image.model`` whose digest ``sha256:<hex>`` is the file
``<models>/blobs/sha256-<hex>``. The models directory is, in order: ``$OLLAMA_MODELS``, the
``ollama.models_dir`` setting, the directory the ``FROM`` line points into, ``~/.ollama/models``
and ``/usr/share/ollama/.ollama/models`` (Linux's service install).

The server is the one ``ollama.url`` names, else ``$OLLAMA_HOST``, else Ollama's default
(``127.0.0.1:11434``). The GGUF is converted once, like any GGUF base
(``services.training.base_model.convert_gguf``), keyed by the blob's digest (not hashed
again), after :meth:`OllamaBase.checked` made sure transformers loads its architecture.
A GGUF quantized to 4 bits or fewer trains worse once dequantized than the original
weights did: :attr:`OllamaBase.warning` says so.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from services.gguf_file import gguf_reader
from services.training.errors import BadInputError

log = structlog.get_logger(__name__)

PREFIX = "ollama:"
DEFAULT_REGISTRY = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
DEFAULT_SERVER = "127.0.0.1:11434"
MEDIA_MODEL = "application/vnd.ollama.image.model"
USUAL_MODELS_DIRS = (Path("~/.ollama/models"), Path("/usr/share/ollama/.ollama/models"))
SHOW_TIMEOUT_S = 30.0
# Ollama's quantization levels of 4 bits or fewer: Q4_0, Q4_K_M, Q3_K_S, Q2_K, IQ4_XS, TQ1_0,
# MXFP4...
LOW_BIT = re.compile(r"^(Q[1-4]_|IQ|TQ|MXFP4|NVFP4)", re.IGNORECASE)
LOW_BIT_WARNING = (
    "{name} is quantized to {level}: a dequantized 4-bit base trains worse than the original "
    "weights; name the original hub model for best results"
)
_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,79}$")
_HOST = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._:-]{0,349}$")
_DIGEST = re.compile(r"^sha256[:-]([0-9a-f]{64})$")


@dataclass(frozen=True)
class ModelName:
    """An Ollama model name with its defaults filled in."""

    host: str
    namespace: str
    model: str
    tag: str

    @property
    def short(self) -> str:
        """The name as Ollama shows it (``llama3.1:8b``, ``me/mine:v1``)."""
        if self.host.lower() != DEFAULT_REGISTRY:
            return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"
        if self.namespace.lower() != DEFAULT_NAMESPACE:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.model}:{self.tag}"

    @property
    def parts(self) -> tuple[str, str, str, str]:
        return self.host, self.namespace, self.model, self.tag


def parse_name(name: str) -> ModelName:
    """``[host/][namespace/]model[:tag]``; :class:`BadInputError` when it is not a name."""
    rest, tag = name, DEFAULT_TAG
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        rest, _, tag = name.rpartition(":")
    parts = rest.split("/") if rest else []
    if not 1 <= len(parts) <= 3 or not all(_PART.match(p) for p in [*parts[-2:], tag]):
        raise BadInputError(
            f"base model 'ollama:{name}': not an Ollama model name ([host/][namespace/]model[:tag])"
        )
    if len(parts) == 3 and not _HOST.match(parts[0]):
        raise BadInputError(f"base model 'ollama:{name}': {parts[0]!r} is not a host name")
    host = parts[0] if len(parts) == 3 else DEFAULT_REGISTRY
    namespace = parts[-2] if len(parts) >= 2 else DEFAULT_NAMESPACE
    return ModelName(host, namespace, parts[-1], tag)


@dataclass(frozen=True)
class OllamaBase:
    """A model installed in Ollama, and its GGUF blob on this machine."""

    spec: str
    name: ModelName
    server: str
    models_dir: Path
    blob: Path
    digest: str  # hex, the blob's sha256 as the manifest names it
    size: int
    details: dict[str, Any] = field(default_factory=dict)
    architecture: str | None = None

    @property
    def quantization(self) -> str:
        return str(self.details.get("quantization_level") or "")

    @property
    def warning(self) -> str | None:
        """Why this base trains worse than the original weights, or None."""
        if not LOW_BIT.match(self.quantization):
            return None
        return LOW_BIT_WARNING.format(name=self.spec, level=self.quantization)

    def checked(self) -> OllamaBase:
        """This base, once transformers is known to load its architecture (else
        :class:`BadInputError`); a low-bit base's warning is logged."""
        if self.warning:
            log.warning("low-bit base model", model=self.spec, warning=self.warning)
        check_architecture(self)
        return self

    def source(self) -> dict[str, Any]:
        """What the converted model records of where it came from."""
        return {
            "ollama": self.name.short,
            "server": self.server,
            "details": self.details,
            "architecture": self.architecture,
        }


def is_ollama(spec: str) -> bool:
    return spec.startswith(PREFIX)


def base_warning(spec: str) -> str | None:
    """The warning an ``ollama:`` base carries (:attr:`OllamaBase.warning`), else None."""
    return ollama_base(spec).warning if is_ollama(spec) else None


def server_host(host: str | None = None) -> str:
    """The Ollama server to ask: ``host``, else ``ollama.url``, else ``$OLLAMA_HOST``, else
    Ollama's default."""
    return host or _setting("url") or os.environ.get("OLLAMA_HOST") or DEFAULT_SERVER


def models_dirs(explicit: Path | None = None, from_line: Path | None = None) -> list[Path]:
    """Where Ollama's store may be, in the order searched (see the module docstring)."""
    found: list[Path] = []
    env = os.environ.get("OLLAMA_MODELS")
    setting = _setting("models_dir")
    for candidate in (
        explicit,
        Path(env) if env else None,
        Path(setting) if setting else None,
        from_line,
        *USUAL_MODELS_DIRS,
    ):
        if candidate is not None:
            path = candidate.expanduser()
            if path not in found:
                found.append(path)
    return found


def _setting(key: str) -> str | None:
    """``ollama.<key>`` from the settings (file and environment); None when unset or the
    settings cannot be read."""
    try:
        from services.settings import load_settings

        value = getattr(load_settings().ollama, key, None)
    except Exception:  # an unreadable configuration is reported where it is loaded
        return None
    return str(value) if value else None


def ollama_base(
    spec: str, *, host: str | None = None, models_dir: Path | None = None
) -> OllamaBase:
    """The installed model ``spec`` names and its GGUF blob (see the module docstring);
    :class:`BadInputError` saying what is wrong and what to do."""
    name = parse_name(spec.removeprefix(PREFIX))
    server = server_host(host)
    shown = show(name, server)
    details = dict(shown.get("details") or {})
    if details.get("format") not in (None, "", "gguf"):
        raise BadInputError(f"{spec}: Ollama keeps it as {details['format']}, not as a GGUF")
    dirs = models_dirs(models_dir, _from_models_dir(str(shown.get("modelfile") or "")))
    store, manifest = read_manifest(name, dirs, spec)
    digest, size = model_layer(manifest, spec)
    blob = store / "blobs" / f"sha256-{digest}"
    _check_blob(blob, size, spec)
    info = shown.get("modelinfo") or shown.get("model_info") or {}
    arch = info.get("general.architecture")
    return OllamaBase(
        spec=spec,
        name=name,
        server=server,
        models_dir=store,
        blob=blob,
        digest=digest,
        size=size,
        details=details,
        architecture=str(arch) if arch else None,
    )


def show(name: ModelName, server: str) -> dict[str, Any]:
    """Ollama's ``show`` of ``name`` as a dict; :class:`BadInputError` when the server does
    not answer or does not have the model."""
    import httpx
    import ollama

    try:
        client = ollama.Client(host=server, timeout=SHOW_TIMEOUT_S)
        response = client.show(name.short)
    except ollama.ResponseError as exc:
        if exc.status_code == 404:
            raise BadInputError(
                f"ollama:{name.short} is not installed in Ollama at {server}: "
                f"ollama pull {name.short}"
            ) from exc
        raise BadInputError(
            f"Ollama at {server} cannot show {name.short}: {exc.error} (HTTP {exc.status_code})"
        ) from exc
    except (ConnectionError, httpx.HTTPError, OSError) as exc:
        raise BadInputError(
            f"Ollama is not reachable at {server} (ollama.url, else $OLLAMA_HOST): start it "
            f"(ollama serve) to use ollama:{name.short} as a base model ({exc})"
        ) from exc
    return dict(response.model_dump(by_alias=False, exclude_none=True))


def _from_models_dir(modelfile: str) -> Path | None:
    """The models directory that the Modelfile's ``FROM <models>/blobs/sha256-...`` names."""
    for line in modelfile.splitlines():
        if line.upper().startswith("FROM "):
            path = Path(line[5:].strip().strip('"'))
            if path.is_absolute() and path.parent.name == "blobs":
                return path.parent.parent
    return None


def read_manifest(name: ModelName, dirs: Sequence[Path], spec: str) -> tuple[Path, dict[str, Any]]:
    """(models directory, manifest) of ``name`` from the first store that holds it."""
    unreadable: list[str] = []
    for store in dirs:
        path = _manifest_path(store / "manifests", name.parts)
        if path is None:
            if (store / "manifests").is_dir() and not os.access(store / "manifests", os.R_OK):
                unreadable.append(f"{store} (not readable by this user)")
            continue
        try:
            manifest = json.loads(path.read_bytes())
        except PermissionError:
            unreadable.append(f"{path} (not readable by this user)")
            continue
        except (OSError, ValueError) as exc:
            raise BadInputError(f"{spec}: Ollama's manifest {path} is unreadable: {exc}") from exc
        if not isinstance(manifest, dict):
            raise BadInputError(f"{spec}: Ollama's manifest {path} is not a JSON object")
        return store, manifest
    searched = ", ".join(str(d) for d in dirs)
    problems = f"; {'; '.join(unreadable)}" if unreadable else ""
    raise BadInputError(
        f"{spec}: Ollama has the model but its blob store is not on this machine or not "
        f"readable (searched {searched}{problems}): set ollama.models_dir (or $OLLAMA_MODELS) "
        "to the directory holding Ollama's manifests/ and blobs/"
    )


def _manifest_path(root: Path, parts: Sequence[str]) -> Path | None:
    """``root/host/namespace/model/tag``, matched as written or ignoring case (Ollama
    lower-cases the path in some versions)."""
    exact = root.joinpath(*parts)
    if exact.is_file():
        return exact
    here = root
    for part in parts:
        try:
            match = next((p for p in here.iterdir() if p.name.lower() == part.lower()), None)
        except OSError:
            return None
        if match is None:
            return None
        here = match
    return here if here.is_file() else None


def model_layer(manifest: dict[str, Any], spec: str) -> tuple[str, int]:
    """(sha256 hex, size) of the manifest's model layer."""
    layers = manifest.get("layers")
    found = [
        la for la in layers or [] if isinstance(la, dict) and la.get("mediaType") == MEDIA_MODEL
    ]
    if not found:
        raise BadInputError(f"{spec}: its Ollama manifest has no model layer ({MEDIA_MODEL})")
    match = _DIGEST.match(str(found[0].get("digest", "")))
    size = found[0].get("size")
    if match is None or not isinstance(size, int):
        raise BadInputError(f"{spec}: its Ollama manifest's model layer has no valid digest")
    return match.group(1), size


def _check_blob(blob: Path, size: int, spec: str) -> None:
    try:
        actual = blob.stat().st_size
    except FileNotFoundError as exc:
        raise BadInputError(
            f"{spec}: its weights blob {blob} is missing from Ollama's store: pull it again "
            f"(ollama pull {spec.removeprefix(PREFIX)})"
        ) from exc
    except OSError as exc:
        raise BadInputError(f"{spec}: its weights blob {blob} is unreadable: {exc}") from exc
    if actual != size:
        raise BadInputError(
            f"{spec}: its weights blob {blob} has {actual} bytes, its manifest says {size}: "
            f"the file is damaged or half-written; pull it again "
            f"(ollama pull {spec.removeprefix(PREFIX)})"
        )
    if not os.access(blob, os.R_OK):
        raise BadInputError(f"{spec}: its weights blob {blob} is not readable by this user")


def check_architecture(base: OllamaBase) -> None:
    """:class:`BadInputError` when transformers cannot load a GGUF of this architecture."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    arch = base.architecture or _gguf_architecture(base.blob)
    if arch is None:
        return
    known = [a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer")]
    aliases = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gpt-oss": "gpt_oss"}
    if arch not in known and aliases.get(arch) not in known:
        raise BadInputError(
            f"{base.spec}: transformers cannot load a GGUF of architecture {arch!r} (it loads "
            f"{', '.join(sorted(known))}): name the original model (a hub id or directory)"
        )


def _gguf_architecture(path: Path) -> str | None:
    field_ = gguf_reader(path).fields.get("general.architecture")
    return None if field_ is None else str(field_.contents())

"""A faithful fake of the Ollama HTTP API, for tests that must not need a real server.

``FakeOllama`` listens on 127.0.0.1 (a random port) in a background thread::

    with FakeOllama() as fake:
        client = ollama.Client(host=fake.url)
        digest = client.create_blob(path_to_gguf)
        client.create(model="me:v1", files={"model.gguf": digest}, template="...")
        client.copy("me:v1", "me:latest")
        assert fake.model("me:latest").digest == fake.model("me:v1").digest

It follows the real server (``server/routes.go``, ``server/create.go``) where tests can
tell: request and response shapes of the ``ollama`` package's types, status codes and
error texts, NDJSON streaming with ``stream`` defaulting to true, model names that
default to the ``latest`` tag, blobs addressed by sha256 and verified on upload,
``create`` from a model (``from``), from GGUF or safetensors files and with adapters,
digests that are the sha256 of the manifest (so a copy has its source's digest),
loaded models with ``keep_alive`` (``/api/ps``), and no registry (pull and push fail
as an offline server's do). Its store is laid out as the real one (``models_dir``):
``blobs/sha256-<hex>`` and ``manifests/<host>/<namespace>/<model>/<tag>``
(``server/modelpath.go``), so code that reads a model's GGUF from the store can be tested.

For assertions it records every request (``requests``, ``requests_for``); for failure
tests it injects faults (``fail_next``, ``fail_create``, ``delay_next``, ``version``).

What a model answers on ``/api/generate`` and ``/api/chat`` is ``generate_fn(model,
prompt)`` (the last user message for chat; deterministic by default), unless a test
installs a reply policy (``reply_fn`` or ``set_reply``): a callable that gets the whole
request as a :class:`Generation` (model, messages, system, format, options) and returns
the model's text, or raises :class:`OllamaError` to answer an error status with
``{"error": ...}``. A policy's text is sent as the model wrote it (also with ``format``);
stop sequences and ``num_predict`` apply to it as to any generation.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

DEFAULT_VERSION = "0.12.6"
DEFAULT_EMBEDDING_LENGTH = 32
DEFAULT_KEEP_ALIVE_S = 300.0

MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
MEDIA_MODEL = "application/vnd.ollama.image.model"
MEDIA_ADAPTER = "application/vnd.ollama.image.adapter"
MEDIA_TEMPLATE = "application/vnd.ollama.image.template"
MEDIA_SYSTEM = "application/vnd.ollama.image.system"
MEDIA_PARAMS = "application/vnd.ollama.image.params"
MEDIA_LICENSE = "application/vnd.ollama.image.license"
MEDIA_MESSAGES = "application/vnd.ollama.image.messages"

# Architectures Ollama's safetensors converter accepts (convert/convert.go), and the
# model family each becomes.
SAFETENSORS_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "MixtralForCausalLM": "llama",
    "GemmaForCausalLM": "gemma",
    "Gemma2ForCausalLM": "gemma2",
    "Gemma3ForCausalLM": "gemma3",
    "Phi3ForCausalLM": "phi3",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "BertModel": "bert",
}
QUANTIZATION_TYPES = {
    "Q4_0",
    "Q4_1",
    "Q5_0",
    "Q5_1",
    "Q8_0",
    "Q2_K",
    "Q3_K_S",
    "Q3_K_M",
    "Q3_K_L",
    "Q4_K_S",
    "Q4_K_M",
    "Q5_K_S",
    "Q5_K_M",
    "Q6_K",
}

# Error texts of the real server.
ERR_NEITHER_FROM_OR_FILES = "neither 'from' or 'files' was specified"
ERR_NO_FILES = "no files provided to convert"
ERR_ONLY_ONE_ADAPTER = "only one adapter is currently supported"
ERR_UNKNOWN_TYPE = "unknown type"
ERR_FILE_PATH = "file path must be relative"
ERR_INVALID_NAME = "invalid model name"
ERR_INVALID_DIGEST = "invalid digest format"
ERR_MISSING_BODY = "missing request body"
OFFLINE_PULL_ERROR = (
    'pull model manifest: Get "https://registry.ollama.ai/v2/library/{model}/manifests/{tag}": '
    "dial tcp: lookup registry.ollama.ai: no such host"
)

_DIGEST = re.compile(r"^sha256[:-]([0-9a-fA-F]{64})$")
_NAME_PART = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,79}"
_MODEL_NAME = re.compile(
    rf"^(?:[A-Za-z0-9][A-Za-z0-9.:_-]*/)?(?:{_NAME_PART}/)?{_NAME_PART}(?::{_NAME_PART})?$"
)
_DURATION = re.compile(r"(-?\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


# -- helpers -------------------------------------------------------------------


def hash_embedding(text: str, dim: int = DEFAULT_EMBEDDING_LENGTH) -> list[float]:
    """The fake's default embedding: deterministic in ``text``, unit length."""
    values: list[float] = []
    counter = 0
    while len(values) < dim:
        block = hashlib.sha256(f"{counter}\x00{text}".encode()).digest()
        values.extend((b - 127.5) / 127.5 for b in block)
        counter += 1
    return normalise(values[:dim])


def normalise(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(math.fsum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else list(vector)


def default_reply(model: str, prompt: str) -> str:
    """The fake's default generation: deterministic in model and prompt."""
    words = prompt.split()
    gist = " ".join(words[:12]) + (" ..." if len(words) > 12 else "")
    tag = hashlib.sha256(f"{model}\x00{prompt}".encode()).hexdigest()[:8]
    return f"Reply {tag} from {model} to: {gist}" if gist else f"Reply {tag} from {model}."


def normalise_name(name: str) -> str:
    """``x`` -> ``x:latest``; a name with a tag stays as it is."""
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


def name_parts(name: str) -> tuple[str, str, str, str]:
    """(host, namespace, model, tag) of a name, with Ollama's defaults
    (``registry.ollama.ai``, ``library``, ``latest``; ``types/model/name.go``)."""
    rest, _, tag = normalise_name(name).rpartition(":")
    parts = rest.split("/")
    host = parts[-3] if len(parts) >= 3 else "registry.ollama.ai"
    namespace = parts[-2] if len(parts) >= 2 else "library"
    return host, namespace, parts[-1], tag


_SHA256_CACHE: dict[tuple[str, int, int], str] = {}


def _file_sha256(path: Path) -> str:
    """A file's sha256, remembered while its size and mtime are unchanged."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA256_CACHE:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        _SHA256_CACHE[key] = digest.hexdigest()
    return _SHA256_CACHE[key]


def valid_name(name: str) -> bool:
    return bool(name) and _MODEL_NAME.match(name) is not None


def parse_keep_alive(value: Any) -> float | None:
    """Seconds a model stays loaded; None: forever; 0: unload now."""
    if value is None:
        return DEFAULT_KEEP_ALIVE_S
    if isinstance(value, bool):
        raise ValueError(f"invalid keep_alive {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(f'time: invalid duration "{text}"') from None
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    return None if seconds < 0 else seconds


def _now() -> datetime:
    return datetime.now(UTC)


def _ts(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def _go_value(value: Any) -> str:
    """How ``ollama show`` prints a parameter value (Go's %#v of the JSON value)."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def gguf_architecture(path: Path) -> str | None:
    """``general.architecture`` of a GGUF file, None when it is not GGUF."""
    with path.open("rb") as fh:
        if fh.read(4) != b"GGUF":
            return None
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(path))
        arch = reader.fields.get("general.architecture")
        if arch is not None:
            return bytes(arch.parts[arch.data[0]]).decode("utf-8")
    except Exception:
        pass
    return "llama"


def safetensors_ok(path: Path) -> bool:
    """A safetensors file starts with a little-endian u64 length and a JSON header."""
    try:
        with path.open("rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(length))
        return isinstance(header, dict)
    except (OSError, struct.error, ValueError):
        return False


# -- state ---------------------------------------------------------------------


class OllamaError(Exception):
    """An error the fake answers with ``{"error": message}`` and ``status``."""

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Generation:
    """One generation request, as a reply policy sees it."""

    endpoint: str  # "chat" or "generate"
    model: str  # the full name, "judge:latest"
    messages: list[dict[str, Any]]  # chat: as sent; generate: the system and the prompt
    prompt: str  # chat: the last user message; generate: the prompt
    system: str
    format: Any  # "json", a JSON schema, or None
    options: dict[str, Any]

    @property
    def user(self) -> str:
        """The last user message (the prompt of a generate)."""
        return self.prompt


ReplyFn = Callable[[Generation], str]


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    body_size: int

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Layer:
    media_type: str
    digest: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass
class FakeModel:
    """A model the fake holds: a manifest of layers, plus what ``show`` reports."""

    name: str
    layers: list[Layer]
    config: Layer
    family: str
    parameter_size: str
    quantization_level: str
    format: str = "gguf"
    parent_model: str = ""
    template: str = ""
    system: str = ""
    license: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    capabilities: list[str] = field(default_factory=lambda: ["completion"])
    embedding_length: int = DEFAULT_EMBEDDING_LENGTH
    context_length: int = 8192
    modified_at: datetime = field(default_factory=_now)

    @property
    def manifest(self) -> dict[str, Any]:
        return {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": self.config.to_json(),
            "layers": [layer.to_json() for layer in self.layers],
        }

    @property
    def manifest_bytes(self) -> bytes:
        return json.dumps(self.manifest, separators=(",", ":")).encode()

    @property
    def digest(self) -> str:
        """What ``/api/tags`` reports: the sha256 (hex) of the manifest."""
        return hashlib.sha256(self.manifest_bytes).hexdigest()

    @property
    def size(self) -> int:
        return sum(layer.size for layer in self.layers)

    @property
    def details(self) -> dict[str, Any]:
        return {
            "parent_model": self.parent_model,
            "format": self.format,
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization_level,
        }

    def layer(self, media_type: str) -> Layer | None:
        return next((la for la in self.layers if la.media_type == media_type), None)


@dataclass
class _Fault:
    path: str
    method: str | None
    times: int
    status: int = 500
    error: str = "injected failure"
    delay: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            path == self.path or path.startswith(self.path.rstrip("/") + "/")
        )


# -- the server ----------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client killed mid-request (tests SIGKILL daemons) is not the server's error.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class FakeOllama:
    """The fake server. Use as a context manager, or ``start()`` / ``stop()``.

    ``embed_fn(model, text)`` and ``generate_fn(model, prompt)`` replace the default
    deterministic embeddings and replies; ``reply_fn(generation)`` (or ``set_reply``)
    takes over generation entirely (see the module docstring). ``models`` pre-installs
    models by name (see ``add_model`` for the keyword arguments each may carry).
    """

    def __init__(
        self,
        *,
        version: str = DEFAULT_VERSION,
        models: Iterable[str] | dict[str, dict[str, Any]] = (),
        embed_fn: Callable[[str, str], Sequence[float]] | None = None,
        generate_fn: Callable[[str, str], str] | None = None,
        reply_fn: ReplyFn | None = None,
        safetensors_architectures: dict[str, str] | None = None,
        record_body_limit: int = 1 << 20,
    ) -> None:
        self.version = version
        self.embed_fn = embed_fn
        self.generate_fn = generate_fn or default_reply
        self.reply_fn = reply_fn
        self.architectures = dict(safetensors_architectures or SAFETENSORS_ARCHITECTURES)
        self.record_body_limit = record_body_limit
        self.requests: list[RecordedRequest] = []
        self._lock = threading.RLock()
        self._models: dict[str, FakeModel] = {}
        self._loaded: dict[str, float | None] = {}  # name -> expiry (monotonic) or None
        self._faults: list[_Fault] = []
        self._create_faults: list[_Fault] = []
        self._tmp = Path(tempfile.mkdtemp(prefix="fake-ollama-"))
        self.models_dir = self._tmp  # what OLLAMA_MODELS names for a real server
        self.blob_dir = self._tmp / "blobs"
        self.blob_dir.mkdir()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        specs = models if isinstance(models, dict) else {name: {} for name in models}
        for name, spec in specs.items():
            self.add_model(name, **spec)

    # -- life cycle --

    def start(self) -> FakeOllama:
        if self._server is not None:
            return self
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = _Server(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},  # so that stop() is quick
            name="fake-ollama",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = None
            self._thread = None
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> FakeOllama:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the fake Ollama server is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- assertions --

    def requests_for(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method)
                and (r.path == path or r.path.startswith(path.rstrip("/") + "/"))
            ]

    def model(self, name: str) -> FakeModel:
        found = self._find(name)
        if found is None:
            raise KeyError(name)
        return found

    def model_names(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def has_blob(self, digest: str) -> bool:
        return self._blob_path(digest).is_file()

    def blob(self, digest: str) -> bytes:
        return self._blob_path(digest).read_bytes()

    def loaded_models(self) -> list[str]:
        with self._lock:
            self._expire()
            return sorted(self._loaded)

    # -- fault injection --

    def fail_next(
        self,
        path: str,
        *,
        times: int = 1,
        status: int = 500,
        error: str = "injected failure",
        method: str | None = None,
    ) -> None:
        """The next ``times`` requests to ``path`` (or below it) answer ``status`` with
        ``{"error": error}`` and do nothing else."""
        with self._lock:
            self._faults.append(_Fault(path, method, times, status, error))

    def delay_next(self, path: str, seconds: float, *, times: int = 1) -> None:
        """The next ``times`` requests to ``path`` wait ``seconds`` before answering."""
        with self._lock:
            self._faults.append(_Fault(path, None, times, delay=seconds))

    def fail_create(self, error: str = "injected create failure", *, times: int = 1) -> None:
        """The next ``times`` creates fail the way a real create fails part-way: after
        their first status lines, with an error line in the stream (HTTP 500 when not
        streaming); no model is created."""
        with self._lock:
            self._create_faults.append(_Fault("/api/create", "POST", times, 500, error))

    def set_version(self, version: str) -> None:
        self.version = version

    def set_reply(self, reply_fn: ReplyFn | None) -> None:
        """Install a reply policy for ``/api/chat`` and ``/api/generate`` (None: the
        default replies again)."""
        with self._lock:
            self.reply_fn = reply_fn

    def generations(self) -> list[Generation]:
        """Every chat and generate request so far, as reply policies saw them."""
        out = []
        for r in self.requests:
            if r.method == "POST" and r.path in ("/api/chat", "/api/generate"):
                payload = r.json
                if isinstance(payload, dict):
                    out.append(_generation_of(r.path.rsplit("/", 1)[-1], payload, ""))
        return out

    # -- models --

    def add_model(
        self,
        name: str,
        *,
        family: str = "llama",
        parameter_size: str = "135M",
        quantization_level: str = "Q8_0",
        capabilities: Sequence[str] = ("completion",),
        embedding_length: int = DEFAULT_EMBEDDING_LENGTH,
        template: str = "{{ .Prompt }}",
        system: str = "",
        parameters: dict[str, Any] | None = None,
        weights: bytes | None = None,
        weights_file: Path | None = None,
    ) -> FakeModel:
        """Install a model as if pulled: a GGUF-looking weights blob plus its layers.

        ``weights_file``: a real GGUF file to be the model's weights blob (linked into the
        store, not copied)."""
        if not valid_name(name):
            raise ValueError(f"invalid model name {name!r}")
        if weights_file is not None:
            model_layer = self._link_blob(MEDIA_MODEL, Path(weights_file))
        else:
            data = weights if weights is not None else b"GGUF" + f"fake weights of {name}".encode()
            model_layer = self._put_blob(MEDIA_MODEL, data)
        model = self._build(
            normalise_name(name),
            base_layers=[model_layer],
            family=family,
            parameter_size=parameter_size,
            quantization_level=quantization_level,
            template=template,
            system=system,
            parameters=dict(parameters or {}),
            license=[],
            messages=[],
            capabilities=list(capabilities),
            embedding_length=embedding_length,
            parent_model="",
        )
        with self._lock:
            self._store(model)
        return model

    def manifest_path(self, name: str) -> Path:
        """Where the real server keeps the manifest of ``name``."""
        return self.models_dir / "manifests" / Path(*name_parts(normalise_name(name)))

    def _store(self, model: FakeModel) -> None:
        """Hold ``model`` and write its manifest (under the lock)."""
        self._models[model.name] = model
        path = self.manifest_path(model.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(model.manifest_bytes)

    def _unstore(self, name: str) -> None:
        """Drop model ``name`` and its manifest (under the lock)."""
        del self._models[name]
        self.manifest_path(name).unlink(missing_ok=True)

    def _find(self, name: str) -> FakeModel | None:
        full = normalise_name(name)
        with self._lock:
            if full in self._models:
                return self._models[full]
            lowered = full.lower()
            return next((m for n, m in self._models.items() if n.lower() == lowered), None)

    def _require(self, name: Any) -> FakeModel:
        if not isinstance(name, str) or not name:
            raise OllamaError("model is required", 400)
        model = self._find(name)
        if model is None:
            raise OllamaError(f'model "{name}" not found, try pulling it first', 404)
        return model

    # -- blobs --

    def _blob_path(self, digest: str) -> Path:
        match = _DIGEST.match(digest)
        if match is None:
            raise OllamaError(ERR_INVALID_DIGEST, 400)
        return self.blob_dir / f"sha256-{match.group(1).lower()}"

    def _put_blob(self, media_type: str, data: bytes) -> Layer:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = self._blob_path(digest)
        if not path.exists():
            tmp = path.with_suffix(".partial")
            tmp.write_bytes(data)
            tmp.replace(path)
        return Layer(media_type, digest, len(data))

    def _link_blob(self, media_type: str, source: Path) -> Layer:
        """``source`` as a blob, hard-linked (else symlinked) rather than copied."""
        size = source.stat().st_size
        digest = "sha256:" + _file_sha256(source)
        path = self._blob_path(digest)
        if not path.exists():
            try:
                path.hardlink_to(source)
            except OSError:
                path.symlink_to(source.resolve())
        return Layer(media_type, digest, size)

    def _layer_of(self, media_type: str, digest: str) -> Layer:
        path = self._blob_path(digest)
        if not path.is_file():
            raise OllamaError(f"blob {digest} not found: upload it first (POST /api/blobs)", 400)
        return Layer(media_type, digest, path.stat().st_size)

    def _build(
        self,
        name: str,
        *,
        base_layers: list[Layer],
        adapter_layers: Sequence[Layer] = (),
        family: str,
        parameter_size: str,
        quantization_level: str,
        template: str,
        system: str,
        parameters: dict[str, Any],
        license: list[str],
        messages: list[dict[str, Any]],
        capabilities: list[str],
        embedding_length: int,
        parent_model: str,
    ) -> FakeModel:
        layers = list(base_layers) + list(adapter_layers)
        if template:
            layers.append(self._put_blob(MEDIA_TEMPLATE, template.encode()))
        if system:
            layers.append(self._put_blob(MEDIA_SYSTEM, system.encode()))
        if parameters:
            layers.append(self._put_blob(MEDIA_PARAMS, json.dumps(parameters).encode()))
        for text in license:
            layers.append(self._put_blob(MEDIA_LICENSE, text.encode()))
        if messages:
            layers.append(self._put_blob(MEDIA_MESSAGES, json.dumps(messages).encode()))
        config = {
            "model_format": "gguf",
            "model_family": family,
            "model_families": [family],
            "model_type": parameter_size,
            "file_type": quantization_level,
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [la.digest for la in layers]},
        }
        config_layer = self._put_blob(
            CONFIG_MEDIA_TYPE, json.dumps(config, separators=(",", ":")).encode()
        )
        return FakeModel(
            name=name,
            layers=layers,
            config=config_layer,
            family=family,
            parameter_size=parameter_size,
            quantization_level=quantization_level,
            parent_model=parent_model,
            template=template,
            system=system,
            license=license,
            parameters=parameters,
            messages=messages,
            capabilities=capabilities,
            embedding_length=embedding_length,
        )

    # -- loaded models --

    def _expire(self) -> None:
        now = time.monotonic()
        for name, expiry in list(self._loaded.items()):
            if expiry is not None and expiry <= now:
                del self._loaded[name]

    def _touch(self, model: FakeModel, keep_alive: Any) -> bool:
        """Load (or keep loaded) per ``keep_alive``; True when it was unloaded."""
        try:
            seconds = parse_keep_alive(keep_alive)
        except ValueError as exc:
            raise OllamaError(str(exc), 400) from exc
        with self._lock:
            if seconds == 0:
                self._loaded.pop(model.name, None)
                return True
            self._loaded[model.name] = None if seconds is None else time.monotonic() + seconds
        return False

    # -- faults --

    def _take_fault(self, faults: list[_Fault], method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in faults:
                if fault.times > 0 and fault.matches(method, path):
                    fault.times -= 1
                    if fault.times == 0:
                        faults.remove(fault)
                    return fault
        return None


# -- request handling ----------------------------------------------------------

Events = list[dict[str, Any]]


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOllama
    protocol_version = "HTTP/1.1"
    server_version = "fake-ollama"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- plumbing --

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _send_json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json; charset=utf-8")

    def _send_error(self, status: int, message: str) -> None:
        self._send_json(status, {"error": message})

    def _send_stream(self, events: Iterable[dict[str, Any]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in events:
            data = (json.dumps(event) + "\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _finish_progress(self, stream: bool, events: Events) -> None:
        """Answer a create/pull the way the real server does: every line when
        streaming (errors as lines), else the last status or the error with its code."""
        if stream:
            self._send_stream(events)
            return
        for event in events:
            if "error" in event:
                self._send_error(int(event.get("status", 500)), event["error"])
                return
        self._send_json(200, events[-1] if events else {})

    # -- dispatch --

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        fake = self.fake
        path = self.path.split("?", 1)[0]
        body = self._read_body()
        keep = body if len(body) <= fake.record_body_limit else b""
        with fake._lock:
            fake.requests.append(
                RecordedRequest(self.command, path, dict(self.headers.items()), keep, len(body))
            )
        fault = fake._take_fault(fake._faults, self.command, path)
        if fault is not None and not fault.delay:
            self._send_error(fault.status, fault.error)
            return
        if fault is not None:
            time.sleep(fault.delay)
        route = _ROUTES.get((self.command, path))
        if route is None and path.startswith("/api/blobs/") and self.command in ("HEAD", "POST"):
            route = _Handler._head_blob if self.command == "HEAD" else _Handler._post_blob
        if route is None:
            self._send(404, b"404 page not found", "text/plain")
            return
        try:
            payload: Any = None
            if self.command in ("POST", "DELETE") and not path.startswith("/api/blobs/"):
                if not body:
                    raise OllamaError(ERR_MISSING_BODY, 400)
                try:
                    payload = json.loads(body)
                except ValueError as exc:
                    raise OllamaError(str(exc), 400) from exc
                if not isinstance(payload, dict):
                    raise OllamaError("request body must be a JSON object", 400)
            route(self, path, payload, body)
        except OllamaError as exc:
            self._send_error(exc.status, exc.message)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (a timeout test)
        except Exception as exc:  # a bug in the fake: make it visible to the test
            self._send_error(500, f"fake ollama internal error: {exc!r}")

    # -- endpoints --

    def _root(self, path: str, payload: Any, body: bytes) -> None:
        self._send(200, b"Ollama is running", "text/plain; charset=utf-8")

    def _version(self, path: str, payload: Any, body: bytes) -> None:
        self._send_json(200, {"version": self.fake.version})

    def _tags(self, path: str, payload: Any, body: bytes) -> None:
        with self.fake._lock:
            models = sorted(self.fake._models.values(), key=lambda m: m.modified_at, reverse=True)
        self._send_json(
            200,
            {
                "models": [
                    {
                        "name": m.name,
                        "model": m.name,
                        "modified_at": _ts(m.modified_at),
                        "size": m.size,
                        "digest": m.digest,
                        "details": m.details,
                    }
                    for m in models
                ]
            },
        )

    def _ps(self, path: str, payload: Any, body: bytes) -> None:
        fake = self.fake
        out = []
        with fake._lock:
            fake._expire()
            loaded = dict(fake._loaded)
        now_mono, now = time.monotonic(), _now()
        for name, expiry in sorted(loaded.items()):
            model = fake._find(name)
            if model is None:
                continue
            # A model kept loaded forever reports a far-off expiry, as Ollama does.
            left = timedelta(days=36500) if expiry is None else timedelta(seconds=expiry - now_mono)
            expires = now + left
            out.append(
                {
                    "name": model.name,
                    "model": model.name,
                    "size": model.size,
                    "digest": model.digest,
                    "details": model.details,
                    "expires_at": _ts(expires),
                    "size_vram": model.size,
                    "context_length": model.context_length,
                }
            )
        self._send_json(200, {"models": out})

    def _show(self, path: str, payload: dict[str, Any], body: bytes) -> None:
        name = payload.get("model") or payload.get("name")
        if not name:
            raise OllamaError("model is required", 400)
        model = self.fake._find(name)
        if model is None:
            raise OllamaError(f"model '{name}' not found", 404)
        params = []
        for key in sorted(model.parameters):
            value = model.parameters[key]
            for item in value if isinstance(value, list) else [value]:
                params.append(f"{key:<30} {_go_value(item)}")
        model_layer = model.layer(MEDIA_MODEL)
        modelfile = [
            '# Modelfile generated by "ollama show"',
            "# To build a new Modelfile based on this, replace FROM with:",
            f"# FROM {model.name}",
            "",
            f"FROM {self.fake._blob_path(model_layer.digest) if model_layer else model.name}",
        ]
        if model.template:
            modelfile.append(f'TEMPLATE """{model.template}"""')
        if model.system:
            modelfile.append(f'SYSTEM """{model.system}"""')
        modelfile += [
            f"PARAMETER {p.split(maxsplit=1)[0]} {p.split(maxsplit=1)[1]}" for p in params
        ]
        self._send_json(
            200,
            {
                "license": "\n".join(model.license),
                "modelfile": "\n".join(modelfile) + "\n",
                "parameters": "\n".join(params),
                "template": model.template,
                "system": model.system,
                "details": model.details,
                "model_info": {
                    "general.architecture": model.family,
                    "general.parameter_count": model.size,
                    f"{model.family}.context_length": model.context_length,
                    f"{model.family}.embedding_length": model.embedding_length,
                },
                "capabilities": model.capabilities,
                "modified_at": _ts(model.modified_at),
            },
        )

    def _embed(self, path: str, payload: dict[str, Any], body: bytes) -> None:
        fake = self.fake
        model = fake._require(payload.get("model"))
        raw = payload.get("input", [])
        if isinstance(raw, str):
            texts = [raw] if raw else []
        elif isinstance(raw, list) and all(isinstance(t, str) for t in raw):
            texts = raw
        else:
            raise OllamaError("invalid input type", 400)
        dims = payload.get("dimensions")
        if dims is not None and (not isinstance(dims, int) or dims < 1):
            raise OllamaError("dimensions must be a positive integer", 400)
        fake._touch(model, payload.get("keep_alive"))
        vectors = []
        for text in texts:
            if fake.embed_fn is not None:
                vector = list(fake.embed_fn(model.name, text))
            else:
                vector = hash_embedding(text, model.embedding_length)
            if dims is not None:
                if dims > len(vector):
                    raise OllamaError(
                        f"dimensions must be between 1 and {len(vector)}, got {dims}", 400
                    )
                vector = vector[:dims]
            vectors.append(normalise(vector))
        self._send_json(
            200,
            {
                "model": model.name,
                "embeddings": vectors,
                "total_duration": 1000 * (1 + len(texts)),
                "load_duration": 1000,
                "prompt_eval_count": sum(len(t.split()) for t in texts),
            },
        )

    def _embeddings(self, path: str, payload: dict[str, Any], body: bytes) -> None:
        """The deprecated single-prompt endpoint (vectors are not normalised there)."""
        fake = self.fake
        model = fake._require(payload.get("model"))
        fake._touch(model, payload.get("keep_alive"))
        prompt = payload.get("prompt") or ""
        if not prompt:
            self._send_json(200, {"embedding": []})
            return
        if fake.embed_fn is not None:
            vector = list(fake.embed_fn(model.name, prompt))
        else:
            vector = hash_embedding(prompt, model.embedding_length)
        self._send_json(200, {"embedding": vector})

    def _generation(self, payload: dict[str, Any], *, chat: bool) -> None:
        fake = self.fake
        model = fake._require(payload.get("model"))
        if "completion" not in model.capabilities:
            raise OllamaError(
                f'"{model.name}" does not support {"chat" if chat else "generate"}', 400
            )
        stream = payload.get("stream", True) is not False
        created = _ts(_now())
        if chat and not isinstance(payload.get("messages") or [], list):
            raise OllamaError("messages must be a list", 400)
        request = _generation_of("chat" if chat else "generate", payload, model.name)
        prompt = request.prompt
        empty = not payload.get("messages") if chat else not prompt
        unloaded = fake._touch(model, payload.get("keep_alive"))

        def frame(piece: str, **extra: Any) -> dict[str, Any]:
            if chat:
                return {
                    "model": model.name,
                    "created_at": created,
                    "message": {"role": "assistant", "content": piece},
                    **extra,
                }
            return {"model": model.name, "created_at": created, "response": piece, **extra}

        if empty:
            # A load (or, with keep_alive 0, an unload) request: no generation.
            final = frame("", done=True, done_reason="unload" if unloaded else "load")
            if stream:
                self._send_stream([final])
            else:
                self._send_json(200, final)
            return
        policy = fake.reply_fn
        text = policy(request) if policy is not None else fake.generate_fn(model.name, prompt)
        options = payload.get("options") or {}
        done_reason = "stop"
        for stop in list(options.get("stop") or []) + list(model.parameters.get("stop") or []):
            if stop and stop in text:
                text = text[: text.index(stop)]
        words = re.findall(r"\S+\s*", text)
        limit = options.get("num_predict")
        if isinstance(limit, int) and 0 <= limit < len(words):
            words, done_reason = words[:limit], "length"
        if payload.get("format") and policy is None:
            words = [json.dumps({"response": "".join(words)})]
        stats = {
            "done": True,
            "done_reason": done_reason,
            "total_duration": 2_000_000,
            "load_duration": 1_000_000,
            "prompt_eval_count": len(prompt.split()),
            "prompt_eval_duration": 500_000,
            "eval_count": len(words),
            "eval_duration": 500_000,
        }
        if not chat:
            stats["context"] = [len(w) for w in words][:16]
        if stream:
            self._send_stream([frame(w, done=False) for w in words] + [frame("", **stats)])
        else:
            self._send_json(200, frame("".join(words), **stats))

    def _generate(self, path: str, payload: dict[str, Any], body: bytes) -> None:
        self._generation(payload, chat=False)

    def _chat(self, path: str, payload: dict[str, Any], body: bytes) -> None:
        self._generation(payload, chat=True)

    def _head_blob(self, path: str, payload: Any, body: bytes) -> None:
        digest = path[len("/api/blobs/") :]
        if not self.fake._blob_path(digest).is_file():
            raise OllamaError(f'blob "{digest}" not found', 404)
        self._send(200, b"", "text/plain")

    def _post_blob(self, path: str, payload: Any, body: bytes) -> None:
        fake = self.fake
        digest = path[len("/api/blobs/") :]
        target = fake._blob_path(digest)
        if target.is_file():
            self._send(200, b"", "text/plain")
            return
        actual = "sha256:" + hashlib.sha256(body).hexdigest()
        if actual.lower() != "sha256:" + target.name[len("sha256-") :]:
            raise OllamaError(f'digest mismatch, expected "{digest}", got "{actual}"', 400)
        tmp = target.with_suffix(".partial")
        tmp.write_bytes(body)
        tmp.replace(target)
        self._send(201, b"", "text/plain")

    def _create(self, path: str, payload: dict[str, Any], body: bytes) -> None:
        stream = payload.get("stream", True) is not False
        self._finish_progress(stream, self._create_events(payload))

    def _create_events(self, payload: dict[str, Any]) -> Events:
        """The status lines of one create, ending in success or an error line."""
        fake = self.fake
        name = payload.get("model") or payload.get("name") or ""
        if not isinstance(name, str) or not valid_name(name):
            raise OllamaError(ERR_INVALID_NAME, 400)
        files = payload.get("files") or {}
        adapters = payload.get("adapters") or {}
        for group in (files, adapters):
            if not isinstance(group, dict):
                raise OllamaError("files and adapters must map file names to digests", 400)
            for fname in group:
                if fname.startswith("/") or ".." in Path(fname).parts or fname == "":
                    raise OllamaError(ERR_FILE_PATH, 400)
        events: Events = []

        def fail(message: str, status: int | None = None) -> Events:
            events.append({"error": message, **({"status": status} if status else {})})
            return events

        template = payload.get("template")
        if template is not None and template.count("{{") != template.count("}}"):
            return fail("template error: unexpected EOF in template", 400)
        quantize = payload.get("quantize")
        if quantize and str(quantize).upper() not in QUANTIZATION_TYPES:
            return fail(f"unsupported quantization type {quantize}", 400)

        source = payload.get("from")
        try:
            if source:
                base = fake._find(source)
                if base is None:
                    events.append({"status": "pulling manifest"})
                    model_part, _, tag = normalise_name(source).partition(":")
                    return fail(OFFLINE_PULL_ERROR.format(model=model_part, tag=tag))
                base_layers = [
                    la
                    for la in base.layers
                    if la.media_type in (MEDIA_MODEL, MEDIA_ADAPTER, MEDIA_LICENSE, MEDIA_MESSAGES)
                ]
                info: dict[str, Any] = {
                    "family": base.family,
                    "parameter_size": base.parameter_size,
                    "quantization_level": base.quantization_level,
                    "template": base.template,
                    "system": base.system,
                    "parameters": dict(base.parameters),
                    "license": list(base.license),
                    "messages": list(base.messages),
                    "capabilities": list(base.capabilities),
                    "embedding_length": base.embedding_length,
                    "parent_model": base.name,
                }
            elif files:
                base_layers, info = self._from_files(files, events)
            else:
                return fail(ERR_NEITHER_FROM_OR_FILES, 400)
            adapter_layers = self._adapters(adapters, events) if adapters else []
        except OllamaError as exc:
            return fail(exc.message, exc.status if exc.status != 500 else None)

        if quantize:
            if info["quantization_level"] not in ("F16", "F32", "BF16"):
                return fail("quantization is only supported for F16 and F32 models")
            level = str(quantize).upper()
            events.append({"status": f"quantizing {info['quantization_level']} model to {level}"})
            model_layer = next(la for la in base_layers if la.media_type == MEDIA_MODEL)
            quantized = fake._put_blob(
                MEDIA_MODEL, b"GGUF" + f"{model_layer.digest} as {level}".encode()
            )
            base_layers = [quantized if la is model_layer else la for la in base_layers]
            info["quantization_level"] = level

        fault = fake._take_fault(fake._create_faults, "POST", "/api/create")
        for layer in base_layers + adapter_layers:
            events.append({"status": f"using existing layer {layer.digest}"})
        if fault is not None:
            return fail(fault.error)

        if template is not None:
            info["template"] = template
        if payload.get("system") is not None:
            info["system"] = payload["system"]
        if payload.get("parameters"):
            merged = dict(info["parameters"])
            merged.update(payload["parameters"])
            info["parameters"] = merged
        if payload.get("license") is not None:
            lic = payload["license"]
            info["license"] = [lic] if isinstance(lic, str) else list(lic)
        if payload.get("messages") is not None:
            info["messages"] = list(payload["messages"])
        model = fake._build(
            normalise_name(name),
            base_layers=base_layers,
            adapter_layers=adapter_layers,
            **info,
        )
        for media in (MEDIA_TEMPLATE, MEDIA_SYSTEM, MEDIA_PARAMS):
            new_layer = model.layer(media)
            if new_layer is not None:
                events.append({"status": f"creating new layer {new_layer.digest}"})
        events.append({"status": "writing manifest"})
        with fake._lock:
            existing = fake._find(name)
            if existing is not None:
                fake._unstore(existing.name)
                model.name = existing.name
            fake._store(model)
        events.append({"status": "success"})
        return events

    def _from_files(
        self, files: dict[str, str], events: Events
    ) -> tuple[list[Layer], dict[str, Any]]:
        fake = self.fake
        paths = {fname: fake._blob_path(digest) for fname, digest in files.items()}
        for fname, path in paths.items():
            if not path.is_file():
                raise OllamaError(f"blob {files[fname]} not found: upload it first", 400)
        kind = _file_kind(paths)
        info: dict[str, Any] = {
            "parameter_size": "",
            "template": "",
            "system": "",
            "parameters": {},
            "license": [],
            "messages": [],
            "capabilities": ["completion"],
            "embedding_length": DEFAULT_EMBEDDING_LENGTH,
            "parent_model": "",
        }
        if kind == "gguf":
            layers = []
            for fname, path in paths.items():
                events.append({"status": "parsing GGUF"})
                arch = gguf_architecture(path)
                if arch is None:
                    raise OllamaError("invalid file magic")
                info["family"] = arch
                layers.append(fake._layer_of(MEDIA_MODEL, files[fname]))
            info["quantization_level"] = "F16"
            info["parameter_size"] = _human_size(sum(la.size for la in layers) // 2)
            return layers, info
        if kind == "safetensors":
            events.append({"status": "converting model"})
            config_name = next((f for f in paths if Path(f).name == "config.json"), None)
            if config_name is None:
                raise OllamaError("open config.json: file does not exist")
            try:
                config = json.loads(paths[config_name].read_text())
            except ValueError as exc:
                raise OllamaError(f"invalid config.json: {exc}") from exc
            archs = config.get("architectures") or []
            arch = archs[0] if archs else ""
            if arch not in fake.architectures:
                raise OllamaError(f'unsupported architecture "{arch}"')
            tensors = [f for f in paths if f.endswith(".safetensors")]
            for fname in tensors:
                if not safetensors_ok(paths[fname]):
                    raise OllamaError(f"{fname}: invalid safetensors header")
            size = sum(paths[f].stat().st_size for f in tensors)
            converted = b"GGUF" + json.dumps(sorted(files.items())).encode()
            info["family"] = fake.architectures[arch]
            info["quantization_level"] = "F16"
            info["parameter_size"] = _human_size(size // 2)
            layer = fake._put_blob(MEDIA_MODEL, converted)
            return [layer], info
        raise OllamaError(ERR_UNKNOWN_TYPE, 400)

    def _adapters(self, adapters: dict[str, str], events: Events) -> list[Layer]:
        fake = self.fake
        paths = {fname: fake._blob_path(digest) for fname, digest in adapters.items()}
        for fname, path in paths.items():
            if not path.is_file():
                raise OllamaError(f"blob {adapters[fname]} not found: upload it first", 400)
        kind = _file_kind(paths)
        if kind == "gguf":
            if len(paths) > 1:
                raise OllamaError(ERR_ONLY_ONE_ADAPTER, 400)
            ((fname, path),) = paths.items()
            if gguf_architecture(path) is None:
                raise OllamaError("invalid file magic")
            return [fake._layer_of(MEDIA_ADAPTER, adapters[fname])]
        if kind == "safetensors":
            events.append({"status": "converting adapter"})
            if not any(Path(f).name == "adapter_config.json" for f in paths):
                raise OllamaError("open adapter_config.json: file does not exist")
            for fname, path in paths.items():
                if fname.endswith(".safetensors") and not safetensors_ok(path):
                    raise OllamaError(f"{fname}: invalid safetensors header")
            converted = b"GGUF" + json.dumps(sorted(adapters.items())).encode()
            return [fake._put_blob(MEDIA_ADAPTER, converted)]
        raise OllamaError(ERR_UNKNOWN_TYPE, 400)

    def _copy(self, path: str, payload: dict[str, Any], body: bytes) -> None:
        fake = self.fake
        source, dest = payload.get("source"), payload.get("destination")
        if not isinstance(dest, str) or not valid_name(dest):
            raise OllamaError(f"destination {dest!r} is invalid", 400)
        model = fake._find(source) if isinstance(source, str) and source else None
        if model is None:
            raise OllamaError(f'model "{source}" not found', 404)
        with fake._lock:
            existing = fake._find(dest)
            target = existing.name if existing is not None else normalise_name(dest)
            if existing is not None:
                fake._unstore(existing.name)
            fake._store(replace(model, name=target, layers=list(model.layers), modified_at=_now()))
        self._send(200, b"", "text/plain")

    def _delete(self, path: str, payload: dict[str, Any], body: bytes) -> None:
        fake = self.fake
        name = payload.get("model") or payload.get("name")
        if not isinstance(name, str) or not valid_name(name):
            raise OllamaError(ERR_INVALID_NAME, 400)
        with fake._lock:
            model = fake._find(name)
            if model is None:
                raise OllamaError(f"model '{name}' not found", 404)
            fake._unstore(model.name)
            fake._loaded.pop(model.name, None)
            in_use = {la.digest for m in fake._models.values() for la in [*m.layers, m.config]}
            for layer in [*model.layers, model.config]:
                if layer.digest not in in_use:
                    fake._blob_path(layer.digest).unlink(missing_ok=True)
        self._send(200, b"", "text/plain")

    def _pull(self, path: str, payload: dict[str, Any], body: bytes) -> None:
        name = payload.get("model") or payload.get("name")
        if not isinstance(name, str) or not valid_name(name):
            raise OllamaError(ERR_INVALID_NAME, 400)
        model_part, _, tag = normalise_name(name).partition(":")
        verb = "pulling" if path.endswith("/pull") else "pushing"
        events: Events = [
            {"status": f"{verb} manifest"},
            {"error": OFFLINE_PULL_ERROR.format(model=model_part, tag=tag)},
        ]
        self._finish_progress(payload.get("stream", True) is not False, events)


def _generation_of(endpoint: str, payload: dict[str, Any], model: str) -> Generation:
    """A chat or generate request body as a :class:`Generation`."""
    options = payload.get("options")
    options = dict(options) if isinstance(options, dict) else {}
    if endpoint == "chat":
        raw = payload.get("messages") or []
        messages = [dict(m) for m in raw if isinstance(m, dict)]
        users = [str(m.get("content") or "") for m in messages if m.get("role") == "user"]
        systems = [str(m.get("content") or "") for m in messages if m.get("role") == "system"]
        prompt, system = (users[-1] if users else ""), "\n".join(systems)
    else:
        prompt, system = str(payload.get("prompt") or ""), str(payload.get("system") or "")
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": prompt})
    name = model or str(payload.get("model") or "")
    return Generation(endpoint, name, messages, prompt, system, payload.get("format"), options)


def _file_kind(paths: dict[str, Path]) -> str:
    """gguf / safetensors / unknown, the way Ollama's detectModelTypeFromFiles decides."""
    if not paths:
        raise OllamaError(ERR_NO_FILES, 400)
    for fname, path in paths.items():
        if fname.endswith(".safetensors"):
            return "safetensors"
        if fname.endswith(".gguf"):
            return "gguf"
        with path.open("rb") as fh:
            if fh.read(4) == b"GGUF":
                return "gguf"
    return ""


def _human_size(n_params: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n_params >= scale:
            return f"{n_params / scale:.2f}{unit}".replace(".00", "")
    return str(n_params)


_ROUTES: dict[tuple[str, str], Callable[[_Handler, str, Any, bytes], None]] = {
    ("GET", "/"): _Handler._root,
    ("HEAD", "/"): _Handler._root,
    ("GET", "/api/version"): _Handler._version,
    ("GET", "/api/tags"): _Handler._tags,
    ("GET", "/api/ps"): _Handler._ps,
    ("POST", "/api/show"): _Handler._show,
    ("POST", "/api/embed"): _Handler._embed,
    ("POST", "/api/embeddings"): _Handler._embeddings,
    ("POST", "/api/generate"): _Handler._generate,
    ("POST", "/api/chat"): _Handler._chat,
    ("POST", "/api/create"): _Handler._create,
    ("POST", "/api/copy"): _Handler._copy,
    ("DELETE", "/api/delete"): _Handler._delete,
    ("POST", "/api/pull"): _Handler._pull,
    ("POST", "/api/push"): _Handler._pull,
}


def iter_lines(response_text: str) -> Iterator[dict[str, Any]]:
    """The JSON objects of an NDJSON body (for tests reading raw responses)."""
    for line in response_text.splitlines():
        if line.strip():
            yield json.loads(line)

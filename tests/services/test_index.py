"""The vector index on a real embedded Chroma (and a real Chroma server)."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.chroma_store import parse_url
from services.embedding import EmbeddingError, LocalEmbedder, OllamaEmbedder
from services.index import (
    IndexItem,
    SearchHit,
    VectorIndex,
    VectorIndexError,
    collection_name,
)
from services.memories.model import Memory
from tests.fakes.embedder import HashEmbedder, shared_local_embedder
from tests.fakes.network import assert_guard_is_live, refuse_network
from tests.fakes.ollama_server import FakeOllama

# Chroma's strictest collection-name rules (the Python server's, 0.x and 1.x).
CHROMA_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,61}[a-zA-Z0-9]$")

MEMORIES = [
    ("m-dog", "Took Biscuit the dog for a long walk in the park before breakfast.", "journal"),
    ("m-tax", "Filed the quarterly tax return and emailed the accountant.", "action"),
    ("m-piano", "Practised the Chopin nocturne on the piano for an hour.", "journal"),
    ("m-dream", "Dreamt I was flying over the ocean at night.", "dream"),
    (
        "m-code",
        "Spent the afternoon debugging a crash in my Python program and wrote a unit test.",
        "action",
    ),
]


def item(id_: str, text: str, type_: str = "journal", **extra: object) -> IndexItem:
    metadata = {
        "type": type_,
        "mode": "emulation",
        "timestamp": "2024-05-01T08:00:00Z",
        "quality": 7.5,
        "tags": "daily,home",
        "source": f"/profiles/alice/memory/{id_}.json",
        **extra,
    }
    return IndexItem(id=id_, text=text, metadata=metadata)


def corpus() -> list[IndexItem]:
    return [item(i, t, ty) for i, t, ty in MEMORIES]


@pytest.fixture(scope="session")
def local() -> LocalEmbedder:
    return shared_local_embedder()


@pytest.fixture
def index(tmp_path: Path, local: LocalEmbedder) -> Iterator[VectorIndex]:
    with VectorIndex(path=tmp_path / "index", embedder=local) as idx:
        yield idx


@pytest.fixture
def hashed(tmp_path: Path) -> Iterator[tuple[VectorIndex, HashEmbedder]]:
    embedder = HashEmbedder()
    with VectorIndex(path=tmp_path / "hashed", embedder=embedder) as idx:
        yield idx, embedder


# -- search -----------------------------------------------------------------------


def test_relevant_memory_ranks_first(index: VectorIndex) -> None:
    assert index.add("alice", corpus()) == len(MEMORIES)
    cases = {
        "walking my puppy": "m-dog",
        "taxes and paperwork": "m-tax",
        "playing music": "m-piano",
        "debugging software": "m-code",
        "a dream about the sea": "m-dream",
    }
    for query, expected in cases.items():
        hits = index.search("alice", query, k=3)
        assert hits[0].id == expected, (query, [h.id for h in hits])
        assert len(hits) == 3
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)
        assert 0 < scores[0] <= 1.0 + 1e-6


def test_score_is_cosine_similarity(index: VectorIndex, local: LocalEmbedder) -> None:
    index.add("alice", corpus())
    query = "walking my puppy"
    (hit,) = index.search("alice", query, k=1)
    q, d = local.embed([query, hit.text])
    assert hit.score == pytest.approx(sum(a * b for a, b in zip(q, d, strict=True)), abs=1e-4)


def test_k_larger_than_the_collection(index: VectorIndex) -> None:
    index.add("alice", corpus()[:2])
    assert len(index.search("alice", "anything", k=50)) == 2
    assert index.search("alice", "anything", k=0) == []


def test_metadata_round_trips(index: VectorIndex) -> None:
    index.add(
        "alice",
        [item("m-dog", MEMORIES[0][1], tags=["dogs", "morning"], importance=None, flag=True)],
    )
    (hit,) = index.search("alice", "dog walk", k=1)
    assert hit.text == MEMORIES[0][1]
    assert hit.metadata == {
        "type": "journal",
        "mode": "emulation",
        "timestamp": "2024-05-01T08:00:00Z",
        "quality": 7.5,
        "tags": "dogs,morning",  # sequences are joined (Chroma stores scalars)
        "source": "/profiles/alice/memory/m-dog.json",
        "flag": True,  # None values are dropped
    }
    assert hit.to_dict() == {
        "id": "m-dog",
        "score": hit.score,
        "text": MEMORIES[0][1],
        "type": "journal",
        "mode": "emulation",
        "timestamp": "2024-05-01T08:00:00Z",
        "source": "/profiles/alice/memory/m-dog.json",
    }


def test_item_from_memory() -> None:
    memory = Memory(
        id="abc",
        format="metahuman",
        type="reflection",
        prompt="What did I learn today?",
        response="That patience pays.",
        timestamp="2024-06-01T21:00:00Z",
        importance=0.8,
        tags=("growth", "evening"),
        metadata={"cognitiveMode": "dual"},
    )
    built = IndexItem.from_memory(memory, source="/p/alice/memory/r.json")
    assert built.id == "abc" and built.text == "What did I learn today?\nThat patience pays."
    assert built.metadata == {
        "type": "reflection",
        "mode": "dual",
        "timestamp": "2024-06-01T21:00:00Z",
        "quality": 8.0,
        "tags": "growth,evening",
        "source": "/p/alice/memory/r.json",
    }
    plain = Memory(id="x", format="qa", type="conversation", prompt="Q?", quality_score=9)
    assert IndexItem.from_memory(plain, mode="emulation").metadata["quality"] == 9.0
    assert IndexItem.from_memory(plain).metadata["mode"] == ""
    bare = Memory(id="y", format="prose", type="prose", prompt="text")
    assert IndexItem.from_memory(bare).metadata["quality"] == -1.0


# -- idempotence and updates ------------------------------------------------------------


def test_re_adding_never_duplicates_nor_re_embeds(
    hashed: tuple[VectorIndex, HashEmbedder],
) -> None:
    index, embedder = hashed
    assert index.add("alice", corpus()) == 5
    embedded = embedder.embedded
    assert index.add("alice", corpus()) == 0
    assert index.add("alice", corpus()[:2]) == 0
    assert index.count("alice") == 5
    assert embedder.embedded == embedded  # unchanged items cost a lookup, not an embedding
    assert len(index.search("alice", MEMORIES[0][1], k=10)) == 5


def test_repeated_ids_in_one_call_keep_the_last(hashed: tuple[VectorIndex, HashEmbedder]) -> None:
    index, _ = hashed
    assert index.add("alice", [item("a", "first"), item("a", "second")]) == 1
    assert index.count("alice") == 1
    (hit,) = index.search("alice", "second", k=1)
    assert hit.text == "second" and hit.score == pytest.approx(1.0, abs=1e-5)


def test_changed_text_is_re_embedded(hashed: tuple[VectorIndex, HashEmbedder]) -> None:
    index, embedder = hashed
    index.add("alice", [item("a", "old words"), item("b", "other")])
    assert index.add("alice", [item("a", "new words")]) == 1
    assert embedder.calls[-1] == ["new words"]
    (hit,) = index.search("alice", "new words", k=1)
    assert hit.id == "a" and hit.text == "new words"
    assert hit.score == pytest.approx(1.0, abs=1e-5)
    assert index.count("alice") == 2


def test_metadata_only_change_updates_in_place(hashed: tuple[VectorIndex, HashEmbedder]) -> None:
    index, embedder = hashed
    index.add("alice", [item("a", "some words", extra="gone soon")])
    calls = len(embedder.calls)
    changed = item("a", "some words", mode="dual", quality=9.0)
    assert index.add("alice", [changed]) == 1
    assert len(embedder.calls) == calls  # no embedding for a metadata change
    (hit,) = index.search("alice", "some words", k=1)
    assert hit.metadata["mode"] == "dual" and hit.metadata["quality"] == 9.0
    assert "extra" not in hit.metadata  # keys that are gone are removed
    assert hit.score == pytest.approx(1.0, abs=1e-5)


def test_large_adds_are_split_into_client_batches(
    hashed: tuple[VectorIndex, HashEmbedder],
) -> None:
    index, embedder = hashed
    index._store.max_batch = 4  # as a small server would report
    items = [item(f"id-{i}", f"memory text {i}") for i in range(10)]
    assert index.add("alice", items) == 10
    assert [len(c) for c in embedder.calls] == [4, 4, 2]
    assert index.ids("alice") == {f"id-{i}" for i in range(10)}  # paged in 4s too
    index.delete("alice", [f"id-{i}" for i in range(7)])
    assert index.ids("alice") == {"id-7", "id-8", "id-9"}


# -- count / ids / delete / reset --------------------------------------------------------


def test_count_ids_delete(hashed: tuple[VectorIndex, HashEmbedder]) -> None:
    index, _ = hashed
    index.add("alice", corpus())
    assert index.count("alice") == 5
    assert index.ids("alice") == {m[0] for m in MEMORIES}
    index.delete("alice", ["m-dog", "m-tax", "never-there"])
    assert index.count("alice") == 3
    assert index.ids("alice") == {"m-piano", "m-dream", "m-code"}
    assert all(h.id not in ("m-dog", "m-tax") for h in index.search("alice", "dog", k=5))
    index.delete("alice", [])
    index.delete("nobody", ["m-piano"])
    assert index.count("alice") == 3


def test_reset_empties_and_allows_reindexing(hashed: tuple[VectorIndex, HashEmbedder]) -> None:
    index, _ = hashed
    index.add("alice", corpus())
    index.add("bob", corpus()[:1])
    index.reset("alice")
    assert index.count("alice") == 0 and index.ids("alice") == set()
    assert index.search("alice", "dog", k=3) == []  # an empty collection
    assert index.count("bob") == 1
    assert index.add("alice", corpus()) == 5
    assert index.count("alice") == 5
    index.reset("carol")  # a profile without a collection yet
    assert index.profiles() == ["alice", "bob", "carol"]


def test_unknown_profile_is_empty_and_not_created(hashed: tuple[VectorIndex, HashEmbedder]) -> None:
    index, embedder = hashed
    assert index.search("nobody", "anything") == []
    assert index.count("nobody") == 0
    assert index.ids("nobody") == set()
    assert index.profiles() == []
    assert embedder.calls == []  # no query embedded for nothing to search


def test_profiles_are_isolated(index: VectorIndex) -> None:
    index.add("alice", corpus()[:2])
    index.add("bob", [item("b-1", "Bob bakes sourdough bread every Sunday.")])
    assert index.count("alice") == 2 and index.count("bob") == 1
    assert {h.id for h in index.search("bob", "walking the dog", k=10)} == {"b-1"}
    assert "b-1" not in {h.id for h in index.search("alice", "baking bread", k=10)}
    index.reset("bob")
    assert index.count("alice") == 2


def test_persists_across_reopening(tmp_path: Path, local: LocalEmbedder) -> None:
    path = tmp_path / "index"
    first = VectorIndex(path=path, embedder=local)
    first.add("alice", corpus())
    first.close()
    first.close()  # idempotent
    with pytest.raises(VectorIndexError, match="closed"):
        first.count("alice")
    with VectorIndex(path=path, embedder=local) as again:
        assert again.count("alice") == 5
        assert again.search("alice", "walking my puppy", k=1)[0].id == "m-dog"
        assert again.profiles() == ["alice"]


def test_survives_a_collection_dropped_elsewhere(tmp_path: Path) -> None:
    embedder = HashEmbedder()
    path = tmp_path / "index"
    with (
        VectorIndex(path=path, embedder=embedder) as a,
        VectorIndex(path=path, embedder=embedder) as b,
    ):
        a.add("alice", corpus())
        assert b.count("alice") == 5  # b now holds a handle on the collection
        a.reset("alice")  # which a drops and recreates
        assert b.count("alice") == 0
        b.add("alice", corpus()[:2])
        assert a.count("alice") == 2


# -- embedders ----------------------------------------------------------------------------


def test_another_embedder_asks_for_a_reindex(tmp_path: Path) -> None:
    path = tmp_path / "index"
    with VectorIndex(path=path, embedder=HashEmbedder(dim=16, name="test:a")) as idx:
        idx.add("alice", corpus())
        assert idx.built_with("alice") == "test:a"
    with VectorIndex(path=path, embedder=HashEmbedder(dim=8, name="test:b")) as idx:
        with pytest.raises(VectorIndexError, match=r"test:a.*personad reindex alice"):
            idx.search("alice", "dog")
        with pytest.raises(VectorIndexError, match="personad reindex alice"):
            idx.add("alice", [item("new", "text")])
        assert idx.count("alice") == 5  # counting and listing still work
        assert len(idx.ids("alice")) == 5
        idx.reset("alice")
        assert idx.built_with("alice") == "test:b"
        idx.add("alice", corpus())
        assert idx.search("alice", MEMORIES[1][1], k=1)[0].id == "m-tax"


def test_embedding_errors_pass_through_and_nothing_is_half_written(tmp_path: Path) -> None:
    with FakeOllama() as fake:
        embedder = OllamaEmbedder(fake.url, "nomic-embed-text")  # not pulled on this server
        with VectorIndex(path=tmp_path / "index", embedder=embedder) as idx:
            with pytest.raises(EmbeddingError, match="ollama pull nomic-embed-text"):
                idx.add("alice", corpus())
            assert idx.count("alice") == 0


# -- names --------------------------------------------------------------------------------


def test_collection_names() -> None:
    assert collection_name("alice") == "personad-alice"
    assert collection_name("a") == "personad-a"
    assert collection_name("team_x-2") == "personad-team_x-2"
    tricky = [
        "Alice",
        "alice ",
        "al ice",
        "al.ice",
        "ålice",
        "李雷",
        "-alice",
        "alice-",
        "x" * 60,
        "x" * 61,
        "..",
        "192.168.1.1",
        "a/b",
    ]
    names = [collection_name(p) for p in tricky]
    assert len(set(names)) == len(tricky)  # no two profiles share a collection
    assert names == [collection_name(p) for p in tricky]  # deterministic
    for profile, name in zip(tricky, names, strict=True):
        assert CHROMA_NAME.match(name) and ".." not in name, (profile, name)
        assert name.startswith("personad.")  # escaped, so never equal to a plain name
    assert collection_name("Alice").startswith("personad.alice.")
    with pytest.raises(VectorIndexError):
        collection_name("")


def test_escaped_profiles_work_end_to_end(hashed: tuple[VectorIndex, HashEmbedder]) -> None:
    index, _ = hashed
    for profile in ("Alice Smith", "李雷", "alice"):
        index.add(profile, [item(f"{profile}-1", f"a memory of {profile}")])
    assert index.count("Alice Smith") == 1 and index.count("李雷") == 1
    assert index.profiles() == sorted(["Alice Smith", "李雷", "alice"])


# -- opening ------------------------------------------------------------------------------


def test_constructor_needs_exactly_one_target(tmp_path: Path) -> None:
    with pytest.raises(VectorIndexError, match="either"):
        VectorIndex(embedder=HashEmbedder())
    with pytest.raises(VectorIndexError, match="either"):
        VectorIndex(path=tmp_path, url="http://localhost:8000", embedder=HashEmbedder())


def test_url_parsing() -> None:
    assert parse_url("http://chroma.local:9000") == ("chroma.local", 9000, False)
    assert parse_url("https://chroma.example.com") == ("chroma.example.com", 443, True)
    assert parse_url("http://chroma.local") == ("chroma.local", 80, False)
    assert parse_url("localhost") == ("localhost", 8000, False)
    assert parse_url("127.0.0.1:8123") == ("127.0.0.1", 8123, False)
    for bad in ("ftp://x", "http://", "http://h:99999", "http://h/some/path"):
        with pytest.raises(VectorIndexError):
            parse_url(bad)


def test_unreachable_server_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # A server down at start-up is not fatal: each use fails until it answers.
    with VectorIndex(url=f"http://127.0.0.1:{port}", embedder=HashEmbedder()) as idx:
        unreachable = f"the Chroma server at http://127.0.0.1:{port} is not reachable"
        with pytest.raises(VectorIndexError, match=unreachable):
            idx.add("alice", corpus())
        with pytest.raises(VectorIndexError, match=unreachable):
            idx.search("alice", "piano")


def test_nothing_touches_the_network(
    tmp_path: Path, local: LocalEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts = refuse_network(monkeypatch)
    with VectorIndex(path=tmp_path / "index", embedder=local) as idx:
        idx.add("alice", corpus())
        assert idx.search("alice", "piano", k=1)[0].id == "m-piano"
        idx.delete("alice", ["m-piano"])
        idx.reset("alice")
    assert attempts == []
    assert_guard_is_live(attempts)


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Chroma server (the ``chroma`` command chromadb installs) on a free port."""
    chroma = shutil.which("chroma", path=str(Path(sys.executable).parent))
    assert chroma is not None, "chromadb's `chroma` command is missing"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tmp_path_factory.mktemp("chroma-server")
    proc = subprocess.Popen(
        [chroma, "run", "--path", str(data), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert proc.poll() is None, "the Chroma server exited"
                assert time.monotonic() < deadline, "the Chroma server did not start"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_chroma_server_by_url(chroma_server: str) -> None:
    embedder = HashEmbedder()
    with VectorIndex(url=chroma_server, embedder=embedder) as idx:
        assert idx.add("alice", corpus()) == 5
        assert idx.add("alice", corpus()) == 0
        hits = idx.search("alice", MEMORIES[2][1], k=2)
        assert isinstance(hits[0], SearchHit) and hits[0].id == "m-piano"
        assert hits[0].metadata["source"] == "/profiles/alice/memory/m-piano.json"
        idx.delete("alice", ["m-piano"])
        assert idx.count("alice") == 4
        idx.reset("alice")
        assert idx.count("alice") == 0

"""Publishing to Ollama with the real ``ollama`` client against the fake Ollama server:
blobs, the create request, verification, the ``:latest`` swap, and every failure
leaving ``:latest`` where it was."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import ollama
import pytest

from services.publish import OllamaPublisher, PublishError
from services.schemas import ChatSchema, load_schema
from tests.fakes.ollama_server import FakeOllama, valid_name
from tests.services.publish.publish_helpers import write_adapter, write_full_model


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        yield server


@pytest.fixture
def publisher(fake: FakeOllama) -> Iterator[OllamaPublisher]:
    with OllamaPublisher(fake.url, "personad", timeout=10, create_timeout=30) as pub:
        yield pub


@pytest.fixture
def schema() -> ChatSchema:
    return load_schema("smollm")


def _publish_full(
    publisher: OllamaPublisher, schema: ChatSchema, model: Path, version: int, **kw: object
) -> str:
    return publisher.publish(
        "alice",
        version,
        model,
        kind="full",
        schema=schema,
        **kw,  # type: ignore[arg-type]
    ).name


def _blob_posts(fake: FakeOllama) -> list[str]:
    return [r.path for r in fake.requests_for("/api/blobs", method="POST")]


def test_publish_creates_the_version_with_template_stop_system_and_quantize(
    fake: FakeOllama, publisher: OllamaPublisher, schema: ChatSchema, tmp_path: Path
) -> None:
    model = write_full_model(tmp_path / "run" / "model")
    (model / "optimizer.pt").write_bytes(b"\0" * 4096)  # not for Ollama: stays home
    published = publisher.publish(
        "alice", 1, model, kind="full", schema=schema, parameters={"temperature": 0.7}
    )

    assert published.name == "personad-alice:v1"
    created = fake.model("personad-alice:v1")
    assert published.digest == created.digest
    (request,) = [r.json for r in fake.requests_for("/api/create")]
    assert request["model"] == "personad-alice:v1"
    assert request["quantize"] == "q8_0"
    assert request["template"] == schema.ollama_template
    assert request["system"] == schema.ollama_system
    assert request["parameters"]["stop"] == list(schema.stop)
    assert request["parameters"]["temperature"] == 0.7
    assert sorted(request["files"]) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert len(_blob_posts(fake)) == 4
    assert created.template == schema.ollama_template
    assert created.parameters["stop"] == list(schema.stop)
    assert created.quantization_level == "Q8_0"
    # It was checked: shown and asked a short question.
    assert fake.requests_for("/api/show")
    (generate,) = [r.json for r in fake.requests_for("/api/generate")]
    assert generate["model"] == "personad-alice:v1" and generate["prompt"]
    # Publishing alone touches no alias.
    assert "personad-alice:latest" not in fake.model_names()
    assert published.modelfile.startswith("# ollama create personad-alice:v1 --quantize q8_0")
    assert f"FROM {model}\n" in published.modelfile


def test_blobs_the_server_has_are_not_uploaded_again(
    fake: FakeOllama, publisher: OllamaPublisher, schema: ChatSchema, tmp_path: Path
) -> None:
    model = write_full_model(tmp_path / "run1" / "model")
    _publish_full(publisher, schema, model, 1)
    assert len(_blob_posts(fake)) == 4

    _publish_full(publisher, schema, model, 2)
    assert len(_blob_posts(fake)) == 4  # nothing new: only HEADs
    assert len(fake.requests_for("/api/blobs", method="HEAD")) == 8

    retrained = write_full_model(tmp_path / "run3" / "model", seed=3)
    _publish_full(publisher, schema, retrained, 3)
    new_posts = _blob_posts(fake)[4:]
    # Only the new weights travel; config and tokenizer are the same bytes.
    assert len(new_posts) == 1
    from services.publish.artifact import sha256_file

    assert new_posts[0] == f"/api/blobs/{sha256_file(retrained / 'model.safetensors')}"


def test_activate_points_latest_at_the_version_and_rolls_back(
    fake: FakeOllama, publisher: OllamaPublisher, schema: ChatSchema, tmp_path: Path
) -> None:
    for n in (1, 2):
        _publish_full(publisher, schema, write_full_model(tmp_path / f"r{n}", seed=n), n)
    assert publisher.active_version("alice") is None

    digest = publisher.activate("alice", 1)
    assert fake.model("personad-alice:latest").digest == fake.model("personad-alice:v1").digest
    assert digest == fake.model("personad-alice:v1").digest
    assert publisher.active_version("alice") == 1

    publisher.activate("alice", 2)
    assert fake.model("personad-alice:latest").digest == fake.model("personad-alice:v2").digest
    assert publisher.active_version("alice") == 2
    assert publisher.versions("alice") == [1, 2]

    assert publisher.rollback("alice") == 1
    assert fake.model("personad-alice:latest").digest == fake.model("personad-alice:v1").digest
    with pytest.raises(PublishError, match="no version older"):
        publisher.rollback("alice")
    with pytest.raises(PublishError, match="personad-alice:v9: Ollama has no such model"):
        publisher.activate("alice", 9)


def test_a_version_is_never_replaced(
    fake: FakeOllama, publisher: OllamaPublisher, schema: ChatSchema, tmp_path: Path
) -> None:
    _publish_full(publisher, schema, write_full_model(tmp_path / "a"), 1)
    before = fake.model("personad-alice:v1").digest
    with pytest.raises(PublishError, match="already exists"):
        _publish_full(publisher, schema, write_full_model(tmp_path / "b", seed=5), 1)
    assert fake.model("personad-alice:v1").digest == before


def _blob_upload_fails(fake: FakeOllama) -> None:
    fake.fail_next("/api/blobs", method="POST", status=500, error="write blob: no space left")


def _create_answers_500(fake: FakeOllama) -> None:
    fake.fail_next("/api/create", status=500, error="create: llama runner out of memory")


def _create_streams_an_error(fake: FakeOllama) -> None:
    fake.fail_create("converting model: unsupported tensor dtype")


def _generate_fails(fake: FakeOllama) -> None:
    fake.fail_next("/api/generate", status=500, error="llama runner process has terminated")


def _show_fails(fake: FakeOllama) -> None:
    fake.fail_next("/api/show", status=500, error="read manifest: i/o error")


@pytest.mark.parametrize(
    ("inject", "server_words"),
    [
        (_blob_upload_fails, "write blob: no space left"),
        (_create_answers_500, "create: llama runner out of memory"),
        (_create_streams_an_error, "converting model: unsupported tensor dtype"),
        (_show_fails, "read manifest: i/o error"),
        (_generate_fails, "llama runner process has terminated"),
    ],
)
def test_a_failed_publish_leaves_latest_on_the_old_version(
    fake: FakeOllama,
    publisher: OllamaPublisher,
    schema: ChatSchema,
    tmp_path: Path,
    inject: Callable[[FakeOllama], None],
    server_words: str,
) -> None:
    _publish_full(publisher, schema, write_full_model(tmp_path / "r1", seed=1), 1)
    publisher.activate("alice", 1)
    latest = fake.model("personad-alice:latest").digest

    inject(fake)
    with pytest.raises(PublishError) as failure:
        _publish_full(publisher, schema, write_full_model(tmp_path / "r2", seed=2), 2)

    assert server_words in str(failure.value)
    assert failure.value.server_error == server_words
    assert fake.model("personad-alice:latest").digest == latest
    assert publisher.active_version("alice") == 1
    # No half-published version stays behind: a retry starts clean.
    assert "personad-alice:v2" not in fake.model_names()
    _publish_full(publisher, schema, write_full_model(tmp_path / "r2", seed=2), 2)
    assert publisher.versions("alice") == [1, 2]


def test_a_failed_copy_leaves_latest_on_the_old_version(
    fake: FakeOllama, publisher: OllamaPublisher, schema: ChatSchema, tmp_path: Path
) -> None:
    for n in (1, 2):
        _publish_full(publisher, schema, write_full_model(tmp_path / f"r{n}", seed=n), n)
    publisher.activate("alice", 1)
    fake.fail_next("/api/copy", status=500, error="rename manifest: permission denied")

    with pytest.raises(PublishError, match="rename manifest: permission denied") as failure:
        publisher.activate("alice", 2)
    assert failure.value.status == 500
    assert "personad-alice:latest is unchanged" in str(failure.value)
    assert fake.model("personad-alice:latest").digest == fake.model("personad-alice:v1").digest
    assert publisher.active_version("alice") == 1


def test_a_first_activation_that_fails_leaves_no_latest(
    fake: FakeOllama, publisher: OllamaPublisher, schema: ChatSchema, tmp_path: Path
) -> None:
    _publish_full(publisher, schema, write_full_model(tmp_path / "r1"), 1)
    fake.fail_next("/api/copy", status=500, error="disk quota exceeded")
    with pytest.raises(PublishError, match="disk quota exceeded"):
        publisher.activate("alice", 1)
    assert "personad-alice:latest" not in fake.model_names()
    assert publisher.active_version("alice") is None


def test_a_digest_mismatch_after_the_copy_restores_the_old_version(
    fake: FakeOllama, publisher: OllamaPublisher, schema: ChatSchema, tmp_path: Path
) -> None:
    for n in (1, 2):
        _publish_full(publisher, schema, write_full_model(tmp_path / f"r{n}", seed=n), n)
    publisher.activate("alice", 1)
    fake.add_model("intruder")
    listings_before = len(fake.requests_for("/api/tags"))

    # Another writer repoints :latest after our copy, while the activation's second
    # listing (the one that reads the digests back) waits in the server: the listings
    # are slowed down to leave it room.
    def intrude() -> None:
        deadline = time.monotonic() + 10
        while len(fake.requests_for("/api/tags")) < listings_before + 2:
            if time.monotonic() > deadline:
                return
            time.sleep(0.002)
        ollama.Client(host=fake.url).copy("intruder", "personad-alice:latest")

    fake.delay_next("/api/tags", 0.6, times=2)
    intruder = threading.Thread(target=intrude)
    intruder.start()
    try:
        with pytest.raises(PublishError) as failure:
            publisher.activate("alice", 2)
    finally:
        intruder.join()

    message = str(failure.value)
    assert "personad-alice:latest has digest" in message
    assert fake.model("intruder").digest in message
    assert "restored to personad-alice:v1" in message
    assert fake.model("personad-alice:latest").digest == fake.model("personad-alice:v1").digest
    assert publisher.active_version("alice") == 1


def test_an_unreachable_server_says_to_start_ollama(
    publisher: OllamaPublisher, schema: ChatSchema, tmp_path: Path
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    host = f"http://127.0.0.1:{port}"
    with OllamaPublisher(host, "personad", timeout=5) as nowhere:
        with pytest.raises(PublishError, match=r"is `ollama serve` running at http://127"):
            nowhere.check()
        with pytest.raises(PublishError, match="cannot reach Ollama"):
            nowhere.publish(
                "alice", 1, write_full_model(tmp_path / "m"), kind="full", schema=schema
            )


def test_check_reports_the_version_and_refuses_an_old_server(
    fake: FakeOllama, publisher: OllamaPublisher, schema: ChatSchema, tmp_path: Path
) -> None:
    assert publisher.check() == fake.version
    fake.set_version("0.5.4")
    with pytest.raises(PublishError, match=r"Ollama 0.5.4 .* too old: publishing needs 0.5.5"):
        publisher.check()
    with pytest.raises(PublishError, match="too old"):
        _publish_full(publisher, schema, write_full_model(tmp_path / "m"), 1)
    assert not fake.requests_for("/api/blobs")
    assert not fake.requests_for("/api/create")
    fake.set_version("0.5.5")
    assert publisher.check() == "0.5.5"


def test_an_adapter_is_created_on_a_shared_base_model(
    fake: FakeOllama, publisher: OllamaPublisher, schema: ChatSchema, tmp_path: Path
) -> None:
    base = write_full_model(tmp_path / "base", architecture="LlamaForCausalLM")
    for n in (1, 2):
        adapter = write_adapter(tmp_path / f"run{n}" / "adapter", seed=n)
        published = publisher.publish(
            "alice", n, adapter, kind="lora", base_model_dir=base, schema=schema
        )
        assert published.name == f"personad-alice:v{n}"

    creates = [r.json for r in fake.requests_for("/api/create")]
    base_creates = [c for c in creates if c["model"].startswith("personad-base:")]
    assert len(base_creates) == 1  # made once, shared by later versions
    base_name = base_creates[0]["model"]
    assert "config.json" in base_creates[0]["files"]
    assert base_creates[0]["quantize"] == "q8_0"
    version_creates = [c for c in creates if c["model"].startswith("personad-alice:")]
    assert [c["from"] for c in version_creates] == [base_name, base_name]
    for c in version_creates:
        assert sorted(c["adapters"]) == ["adapter_config.json", "adapter_model.safetensors"]
        assert c["template"] == schema.ollama_template
        assert "files" not in c
    v1 = fake.model("personad-alice:v1")
    assert v1.parent_model == base_name
    assert published.modelfile.splitlines()[1:3] == [
        f"FROM {base}",
        f"ADAPTER {tmp_path / 'run2' / 'adapter'}",
    ]


def test_an_adapter_on_a_model_installed_in_ollama_is_created_from_it(
    fake: FakeOllama, publisher: OllamaPublisher, schema: ChatSchema, tmp_path: Path
) -> None:
    """A LoRA trained on an ``ollama:NAME`` base: FROM NAME plus the adapter, the user's
    installed model reused as it is (nothing of the base uploaded, no shared base made)."""
    installed = "llama3.1:8b-instruct-q4_K_M"
    fake.add_model(installed, family="llama", quantization_level="Q4_K_M")
    adapter = write_adapter(tmp_path / "run" / "adapter")
    published = publisher.publish(
        "alice", 1, adapter, kind="lora", from_model=installed, schema=schema
    )
    (create,) = [r.json for r in fake.requests_for("/api/create")]
    assert (create["model"], create["from"]) == ("personad-alice:v1", installed)
    assert sorted(create["adapters"]) == ["adapter_config.json", "adapter_model.safetensors"]
    assert "files" not in create and create["template"] == schema.ollama_template
    assert len(_blob_posts(fake)) == 2  # the adapter's two files only
    assert not [n for n in fake.model_names() if n.startswith("personad-base")]
    assert fake.model("personad-alice:v1").parent_model == installed
    assert fake.model("personad-alice:v1").quantization_level == "Q4_K_M"
    assert published.modelfile.splitlines()[1:3] == [f"FROM {installed}", f"ADAPTER {adapter}"]

    fake.add_model("qwen2.5:7b", family="qwen2")
    with pytest.raises(PublishError, match=r"cannot apply a LoRA adapter to qwen2\.5:7b, a qwen2"):
        publisher.publish("alice", 2, adapter, kind="lora", from_model="qwen2.5:7b", schema=schema)
    with pytest.raises(PublishError, match="not found"):
        publisher.publish("alice", 2, adapter, kind="lora", from_model="gone:1b", schema=schema)
    assert len(fake.requests_for("/api/create")) == 1 and len(_blob_posts(fake)) == 2


@pytest.mark.parametrize("arch", ["Qwen2ForCausalLM", "Phi3ForCausalLM", "GemmaForCausalLM"])
def test_an_adapter_ollama_cannot_convert_asks_for_a_merged_model(
    fake: FakeOllama, publisher: OllamaPublisher, schema: ChatSchema, tmp_path: Path, arch: str
) -> None:
    base = write_full_model(tmp_path / "base", architecture=arch)
    adapter = write_adapter(tmp_path / "run" / "adapter")
    with pytest.raises(PublishError, match=f"{arch} base model.*merge the adapter") as failure:
        publisher.publish("alice", 1, adapter, kind="lora", base_model_dir=base, schema=schema)
    assert "kind='full'" in str(failure.value)
    assert not fake.requests_for("/api/blobs")
    assert not fake.requests_for("/api/create")
    # The merged model then publishes.
    merged = write_full_model(tmp_path / "run" / "model", architecture=arch)
    publisher.publish("alice", 1, merged, kind="full", schema=schema)
    assert fake.model("personad-alice:v1").template == schema.ollama_template


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        ("alice", "personad-alice:v1"),
        ("Alice Smith", "personad-alice-smith:v1"),
        ("Zoë", "personad-zoe:v1"),
        ("team/ops#2", "personad-team-ops-2:v1"),
        ("__x__", "personad-x:v1"),
        ("a.b_c-d", "personad-a.b_c-d:v1"),
    ],
)
def test_profile_names_become_valid_ollama_names(
    fake: FakeOllama,
    publisher: OllamaPublisher,
    schema: ChatSchema,
    tmp_path: Path,
    profile: str,
    expected: str,
) -> None:
    assert publisher.name(profile, 1) == expected
    assert valid_name(expected)
    published = publisher.publish(
        profile, 1, write_full_model(tmp_path / "m"), kind="full", schema=schema
    )
    assert published.name == expected
    publisher.activate(profile, 1)
    assert publisher.active_version(profile) == 1
    assert expected.replace(":v1", ":latest") in fake.model_names()


@pytest.mark.parametrize("profile", ["", "!!!", "---", "日本"])
def test_a_profile_with_nothing_usable_is_refused(publisher: OllamaPublisher, profile: str) -> None:
    with pytest.raises(PublishError, match="no letters or digits"):
        publisher.name(profile, 1)


def test_an_overlong_name_is_refused(publisher: OllamaPublisher) -> None:
    publisher.name("a" * 71, 1)  # personad- (9) + 71 = 80
    with pytest.raises(PublishError, match="longer than 80"):
        publisher.name("a" * 72, 1)


def test_delete_prune_and_the_active_version(
    fake: FakeOllama, publisher: OllamaPublisher, schema: ChatSchema, tmp_path: Path
) -> None:
    for n in range(1, 6):
        _publish_full(publisher, schema, write_full_model(tmp_path / f"m{n}", seed=n), n)
    publisher.activate("alice", 1)
    with pytest.raises(PublishError, match="active version"):
        publisher.delete("alice", 1)

    assert publisher.prune("alice", keep=2) == [2, 3]
    assert publisher.versions("alice") == [1, 4, 5]
    names = fake.model_names()
    assert "personad-alice:v2" not in names and "personad-alice:latest" in names
    assert publisher.delete("alice", 4) is True
    assert publisher.delete("alice", 4) is False
    assert publisher.versions("alice") == [1, 5]

"""The fake Ollama server, driven by the real ``ollama`` client for every endpoint."""

from __future__ import annotations

import hashlib
import json
import math
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import pytest

from tests.fakes.ollama_server import (
    ERR_NEITHER_FROM_OR_FILES,
    ERR_ONLY_ONE_ADAPTER,
    FakeOllama,
    Generation,
    OllamaError,
    hash_embedding,
    iter_lines,
    parse_keep_alive,
)


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama(
        models={
            "smollm2:135m": {"parameters": {"stop": ["<|im_end|>"], "temperature": 0.7}},
            "nomic-embed-text": {"capabilities": ["embedding"], "embedding_length": 48},
        }
    ) as server:
        yield server


@pytest.fixture
def client(fake: FakeOllama) -> Iterator[ollama.Client]:
    c = ollama.Client(host=fake.url, timeout=10)
    yield c
    c.close()


def write_gguf(path: Path, arch: str = "llama") -> Path:
    """A minimal but valid GGUF file (no tensors) naming its architecture."""
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), arch)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_safetensors(path: Path) -> Path:
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\x00" * 8)
    return path


def upload(client: ollama.Client, path: Path) -> str:
    return client.create_blob(path)


# -- basics ---------------------------------------------------------------------


def test_root_version_and_url(fake: FakeOllama, client: ollama.Client) -> None:
    assert fake.url.startswith("http://127.0.0.1:")
    raw = client._client  # the client has no version() method; its httpx client does
    assert raw.get("/").text == "Ollama is running"
    assert raw.get("/api/version").json() == {"version": "0.12.6"}
    fake.set_version("0.5.1")
    assert raw.get("/api/version").json() == {"version": "0.5.1"}


def test_unknown_route_is_404_text(client: ollama.Client) -> None:
    r = client._client.get("/api/nothing")
    assert r.status_code == 404
    assert r.text == "404 page not found"


def test_list_shows_models_with_digests(client: ollama.Client, fake: FakeOllama) -> None:
    listing = client.list()
    names = {m.model for m in listing.models}
    assert names == {"smollm2:135m", "nomic-embed-text:latest"}
    for m in listing.models:
        assert m.digest is not None and len(m.digest) == 64
        assert m.digest == fake.model(m.model or "").digest
        assert m.details is not None and m.details.family == "llama"
        assert m.modified_at is not None and m.size


def test_show(client: ollama.Client) -> None:
    shown = client.show("smollm2:135m")
    assert shown.template == "{{ .Prompt }}"
    assert shown.capabilities == ["completion"]
    assert shown.details is not None and shown.details.quantization_level == "Q8_0"
    assert shown.modelinfo is not None and shown.modelinfo["general.architecture"] == "llama"
    assert shown.parameters is not None
    lines = shown.parameters.splitlines()
    assert any(line.startswith("stop") and '"<|im_end|>"' in line for line in lines)
    assert any(line.startswith("temperature") and line.endswith("0.7") for line in lines)
    assert shown.modelfile is not None and "TEMPLATE" in shown.modelfile


def test_show_unknown_model(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        client.show("ghost")
    assert err.value.status_code == 404
    assert err.value.error == "model 'ghost' not found"


# -- embed ----------------------------------------------------------------------


def test_embed_is_deterministic_and_normalised(client: ollama.Client) -> None:
    res = client.embed(model="nomic-embed-text", input=["alpha", "beta", "alpha"])
    vectors = [list(v) for v in res.embeddings]
    assert len(vectors) == 3 and all(len(v) == 48 for v in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    assert vectors[0] == pytest.approx(hash_embedding("alpha", 48))
    for v in vectors:
        assert math.isclose(math.fsum(x * x for x in v), 1.0, rel_tol=1e-9)
    assert res.model == "nomic-embed-text:latest"


def test_embed_single_string_and_dimensions(client: ollama.Client) -> None:
    res = client.embed(model="nomic-embed-text", input="alpha", dimensions=8)
    assert len(res.embeddings) == 1 and len(res.embeddings[0]) == 8
    assert math.isclose(math.fsum(x * x for x in res.embeddings[0]), 1.0, rel_tol=1e-9)


def test_embed_with_a_caller_function() -> None:
    with FakeOllama(models=["e"], embed_fn=lambda model, text: [len(text), 0.0, 0.0]) as fake:
        res = ollama.Client(host=fake.url).embed(model="e", input=["abc"])
    assert list(res.embeddings[0]) == [1.0, 0.0, 0.0]


def test_embed_unknown_model_is_404(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        client.embed(model="x", input=["hi"])
    assert err.value.status_code == 404
    assert err.value.error == 'model "x" not found, try pulling it first'


def test_embed_records_requests(client: ollama.Client, fake: FakeOllama) -> None:
    client.embed(model="nomic-embed-text", input=["a", "b"])
    (req,) = fake.requests_for("/api/embed")
    assert req.method == "POST"
    assert req.json == {"model": "nomic-embed-text", "input": ["a", "b"]}
    assert req.headers["content-type"] == "application/json"


def test_legacy_embeddings_endpoint(client: ollama.Client) -> None:
    res = client.embeddings(model="nomic-embed-text", prompt="alpha")
    assert list(res.embedding) == pytest.approx(hash_embedding("alpha", 48))


# -- generate / chat / ps ----------------------------------------------------------


def test_generate_not_streaming(client: ollama.Client) -> None:
    res = client.generate(model="smollm2:135m", prompt="How are you today?")
    assert res.done and res.done_reason == "stop"
    assert res.response and "How are you today?" in res.response
    again = client.generate(model="smollm2:135m", prompt="How are you today?")
    assert again.response == res.response


def test_generate_streams_ndjson(client: ollama.Client, fake: FakeOllama) -> None:
    parts = list(client.generate(model="smollm2:135m", prompt="tell me", stream=True))
    assert len(parts) > 2
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    whole = client.generate(model="smollm2:135m", prompt="tell me").response
    assert "".join(p.response or "" for p in parts) == whole
    # On the wire: chunked NDJSON, and streaming is the default when "stream" is absent.
    r = client._client.post("/api/generate", json={"model": "smollm2:135m", "prompt": "x"})
    assert r.headers["content-type"] == "application/x-ndjson"
    lines = list(iter_lines(r.text))
    assert lines[-1]["done"] is True and all(not line["done"] for line in lines[:-1])


def test_generate_options(fake: FakeOllama) -> None:
    fake.generate_fn = lambda model, prompt: "one two three STOP four five"
    client = ollama.Client(host=fake.url)
    assert (
        client.generate(model="smollm2:135m", prompt="p").response == "one two three STOP four five"
    )
    res = client.generate(model="smollm2:135m", prompt="p", options={"stop": ["STOP"]})
    assert res.response == "one two three "
    res = client.generate(model="smollm2:135m", prompt="p", options={"num_predict": 2})
    assert res.response == "one two " and res.done_reason == "length"


def test_chat_streaming_and_not(client: ollama.Client) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "What is your name?"},
    ]
    res = client.chat(model="smollm2:135m", messages=messages)
    assert res.message.role == "assistant"
    assert res.message.content and "What is your name?" in res.message.content
    parts = list(client.chat(model="smollm2:135m", messages=messages, stream=True))
    assert "".join(p.message.content or "" for p in parts) == res.message.content
    assert parts[-1].done and parts[-1].done_reason == "stop"


def test_a_reply_policy_answers_chat_and_generate(client: ollama.Client, fake: FakeOllama) -> None:
    seen: list[Generation] = []

    def policy(request: Generation) -> str:
        seen.append(request)
        if "boom" in request.user:
            raise OllamaError("the policy refused", 503)
        return json.dumps({"score": len(request.user)}) + " trailing words STOP never"

    fake.set_reply(policy)
    messages = [
        {"role": "system", "content": "judge"},
        {"role": "user", "content": "abcd"},
    ]
    res = client.chat(
        model="smollm2:135m",
        messages=messages,
        format="json",
        options={"temperature": 0, "stop": ["STOP"]},
    )
    # The policy's text as the model wrote it (format does not wrap it), cut at the stop.
    assert res.message.content == '{"score": 4} trailing words '
    assert res.done_reason == "stop"
    streamed = list(client.chat(model="smollm2:135m", messages=messages, stream=True))
    assert len(streamed) > 2 and streamed[-1].done
    assert "".join(p.message.content or "" for p in streamed).startswith('{"score": 4}')
    got = client.generate(
        model="smollm2:135m", prompt="xy", system="sys", options={"num_predict": 1}
    )
    assert got.response == '{"score": ' and got.done_reason == "length"

    assert [r.endpoint for r in seen] == ["chat", "chat", "generate"]
    assert seen[0].model == "smollm2:135m" and seen[0].system == "judge"
    assert seen[0].messages == messages and seen[0].format == "json"
    assert seen[0].options == {"temperature": 0, "stop": ["STOP"]}
    assert seen[2].messages == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "xy"},
    ]
    assert fake.generations() == seen  # what was asked, read back from the requests

    # A policy's error is the server's: its status and {"error": ...}, streaming or not.
    boom = [{"role": "user", "content": "boom"}]
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="smollm2:135m", messages=boom)
    assert err.value.status_code == 503 and err.value.error == "the policy refused"
    with pytest.raises(ollama.ResponseError) as err:
        list(client.chat(model="smollm2:135m", messages=boom, stream=True))
    assert err.value.status_code == 503 and err.value.error == "the policy refused"
    r = client._client.post("/api/chat", json={"model": "smollm2:135m", "messages": boom})
    assert r.status_code == 503 and r.json() == {"error": "the policy refused"}

    # A model the server lacks is a 404 before any policy runs.
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="judge", messages=messages)
    assert err.value.status_code == 404
    assert err.value.error == 'model "judge" not found, try pulling it first'
    assert len(seen) == 6  # three answers, three refusals; none for the missing model
    fake.set_reply(None)
    assert "abcd" in (client.chat(model="smollm2:135m", messages=messages).message.content or "")


def test_generate_unknown_model_and_embedding_only_model(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model="ghost", prompt="hi")
    assert err.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model="nomic-embed-text", prompt="hi")
    assert err.value.status_code == 400
    assert "does not support generate" in err.value.error


def test_ps_load_and_unload(client: ollama.Client, fake: FakeOllama) -> None:
    assert client.ps().models == []
    loaded = client.generate(model="smollm2:135m", prompt="")
    assert loaded.done_reason == "load"
    (running,) = client.ps().models
    assert running.model == "smollm2:135m"
    assert running.digest == fake.model("smollm2:135m").digest
    assert running.expires_at is not None
    unloaded = client.generate(model="smollm2:135m", keep_alive=0)
    assert unloaded.done and unloaded.done_reason == "unload"
    assert client.ps().models == []
    client.chat(model="smollm2:135m", messages=[{"role": "user", "content": "hi"}], keep_alive="1h")
    assert fake.loaded_models() == ["smollm2:135m"]


def test_keep_alive_parsing() -> None:
    assert parse_keep_alive(None) == 300
    assert parse_keep_alive(0) == 0
    assert parse_keep_alive("0") == 0
    assert parse_keep_alive("1h30m") == 5400
    assert parse_keep_alive(-1) is None
    assert parse_keep_alive("-1m") is None
    with pytest.raises(ValueError):
        parse_keep_alive("soon")


# -- blobs --------------------------------------------------------------------------


def test_blob_upload_head_and_mismatch(
    client: ollama.Client, fake: FakeOllama, tmp_path: Path
) -> None:
    data = b"GGUF" + bytes(range(256)) * 40  # large enough for a chunked upload
    path = tmp_path / "w.gguf"
    path.write_bytes(data)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    raw = client._client
    assert raw.head(f"/api/blobs/{digest}").status_code == 404
    assert client.create_blob(path) == digest
    assert fake.has_blob(digest) and fake.blob(digest) == data
    assert raw.head(f"/api/blobs/{digest}").status_code == 200
    # Uploading a present blob again: 200 (the real server does not re-read it).
    assert raw.post(f"/api/blobs/{digest}", content=data).status_code == 200
    other = "sha256:" + "0" * 64
    r = raw.post(f"/api/blobs/{other}", content=b"not this")
    assert r.status_code == 400 and r.json()["error"].startswith("digest mismatch")
    assert not fake.has_blob(other)
    r = raw.post("/api/blobs/sha256:abc", content=b"x")
    assert r.status_code == 400 and r.json() == {"error": "invalid digest format"}
    fresh = b"fresh"
    fresh_digest = "sha256:" + hashlib.sha256(fresh).hexdigest()
    assert raw.post(f"/api/blobs/{fresh_digest}", content=fresh).status_code == 201


# -- create / copy / delete -----------------------------------------------------------


def test_create_from_gguf_streams_status_lines(
    client: ollama.Client, fake: FakeOllama, tmp_path: Path
) -> None:
    digest = upload(client, write_gguf(tmp_path / "m.gguf", arch="qwen2"))
    parts = list(
        client.create(
            model="alice:v1",
            files={"model.gguf": digest},
            template="{{ .Prompt }}",
            system="You are Alice.",
            parameters={"stop": ["<|im_end|>"], "temperature": 0.2},
            stream=True,
        )
    )
    statuses = [p.status for p in parts]
    assert statuses[0] == "parsing GGUF"
    assert f"using existing layer {digest}" in statuses
    assert any(s and s.startswith("creating new layer sha256:") for s in statuses)
    assert statuses[-2:] == ["writing manifest", "success"]
    model = fake.model("alice:v1")
    assert model.family == "qwen2"
    assert model.system == "You are Alice." and model.parameters["temperature"] == 0.2
    shown = client.show("alice:v1")
    assert shown.template == "{{ .Prompt }}"
    assert shown.details is not None and shown.details.family == "qwen2"
    # The request carried the client's fields, "from" spelt as on the wire.
    (req,) = fake.requests_for("/api/create")
    assert req.json["files"] == {"model.gguf": digest} and req.json["stream"] is True


def test_create_not_streaming_returns_success(client: ollama.Client, tmp_path: Path) -> None:
    digest = upload(client, write_gguf(tmp_path / "m.gguf"))
    res = client.create(model="bob", files={"m.gguf": digest})
    assert res.status == "success"
    assert "bob:latest" in {m.model for m in client.list().models}


def test_create_from_model_inherits_and_overrides(client: ollama.Client, fake: FakeOllama) -> None:
    client.create(
        model="alice:v2", from_="smollm2:135m", system="Be Alice.", parameters={"temperature": 0.1}
    )
    base, derived = fake.model("smollm2:135m"), fake.model("alice:v2")
    assert derived.parameters == {"stop": ["<|im_end|>"], "temperature": 0.1}
    assert derived.template == base.template and derived.system == "Be Alice."
    assert derived.layer("application/vnd.ollama.image.model") == base.layer(
        "application/vnd.ollama.image.model"
    )
    assert derived.digest != base.digest
    (req,) = fake.requests_for("/api/create")
    assert req.json["from"] == "smollm2:135m" and "from_" not in req.json


def test_create_is_deterministic_in_content(client: ollama.Client, fake: FakeOllama) -> None:
    client.create(model="a:v1", from_="smollm2:135m", system="same")
    client.create(model="b:v1", from_="smollm2:135m", system="same")
    client.create(model="c:v1", from_="smollm2:135m", system="different")
    assert fake.model("a:v1").digest == fake.model("b:v1").digest != fake.model("c:v1").digest


def test_create_from_safetensors_and_adapter(
    client: ollama.Client, fake: FakeOllama, tmp_path: Path
) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    files = {
        "config.json": upload(client, tmp_path / "config.json"),
        "model.safetensors": upload(client, write_safetensors(tmp_path / "model.safetensors")),
    }
    parts = list(client.create(model="full:v1", files=files, stream=True))
    assert parts[0].status == "converting model" and parts[-1].status == "success"
    assert fake.model("full:v1").family == "llama"

    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16}))
    adapters = {
        "adapter_config.json": upload(client, tmp_path / "adapter_config.json"),
        "adapter_model.safetensors": upload(
            client, write_safetensors(tmp_path / "adapter_model.safetensors")
        ),
    }
    res = client.create(model="lora:v1", from_="full:v1", adapters=adapters)
    assert res.status == "success"
    assert fake.model("lora:v1").layer("application/vnd.ollama.image.adapter") is not None


def test_create_quantize(client: ollama.Client, fake: FakeOllama, tmp_path: Path) -> None:
    digest = upload(client, write_gguf(tmp_path / "m.gguf"))
    parts = list(client.create(model="q", files={"m.gguf": digest}, quantize="q4_K_M", stream=True))
    assert "quantizing F16 model to Q4_K_M" in [p.status for p in parts]
    assert fake.model("q").quantization_level == "Q4_K_M"
    with pytest.raises(ollama.ResponseError) as err:
        client.create(model="q2", from_="q", quantize="q8_0")
    assert err.value.status_code == 500 and "only supported for F16 and F32" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        client.create(model="q3", files={"m.gguf": digest}, quantize="q7_X")
    assert err.value.status_code == 400


def test_create_errors(client: ollama.Client, fake: FakeOllama, tmp_path: Path) -> None:
    missing = "sha256:" + "1" * 64
    with pytest.raises(ollama.ResponseError) as err:
        client.create(model="m", files={"model.gguf": missing})
    assert err.value.status_code == 400 and "not found" in err.value.error
    # Streaming: the error arrives as a line (the client raises it, without a code).
    with pytest.raises(ollama.ResponseError) as err:
        list(client.create(model="m", files={"model.gguf": missing}, stream=True))
    assert "not found" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        client.create(model="m")
    assert err.value.status_code == 400 and err.value.error == ERR_NEITHER_FROM_OR_FILES
    with pytest.raises(ollama.ResponseError) as err:
        client.create(model="m", from_="not-here")
    assert err.value.status_code == 500 and "registry.ollama.ai" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        client.create(model="bad name!", from_="smollm2:135m")
    assert err.value.status_code == 400 and err.value.error == "invalid model name"
    with pytest.raises(ollama.ResponseError) as err:
        client.create(model="m", from_="smollm2:135m", template="{{ .Prompt ")
    assert err.value.status_code == 400 and err.value.error.startswith("template error")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOPE" * 10)
    with pytest.raises(ollama.ResponseError) as err:
        client.create(model="m", files={"bad.gguf": upload(client, bad)})
    assert err.value.error == "invalid file magic"
    one = upload(client, write_gguf(tmp_path / "a.gguf"))
    two = upload(client, write_gguf(tmp_path / "b.gguf", arch="phi3"))
    with pytest.raises(ollama.ResponseError) as err:
        client.create(model="m", from_="smollm2:135m", adapters={"a.gguf": one, "b.gguf": two})
    assert err.value.status_code == 400 and err.value.error == ERR_ONLY_ONE_ADAPTER
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPTJForCausalLM"]}))
    files = {
        "config.json": upload(client, tmp_path / "config.json"),
        "model.safetensors": upload(client, write_safetensors(tmp_path / "model.safetensors")),
    }
    with pytest.raises(ollama.ResponseError) as err:
        client.create(model="m", files=files)
    assert err.value.error == 'unsupported architecture "GPTJForCausalLM"'
    assert "m:latest" not in fake.model_names()


def test_copy_keeps_the_digest(client: ollama.Client, fake: FakeOllama) -> None:
    client.create(model="alice:v1", from_="smollm2:135m", system="v1")
    assert client.copy("alice:v1", "alice:latest").status == "success"
    digests = {m.model: m.digest for m in client.list().models}
    assert digests["alice:latest"] == digests["alice:v1"]
    # Re-pointing the alias: a copy over an existing name replaces it.
    client.create(model="alice:v2", from_="smollm2:135m", system="v2")
    client.copy("alice:v2", "alice")
    digests = {m.model: m.digest for m in client.list().models}
    assert digests["alice:latest"] == digests["alice:v2"] != digests["alice:v1"]
    assert fake.model("alice").system == "v2"
    assert 'SYSTEM """v2"""' in (client.show("alice").modelfile or "")
    with pytest.raises(ollama.ResponseError) as err:
        client.copy("ghost", "x")
    assert err.value.status_code == 404


def test_delete(client: ollama.Client, fake: FakeOllama) -> None:
    client.create(model="alice:v1", from_="smollm2:135m", system="v1")
    system_layer = fake.model("alice:v1").layer("application/vnd.ollama.image.system")
    assert system_layer is not None and fake.has_blob(system_layer.digest)
    assert client.delete("alice:v1").status == "success"
    assert "alice:v1" not in fake.model_names()
    assert not fake.has_blob(system_layer.digest)  # its own layers go with it
    assert fake.model("smollm2:135m")  # the base is untouched
    with pytest.raises(ollama.ResponseError) as err:
        client.delete("alice:v1")
    assert err.value.status_code == 404
    first, _ = fake.requests_for("/api/delete")
    assert first.method == "DELETE" and first.json == {"model": "alice:v1"}


def test_pull_and_push_fail_offline(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        client.pull("llama3")
    assert err.value.status_code == 500 and "registry.ollama.ai" in err.value.error
    with pytest.raises(ollama.ResponseError):
        list(client.pull("llama3", stream=True))
    with pytest.raises(ollama.ResponseError):
        client.push("smollm2:135m")


# -- faults ---------------------------------------------------------------------------


def test_fail_next(client: ollama.Client, fake: FakeOllama) -> None:
    fake.fail_next("/api/embed", times=2, status=500, error="boom")
    for _ in range(2):
        with pytest.raises(ollama.ResponseError) as err:
            client.embed(model="nomic-embed-text", input=["a"])
        assert err.value.status_code == 500 and err.value.error == "boom"
    assert client.embed(model="nomic-embed-text", input=["a"]).embeddings
    fake.fail_next("/api/blobs", status=503, error="busy")
    r = client._client.head("/api/blobs/sha256:" + "0" * 64)
    assert r.status_code == 503
    assert len(fake.requests_for("/api/embed")) == 3


def test_fail_create(client: ollama.Client, fake: FakeOllama) -> None:
    fake.fail_create("disk full")
    with pytest.raises(ollama.ResponseError) as err:
        list(client.create(model="alice:v1", from_="smollm2:135m", stream=True))
    assert err.value.error == "disk full"
    assert "alice:v1" not in fake.model_names()
    fake.fail_create("disk full")
    with pytest.raises(ollama.ResponseError) as err:
        client.create(model="alice:v1", from_="smollm2:135m")
    assert err.value.status_code == 500
    assert client.create(model="alice:v1", from_="smollm2:135m").status == "success"


def test_delay_next_makes_a_timeout(fake: FakeOllama) -> None:
    fake.delay_next("/api/embed", 1.0)
    client = ollama.Client(host=fake.url, timeout=0.2)
    with pytest.raises(httpx.TimeoutException):
        client.embed(model="nomic-embed-text", input=["a"])


def test_concurrent_requests(fake: FakeOllama) -> None:
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            c = ollama.Client(host=fake.url)
            for j in range(5):
                c.embed(model="nomic-embed-text", input=[f"{i}-{j}"])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(fake.requests_for("/api/embed")) == 40


def test_stop_frees_the_port() -> None:
    fake = FakeOllama().start()
    url = fake.url
    fake.stop()
    with pytest.raises(ConnectionError):
        ollama.Client(host=url).list()

"""``ollama:NAME`` base models: the GGUF of a model installed in Ollama, found through its API
and its blob store (the fake server keeps a real store layout), converted once."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from services.settings import load_settings
from services.training import base_model
from services.training.base_model import (
    SOURCE_FILE,
    embedded_path,
    parse_spec,
    resolve_base_model,
)
from services.training.errors import BadInputError
from services.training.model_shape import model_shape
from services.training.modelinfo import count_parameters
from services.training.ollama_base import ModelName, OllamaBase, ollama_base, parse_name
from tests.fakes.ollama_server import FakeOllama
from tests.services.ollama_names import NAME, SPEC


def _model_layer(fake: FakeOllama, name: str) -> dict[str, object]:
    manifest = json.loads(fake.manifest_path(name).read_text())
    return next(la for la in manifest["layers"] if la["mediaType"].endswith(".model"))


def test_names_take_ollamas_defaults() -> None:
    default = ModelName("registry.ollama.ai", "library", "llama3.1", "latest")
    assert parse_name("llama3.1") == default
    assert parse_name("llama3.1:8b-instruct-q4_K_M").tag == "8b-instruct-q4_K_M"
    assert parse_name("me/mine:v1").parts == ("registry.ollama.ai", "me", "mine", "v1")
    other = ("example.com:5000", "me", "mine", "latest")
    assert parse_name("example.com:5000/me/mine").parts == other
    assert parse_name("me/mine:v1").short == "me/mine:v1"
    with pytest.raises(BadInputError, match="not an Ollama model name"):
        parse_name("a/b/c/d")


def test_an_installed_model_resolves_to_its_gguf_blob_with_a_low_bit_warning(
    ollama_smollm2: FakeOllama,
) -> None:
    layer = _model_layer(ollama_smollm2, NAME)
    base = ollama_base(SPEC)
    assert f"sha256:{base.digest}" == layer["digest"]
    assert base.blob == ollama_smollm2.models_dir / "blobs" / f"sha256-{base.digest}"
    assert base.blob.samefile(embedded_path("smollm2"))
    assert base.models_dir == ollama_smollm2.models_dir  # from the Modelfile's FROM line
    assert (base.quantization, base.architecture) == ("Q4_1", "llama")
    assert base.warning is not None
    assert "a dequantized 4-bit base trains worse than the original weights" in base.warning
    assert "name the original hub model for best results" in base.warning
    assert ollama_smollm2.requests_for("/api/show")  # asked through the API

    parsed = parse_spec(SPEC)
    assert (parsed.kind, parsed.location) == ("gguf", str(base.blob))
    # shaped from the GGUF's header (SmolLM2-135M: 30 layers of 576), loading no weights
    shape = model_shape(base.blob)
    assert (shape.layers, shape.hidden, shape.vocab) == (30, 576, 49152)


def test_a_name_without_a_tag_means_latest_and_q8_has_no_warning(
    ollama_smollm2: FakeOllama,
) -> None:
    ollama_smollm2.add_model(
        "smol", weights_file=embedded_path("smollm2"), quantization_level="Q8_0"
    )
    base = ollama_base("ollama:smol")
    assert base.name.tag == "latest"
    assert ollama_smollm2.manifest_path("smol").parts[-4:] == (
        "registry.ollama.ai",
        "library",
        "smol",
        "latest",
    )
    assert base.warning is None


@pytest.mark.parametrize(
    ("level", "warned"),
    [
        *[(level, True) for level in ("Q4_K_M", "Q4_0", "Q3_K_S", "Q2_K", "IQ4_XS", "MXFP4")],
        *[(level, False) for level in ("Q5_K_M", "Q6_K", "Q8_0", "F16")],
    ],
)
def test_four_bits_or_fewer_are_warned_about(level: str, warned: bool) -> None:
    details = {"quantization_level": level}
    base = OllamaBase(SPEC, parse_name(NAME), "h", Path("/m"), Path("/b"), "0" * 64, 1, details)
    assert (base.warning is not None) == warned
    if warned:
        assert base.warning == (
            f"{SPEC} is quantized to {level}: a dequantized 4-bit base trains worse than the "
            "original weights; name the original hub model for best results"
        )


def test_ollama_models_and_the_setting_name_the_store(
    ollama_smollm2: FakeOllama, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store elsewhere (the server's FROM line points at a directory this machine lacks)."""
    elsewhere = tmp_path / "models"
    (ollama_smollm2.models_dir / "manifests").rename(elsewhere.parent / "manifests-moved")
    elsewhere.mkdir()
    (elsewhere.parent / "manifests-moved").rename(elsewhere / "manifests")
    (elsewhere / "blobs").symlink_to(ollama_smollm2.models_dir / "blobs")
    with pytest.raises(BadInputError) as caught:
        ollama_base(SPEC)
    message = str(caught.value)
    assert "blob store is not on this machine or not readable" in message
    assert str(ollama_smollm2.models_dir) in message and "ollama.models_dir" in message
    assert str(tmp_path / "home" / ".ollama" / "models") in message

    monkeypatch.setenv("PERSONAD_OLLAMA__MODELS_DIR", str(elsewhere))
    assert load_settings().ollama.models_dir == elsewhere
    assert ollama_base(SPEC).models_dir == elsewhere
    monkeypatch.delenv("PERSONAD_OLLAMA__MODELS_DIR")
    monkeypatch.setenv("OLLAMA_MODELS", str(elsewhere))
    assert ollama_base(SPEC).blob.parent == elsewhere / "blobs"


def test_ollama_not_running_names_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("OLLAMA_HOST", f"http://127.0.0.1:{port}")
    with pytest.raises(BadInputError, match=rf"not reachable at http://127.0.0.1:{port}"):
        parse_spec(SPEC)


def test_a_model_not_installed_says_how_to_pull_it(ollama_smollm2: FakeOllama) -> None:
    with pytest.raises(BadInputError, match=r"not installed in Ollama .*: ollama pull qwen3:8b$"):
        parse_spec("ollama:qwen3:8b")


def test_a_missing_or_truncated_blob_is_refused(ollama_smollm2: FakeOllama) -> None:
    base = ollama_base(SPEC)
    manifest_path = ollama_smollm2.manifest_path(NAME)
    manifest = json.loads(manifest_path.read_text())
    size = base.size
    for layer in manifest["layers"]:
        if layer["digest"] == f"sha256:{base.digest}":
            layer["size"] = size + 1
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(BadInputError, match=rf"has {size} bytes, its manifest says {size + 1}"):
        ollama_base(SPEC)
    base.blob.unlink()
    with pytest.raises(BadInputError, match=rf"blob {base.blob} is missing .*ollama pull {NAME}"):
        ollama_base(SPEC)


def test_an_architecture_transformers_cannot_load_is_named(ollama_smollm2: FakeOllama) -> None:
    ollama_smollm2.add_model("cmdr:35b", family="command-r", quantization_level="Q4_K_M")
    base = ollama_base("ollama:cmdr:35b")
    with pytest.raises(BadInputError, match="cannot load a GGUF of architecture 'command-r'"):
        base.checked()
    ollama_base(SPEC).checked()  # llama loads


def test_the_gguf_is_converted_once_keyed_by_its_digest(
    ollama_smollm2: FakeOllama, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_hashing(path: Path) -> str:
        raise AssertionError(f"{path} hashed again")

    monkeypatch.setattr(base_model, "file_sha256", no_hashing)
    cache = tmp_path / "base-models"
    base = ollama_base(SPEC)
    out = resolve_base_model(SPEC, cache)
    assert out == cache / f"sha256-{base.digest}-{base.digest[:12]}"
    assert [p.name for p in cache.iterdir()] == [out.name]
    source = json.loads((out / SOURCE_FILE).read_text())
    assert (source["ollama"], source["sha256"]) == (NAME, base.digest)
    assert source["details"]["quantization_level"] == "Q4_1"
    params = count_parameters(embedded_path("smollm2"))[0]
    assert count_parameters(out) == (params, "safetensors")
    stamp = (out / SOURCE_FILE).stat().st_mtime_ns

    def no_conversion(path: Path, into: Path) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(base_model, "_convert_into", no_conversion)
    start = time.perf_counter()
    assert resolve_base_model(SPEC, cache) == out
    assert time.perf_counter() - start < 5
    assert (out / SOURCE_FILE).stat().st_mtime_ns == stamp

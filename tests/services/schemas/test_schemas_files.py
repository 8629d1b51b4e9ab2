"""etc/schemas/<family>.json: contents, and validation on load."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from services.schemas import FAMILIES, ChatSchema, SchemaError, load_schema
from tests.services.schemas.schemas_helpers import (
    FAMILY_FIXTURE,
    REPO,
    TOKEN_KEYS,
    fixture_tokens,
    template,
)


def test_families():
    assert FAMILIES == ("qwen", "llama", "phi", "gptj", "smollm")
    assert sorted(p.stem for p in (REPO / "etc" / "schemas").glob("*.json")) == sorted(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_schema_loads(family: str):
    schema = load_schema(family)
    assert isinstance(schema, ChatSchema)
    assert schema.family == family
    assert schema.path == REPO / "etc" / "schemas" / f"{family}.json"
    assert schema.eos_token and schema.stop and schema.ollama_template
    assert schema.ollama_parameters["stop"] == list(schema.stop)
    assert schema.notes
    hash(schema)  # frozen and hashable despite the parameters dict


@pytest.mark.parametrize("family", sorted(FAMILY_FIXTURE))
def test_fallback_template_is_the_real_one(family: str):
    name = FAMILY_FIXTURE[family]
    schema = load_schema(family)
    assert schema.chat_template == template(name)
    tokens = fixture_tokens(name)
    for key in TOKEN_KEYS:
        if key == "pad_token" and family == "llama":
            # Llama 3.1 has no pad token; the schema fills the gap (see notes).
            assert key not in tokens
            assert schema.pad_token == "<|finetune_right_pad_id|>"
            continue
        assert getattr(schema, key) == tokens.get(key), key


def test_etc_dir_is_a_parameter(tmp_path: Path):
    shutil.copytree(REPO / "etc" / "schemas", tmp_path / "schemas")
    raw = json.loads((tmp_path / "schemas" / "phi.json").read_text())
    raw["ollama_parameters"]["temperature"] = 0.5
    (tmp_path / "schemas" / "phi.json").write_text(json.dumps(raw))
    assert load_schema("phi", tmp_path).ollama_parameters["temperature"] == 0.5
    assert "temperature" not in load_schema("phi").ollama_parameters


def _broken(tmp_path: Path, family: str, change: Any) -> Path:
    raw = json.loads((REPO / "etc" / "schemas" / f"{family}.json").read_text())
    change(raw)
    target = tmp_path / "schemas" / f"{family}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(raw))
    return target


def _set(key: str, value: Any) -> Any:
    return lambda raw: raw.__setitem__(key, value)


@pytest.mark.parametrize(
    ("key", "change", "message"),
    [
        ("eos_token", lambda raw: raw.pop("eos_token"), "missing required key"),
        ("chat_template", lambda raw: raw.pop("chat_template"), "missing required key"),
        ("eos_token", _set("eos_token", 7), "must be a string"),
        ("eos_token", _set("eos_token", ""), "must not be empty"),
        ("eos_token", _set("eos_token", None), "must be a string"),
        ("bos_token", _set("bos_token", ["<s>"]), "must be a string or null"),
        ("stop", _set("stop", "<|im_end|>"), "list of non-empty strings"),
        ("stop", _set("stop", []), "must not be empty"),
        ("stop", _set("stop", ["<|im_end|>"]), None),  # differs from ollama_parameters
        ("ollama_parameters", _set("ollama_parameters", []), "must be an object"),
        ("ollama_template", _set("ollama_template", "plain text"), "not a Go template"),
        ("family", _set("family", "llama"), "file is for 'qwen'"),
        ("colour", _set("colour", "blue"), "unknown key"),
        ("chat_template", _set("chat_template", "{% if %}"), "does not render"),
        ("chat_template", _set("chat_template", "{{ raise_exception('no') }}"), "no"),
        ("chat_template", _set("chat_template", "{{ messages | nosuchfilter }}"), "render"),
        ("name_patterns", _set("name_patterns", ["("]), "invalid regular expression"),
        ("notes", _set("notes", [1]), "list of non-empty strings"),
    ],
)
def test_invalid_schema_names_file_and_key(
    tmp_path: Path, key: str, change: Any, message: str | None
):
    path = _broken(tmp_path, "qwen", change)
    if key == "stop" and message is None:
        key, message = "ollama_parameters", "differs from the schema's 'stop'"
    with pytest.raises(SchemaError) as caught:
        load_schema("qwen", tmp_path)
    assert caught.value.path == path
    assert caught.value.key == key
    assert str(path) in str(caught.value)
    assert repr(key) in str(caught.value)
    assert message in str(caught.value)


def test_invalid_json_and_missing_file(tmp_path: Path):
    target = tmp_path / "schemas" / "qwen.json"
    target.parent.mkdir()
    target.write_text("{ not json")
    with pytest.raises(SchemaError, match="invalid JSON") as caught:
        load_schema("qwen", tmp_path)
    assert caught.value.path == target
    with pytest.raises(SchemaError, match="not found") as caught:
        load_schema("llama", tmp_path)
    assert caught.value.path == tmp_path / "schemas" / "llama.json"
    target.write_text("[]")
    with pytest.raises(SchemaError, match="JSON object"):
        load_schema("qwen", tmp_path)


def test_unknown_family():
    with pytest.raises(SchemaError, match="unknown model family 'mistral'"):
        load_schema("mistral")


def test_the_package_stays_light():
    # The daemon imports services.schemas: no transformers, torch or tokenizers.
    code = (
        "import sys; from services.schemas import Renderer;"
        "r = Renderer.from_family('qwen'); r.split([{'role': 'user', 'content': 'a'},"
        "{'role': 'assistant', 'content': 'b'}]); r.ollama_system_prompt();"
        "heavy = [m for m in ('transformers', 'torch', 'tokenizers', 'gguf') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr

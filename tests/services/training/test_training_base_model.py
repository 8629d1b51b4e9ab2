"""Base model specs, and the one-time conversion of the embedded SmolLM2 GGUF."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from services.training.base_model import (
    DEFAULT_BASE,
    SOURCE_FILE,
    embedded_path,
    parse_spec,
    resolve_base_model,
)
from services.training.errors import BadInputError
from services.training.modelinfo import count_parameters
from tests.services.training.training_helpers import REPO

FIXTURES = REPO / "tests" / "fixtures" / "chat_templates"


def test_specs_are_classified(tmp_path: Path, tiny_model: Path) -> None:
    assert parse_spec(str(tiny_model)).kind == "dir"
    gguf = embedded_path("smollm2")
    assert gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert parse_spec(DEFAULT_BASE).location == str(gguf)
    assert parse_spec(str(gguf)).kind == "gguf"
    assert parse_spec("HuggingFaceTB/SmolLM2-135M-Instruct").kind == "hub"
    with pytest.raises(BadInputError, match="unknown embedded model 'llama9'"):
        parse_spec("embedded:llama9")
    with pytest.raises(BadInputError, match="no such file or directory"):
        parse_spec(str(tmp_path / "missing"))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(BadInputError, match=r"must be a \.gguf"):
        parse_spec(str(tmp_path / "weights.bin"))
    with pytest.raises(BadInputError, match=r"not exactly one \.gguf"):
        parse_spec(str(tmp_path))


def test_a_local_directory_is_used_as_it_is(tiny_model: Path, tmp_path: Path) -> None:
    assert resolve_base_model(str(tiny_model), tmp_path / "cache") == tiny_model
    assert not (tmp_path / "cache").exists()


def test_smollm2_gguf_converts_once_and_keeps_its_chat_template(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = tmp_path / "base-models"
    out = resolve_base_model(DEFAULT_BASE, cache)
    assert out.parent == cache and out.name.startswith("SmolLM2-135M-Instruct.Q4_1-")
    assert [p.name for p in cache.iterdir()] == [out.name]  # no temporary left behind
    assert json.loads((out / SOURCE_FILE).read_text())["gguf"] == str(embedded_path("smollm2"))
    assert count_parameters(out) == (count_parameters(embedded_path("smollm2"))[0], "safetensors")

    tokenizer = AutoTokenizer.from_pretrained(out)
    fixture = (FIXTURES / "HuggingFaceTB-SmolLM2-135M-Instruct.jinja").read_text()
    assert tokenizer.chat_template == fixture
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt.endswith(
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    )
    model = AutoModelForCausalLM.from_pretrained(out)
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    answer = model.generate(ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1] :]
    assert "Paris" in tokenizer.decode(answer)

    start = time.perf_counter()
    assert resolve_base_model(DEFAULT_BASE, cache) == out
    assert time.perf_counter() - start < 5  # reused, not converted again

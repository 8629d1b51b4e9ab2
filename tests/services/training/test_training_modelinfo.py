"""Model size probing: safetensors headers, sharded indexes, GGUF, config.json, file size."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from services.training.base_model import embedded_path
from services.training.errors import ModelInfoError
from services.training.modelinfo import (
    count_parameters,
    estimate_seconds,
    probe,
    safetensors_parameters,
    size_category,
)
from tests.services.training.training_helpers import header_only_model


def test_header_arithmetic_from_a_header_only_file(tmp_path: Path) -> None:
    header = {
        "__metadata__": {"format": "pt"},
        "embed": {"dtype": "F16", "shape": [1000, 64], "data_offsets": [0, 128000]},
        "norm": {"dtype": "F16", "shape": [64], "data_offsets": [128000, 128128]},
        "scalar": {"dtype": "F32", "shape": [], "data_offsets": [128128, 128132]},
    }
    raw = json.dumps(header).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)  # no tensor data at all
    assert safetensors_parameters(path) == 1000 * 64 + 64 + 1


def test_real_safetensors_files_and_a_sharded_index(tmp_path: Path) -> None:
    a = {"a": np.zeros((3, 5), dtype=np.float32), "b": np.zeros((7,), dtype=np.float32)}
    b = {"c": np.zeros((2, 2, 2), dtype=np.float16)}
    single = tmp_path / "single"
    single.mkdir()
    save_file(a, str(single / "model.safetensors"))
    assert count_parameters(single) == (15 + 7, "safetensors")

    sharded = tmp_path / "sharded"
    sharded.mkdir()
    save_file(a, str(sharded / "model-00001-of-00002.safetensors"))
    save_file(b, str(sharded / "model-00002-of-00002.safetensors"))
    index = {
        "metadata": {"total_size": 4 * 22 + 2 * 8},
        "weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00001-of-00002.safetensors",
            "c": "model-00002-of-00002.safetensors",
        },
    }
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    assert count_parameters(sharded) == (22 + 8, "safetensors")


BOUNDARIES = [
    (499_999_999, "tiny"),
    (500_000_000, "small"),
    (1_999_999_999, "small"),
    (2_000_000_000, "medium"),
    (7_999_999_999, "medium"),
    (8_000_000_000, "large"),
    (19_999_999_999, "large"),
    (20_000_000_000, "xlarge"),
    (405_000_000_000, "xlarge"),
]


@pytest.mark.parametrize(("params", "category"), BOUNDARIES)
def test_size_category_at_every_boundary(tmp_path: Path, params: int, category: str) -> None:
    info = probe(header_only_model(tmp_path / "m", params))
    assert (info.params, info.source, info.category) == (params, "safetensors", category)
    assert size_category(params) == category


def test_config_json_estimate_matches_a_real_model(tiny_model: Path, tmp_path: Path) -> None:
    real, source = count_parameters(tiny_model)
    assert source == "safetensors"
    config_only = tmp_path / "config-only"
    config_only.mkdir()
    shutil.copy(tiny_model / "config.json", config_only / "config.json")
    assert count_parameters(config_only) == (real, "config")


def test_file_size_is_the_last_resort(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"torch_dtype": "float32"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\0" * 4000)
    assert count_parameters(tmp_path) == (1000, "file_size")


def test_gguf_tensor_infos_are_counted(tmp_path: Path) -> None:
    import gguf

    path = tmp_path / "m.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("a", np.zeros((3, 4), dtype=np.float32))
    writer.add_tensor("b", np.zeros((5,), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert count_parameters(path) == (17, "gguf")


def test_the_embedded_smollm2_gguf_is_tiny() -> None:
    info = probe(embedded_path("smollm2"))
    assert info.source == "gguf"
    assert 130_000_000 < info.params < 140_000_000
    assert info.category == "tiny"


def test_missing_or_unreadable_models_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelInfoError, match="no model at"):
        count_parameters(tmp_path / "nothing")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", 50) + b"{not json")
    with pytest.raises(ModelInfoError, match="truncated"):
        count_parameters(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelInfoError, match="no weights"):
        count_parameters(tmp_path / "empty")


def test_training_time_estimates() -> None:
    measured = estimate_seconds(10_000, params=135_000_000, epochs=3, tokens_per_s=200.0)
    assert measured == pytest.approx(150.0)
    small = estimate_seconds(10_000, params=135_000_000)
    big = estimate_seconds(10_000, params=7_000_000_000)
    assert big > small * 50
    assert estimate_seconds(10_000, params=10**9, kind="full") > estimate_seconds(
        10_000, params=10**9, kind="lora"
    )
    assert estimate_seconds(10_000, params=10**9, device="cuda") < small
    assert estimate_seconds(0, params=10**9) == 0.0

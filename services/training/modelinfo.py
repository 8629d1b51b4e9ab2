"""A base model's parameter count and size category, without loading any weights.

The count comes from, in order of preference:

1. safetensors headers: each file starts with an 8-byte little-endian header length and a
   JSON header giving every tensor's shape; a sharded model's
   ``model.safetensors.index.json`` names its shard files;
2. a GGUF file's tensor infos (read with the ``gguf`` package);
3. ``config.json``: an estimate from hidden size, layers, intermediate size and vocabulary;
4. the weight files' size divided by the size of their dtype.

Size categories (docs/ARCHITECTURE.md, "Training configuration"): tiny < 0.5B <= small < 2B
<= medium < 8B <= large < 20B <= xlarge. Each category has smart defaults
(:data:`CATEGORY_DEFAULTS`) that config resolution uses.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from services.gguf_file import gguf_reader, is_gguf
from services.training.errors import ModelInfoError

Category = Literal["tiny", "small", "medium", "large", "xlarge"]
CountSource = Literal["safetensors", "gguf", "config", "file_size"]

# Upper bounds (exclusive) of each category, in parameters.
CATEGORY_BOUNDS: tuple[tuple[Category, float], ...] = (
    ("tiny", 0.5e9),
    ("small", 2e9),
    ("medium", 8e9),
    ("large", 20e9),
    ("xlarge", math.inf),
)

# A safetensors header larger than this is not a header (guards against garbage files).
MAX_HEADER_BYTES = 100 * 1024 * 1024

DTYPE_BYTES = {
    "float64": 8,
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "int8": 1,
    "uint8": 1,
    "float8_e4m3fn": 1,
    "float8_e5m2": 1,
}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


@dataclass(frozen=True)
class CategoryDefaults:
    """What a model of one size category trains best with, as a starting point."""

    lora_learning_rate: float
    full_learning_rate: float
    num_epochs: int
    lora_r: int
    batch_size: int
    gradient_accumulation_steps: int


# Cortex's per-category table (LoRA rate, epochs, rank, micro-batch, accumulation); the
# full fine-tune rates are this project's (10-50x below LoRA's).
CATEGORY_DEFAULTS: dict[Category, CategoryDefaults] = {
    "tiny": CategoryDefaults(5e-4, 5e-5, 5, 8, 4, 2),
    "small": CategoryDefaults(3e-4, 2e-5, 4, 16, 2, 4),
    "medium": CategoryDefaults(1e-4, 1e-5, 3, 16, 1, 8),
    "large": CategoryDefaults(5e-5, 5e-6, 2, 32, 1, 16),
    "xlarge": CategoryDefaults(2e-5, 2e-6, 2, 64, 1, 32),
}


@dataclass(frozen=True)
class ModelInfo:
    """A model's parameter count, where the count came from, and its size category."""

    params: int
    source: CountSource
    category: Category

    def to_dict(self) -> dict[str, Any]:
        return {"params": self.params, "source": self.source, "category": self.category}


def size_category(params: int) -> Category:
    """The size category of a parameter count (boundaries belong to the larger category)."""
    for name, bound in CATEGORY_BOUNDS:
        if params < bound:
            return name
    return "xlarge"  # unreachable: the last bound is infinite


def probe(path: Path) -> ModelInfo:
    """The parameter count and category of a model directory, safetensors, index or GGUF file."""
    params, source = count_parameters(path)
    return ModelInfo(params, source, size_category(params))


def count_parameters(path: Path) -> tuple[int, CountSource]:
    """Parameters of the model at ``path`` and which source gave the number."""
    path = Path(path)
    if not path.exists():
        raise ModelInfoError(f"no model at {path}")
    if path.is_file():
        if is_gguf(path):
            return gguf_parameters(path), "gguf"
        if path.suffix == ".safetensors":
            return safetensors_parameters(path), "safetensors"
        if path.name.endswith(".safetensors.index.json"):
            return _index_parameters(path), "safetensors"
        raise ModelInfoError(f"{path}: not a safetensors, safetensors index or GGUF file")
    index = sorted(path.glob("*.safetensors.index.json"))
    if index:
        return _index_parameters(index[0]), "safetensors"
    shards = sorted(p for p in path.glob("*.safetensors") if not p.name.startswith("adapter_"))
    if shards:
        return sum(safetensors_parameters(p) for p in shards), "safetensors"
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return gguf_parameters(ggufs[0]), "gguf"
    config = _read_config(path)
    if config is not None:
        estimate = config_parameters(config)
        if estimate:
            return estimate, "config"
    weight_bytes = sum(p.stat().st_size for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    if weight_bytes:
        return weight_bytes // _dtype_bytes(config or {}), "file_size"
    raise ModelInfoError(
        f"{path}: no weights, safetensors headers or config.json to size the model"
    )


def safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor name -> dtype, shape, offsets)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ModelInfoError(f"{path}: too short for a safetensors header")
        (size,) = struct.unpack("<Q", raw)
        if size > MAX_HEADER_BYTES:
            raise ModelInfoError(f"{path}: header length {size} is not plausible")
        body = f.read(size)
    if len(body) != size:
        raise ModelInfoError(f"{path}: header truncated ({len(body)} of {size} bytes)")
    try:
        header = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelInfoError(f"{path}: header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise ModelInfoError(f"{path}: header is not a JSON object")
    return header


def safetensors_parameters(path: Path) -> int:
    """The sum of every tensor's shape product, from the header alone."""
    total = 0
    for name, info in safetensors_header(path).items():
        if name == "__metadata__":
            continue
        try:
            total += math.prod(int(d) for d in info["shape"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelInfoError(f"{path}: tensor {name!r} has no valid shape") from exc
    return total


def _index_parameters(index: Path) -> int:
    try:
        data = json.loads(index.read_text())
        shards = sorted(set(data["weight_map"].values()))
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise ModelInfoError(f"{index}: not a safetensors index: {exc}") from exc
    files = [index.parent / s for s in shards]
    if all(f.exists() for f in files):
        return sum(safetensors_parameters(f) for f in files)
    total_size = (data.get("metadata") or {}).get("total_size")
    if isinstance(total_size, int) and total_size > 0:
        return total_size // _dtype_bytes(_read_config(index.parent) or {})
    missing = [f.name for f in files if not f.exists()]
    raise ModelInfoError(f"{index}: shards missing ({', '.join(missing)}) and no total_size")


@lru_cache(maxsize=16)
def _gguf_parameters(path: str, size: int, mtime_ns: int) -> int:
    try:
        reader = gguf_reader(Path(path))
    except (OSError, ValueError) as exc:
        raise ModelInfoError(f"{path}: not a readable GGUF file: {exc}") from exc
    return sum(int(t.n_elements) for t in reader.tensors)


def gguf_parameters(path: Path) -> int:
    """The sum of the element counts of a GGUF file's tensors (cached per path, size, mtime)."""
    st = path.stat()
    return _gguf_parameters(str(path), st.st_size, st.st_mtime_ns)


def _read_config(directory: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _first(config: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def config_parameters(config: dict[str, Any]) -> int | None:
    """An estimate of a decoder's parameters from its ``config.json`` (None if it lacks sizes)."""
    if isinstance(config.get("text_config"), dict):
        config = {**config, **config["text_config"]}
    hidden = _first(config, "hidden_size", "n_embd", "d_model")
    layers = _first(config, "num_hidden_layers", "n_layer", "num_layers")
    vocab = _first(config, "vocab_size")
    if not (hidden and layers and vocab):
        return None
    inter = _first(config, "intermediate_size", "n_inner", "ffn_dim") or 4 * hidden
    heads = _first(config, "num_attention_heads", "n_head") or 1
    kv_heads = _first(config, "num_key_value_heads") or heads
    head_dim = _first(config, "head_dim") or hidden // heads
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
    gated = str(config.get("hidden_act", "")).lower() in ("silu", "swiglu", "geglu") or str(
        config.get("model_type", "")
    ) in ("llama", "mistral", "qwen2", "qwen3", "phi3", "gemma", "gemma2", "smollm3")
    mlp = (3 if gated else 2) * hidden * inter
    norms = 2 * hidden
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings", True) else 2)
    return layers * (attention + mlp + norms) + embeddings + hidden


def _dtype_bytes(config: dict[str, Any]) -> int:
    dtype = config.get("torch_dtype") or config.get("dtype") or "bfloat16"
    return DTYPE_BYTES.get(str(dtype).removeprefix("torch."), 2)


def estimate_seconds(
    tokens: int,
    *,
    params: int,
    kind: Literal["lora", "full"] = "lora",
    epochs: int = 1,
    tokens_per_s: float | None = None,
    device: Literal["cpu", "cuda"] = "cpu",
) -> float:
    """Seconds to train ``epochs`` passes over ``tokens`` dataset tokens.

    ``tokens_per_s`` is a configured or measured throughput (a previous run's
    ``done.metrics.tokens_per_s``); without it, throughput is estimated from the model size:
    a full fine-tune costs about 6 FLOPs per parameter and token, LoRA about 4 (no weight
    gradients for the base), at a sustained 1e11 FLOP/s on a CPU and 1e14 on a GPU.
    """
    if tokens <= 0:
        return 0.0
    if tokens_per_s is None:
        flops_per_token = (6 if kind == "full" else 4) * max(params, 1)
        tokens_per_s = (1e14 if device == "cuda" else 1e11) / flops_per_token
    if tokens_per_s <= 0:
        raise ValueError("tokens_per_s must be positive")
    return tokens * epochs / tokens_per_s

"""A model's shapes for the memory planner (``memory_plan.ModelShape``), loading no weights,
and the memory of the device a job will train on.

Shapes come from ``config.json`` (a model directory, the file itself, or a hub id's cached
copy: only that file is ever needed, so a model not yet downloaded can be planned), else
from a GGUF file's metadata, else from the safetensors headers' tensor shapes. The parameter
count is ``modelinfo``'s (headers or GGUF tensors) when there are weights, else the
``config.json`` estimate.

Device memory (:func:`device_memory`): ``training.gpu_memory_gb`` when set (in GiB, as cards
are sold: a "24 GB" card has 24 GiB; plan for a GPU you do not have yet); else the free
memory of the first CUDA device as ``nvidia-smi`` reports it (no torch in the caller's
process); else, on a machine without a GPU, the RAM available (``MemAvailable``), capped by
``training.memory_limit_mb`` when that is set.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from services.gguf_file import gguf_reader, is_gguf
from services.training.errors import ModelInfoError
from services.training.memory_plan import GIB, ModelShape
from services.training.modelinfo import (
    _first,
    config_parameters,
    count_parameters,
    safetensors_header,
)

LAYER = re.compile(r"\.layers\.(\d+)\.|\.h\.(\d+)\.|^blk\.(\d+)\.")


def shape_from_config(config: dict[str, Any], params: int | None = None) -> ModelShape:
    """Shapes from a ``config.json``'s sizes (multimodal: its ``text_config``)."""
    if isinstance(config.get("text_config"), dict):
        config = {**config, **config["text_config"]}
    hidden = _first(config, "hidden_size", "n_embd", "d_model")
    layers = _first(config, "num_hidden_layers", "n_layer", "num_layers")
    vocab = _first(config, "vocab_size")
    if not (hidden and layers and vocab):
        raise ModelInfoError("config.json lacks hidden_size, num_hidden_layers or vocab_size")
    heads = _first(config, "num_attention_heads", "n_head") or 1
    counted = params or config_parameters(config) or 0
    return ModelShape(
        params=counted,
        hidden=hidden,
        layers=layers,
        intermediate=_first(config, "intermediate_size", "n_inner", "ffn_dim") or 4 * hidden,
        vocab=vocab,
        heads=heads,
        kv_heads=_first(config, "num_key_value_heads") or heads,
        tied=bool(config.get("tie_word_embeddings", False)),
    )


def shape_from_gguf(path: Path) -> ModelShape:
    """Shapes from a GGUF file's metadata (``<arch>.embedding_length`` and the like)."""
    reader = gguf_reader(path)

    def value(key: str) -> Any:
        field = reader.fields.get(key)
        return None if field is None else field.contents()

    arch = value("general.architecture") or "llama"
    names = {t.name for t in reader.tensors}
    tokens = value("tokenizer.ggml.tokens")
    config = {
        "hidden_size": value(f"{arch}.embedding_length"),
        "num_hidden_layers": value(f"{arch}.block_count"),
        "intermediate_size": value(f"{arch}.feed_forward_length"),
        "num_attention_heads": value(f"{arch}.attention.head_count"),
        "num_key_value_heads": value(f"{arch}.attention.head_count_kv"),
        "vocab_size": len(tokens) if tokens else value(f"{arch}.vocab_size"),
        "tie_word_embeddings": "output.weight" not in names,
    }
    params = sum(int(t.n_elements) for t in reader.tensors)
    return shape_from_config({k: v for k, v in config.items() if v is not None}, params)


def shape_from_safetensors(files: list[Path]) -> ModelShape:
    """Shapes inferred from tensor names and shapes in the headers (no ``config.json``)."""
    shapes: dict[str, list[int]] = {}
    for f in files:
        for name, info in safetensors_header(f).items():
            if name != "__metadata__":
                shapes[name] = [int(d) for d in info["shape"]]
    layers = {int(next(g for g in m.groups() if g)) for n in shapes if (m := LAYER.search(n))}
    embed = next((s for n, s in shapes.items() if n.endswith("embed_tokens.weight")), None)
    up = next((s for n, s in shapes.items() if n.endswith("mlp.up_proj.weight")), None)
    q = next((s for n, s in shapes.items() if n.endswith("self_attn.q_proj.weight")), None)
    k = next((s for n, s in shapes.items() if n.endswith("self_attn.k_proj.weight")), None)
    if not (embed and layers):
        raise ModelInfoError(f"{files[0]}: cannot tell the layer sizes from the tensor names")
    vocab, hidden = embed
    head_dim = 128 if hidden % 128 == 0 else 64
    heads = (q[0] if q else hidden) // head_dim
    return ModelShape(
        params=sum(_prod(s) for s in shapes.values()),
        hidden=hidden,
        layers=len(layers),
        intermediate=up[0] if up else 4 * hidden,
        vocab=vocab,
        heads=max(1, heads),
        kv_heads=max(1, (k[0] if k else hidden) // head_dim),
        tied=not any(n.endswith("lm_head.weight") for n in shapes),
    )


def _prod(shape: list[int]) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


def model_shape(path: Path) -> ModelShape:
    """The shapes of the model at ``path``: a directory, a ``config.json``, a GGUF or
    safetensors file."""
    path = Path(path)
    if path.is_file() and path.name.endswith(".json"):
        return shape_from_config(_read_json(path))
    if path.is_file() and is_gguf(path):
        return shape_from_gguf(path)
    if path.is_file() and path.suffix == ".safetensors":
        return shape_from_safetensors([path])
    if not path.is_dir():
        raise ModelInfoError(f"no model at {path}")
    config = path / "config.json"
    if config.is_file():
        try:
            params, _ = count_parameters(path)
        except ModelInfoError:
            params = None
        return shape_from_config(_read_json(config), params)
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return shape_from_gguf(ggufs[0])
    shards = sorted(p for p in path.glob("*.safetensors") if not p.name.startswith("adapter_"))
    if shards:
        return shape_from_safetensors(shards)
    raise ModelInfoError(f"{path}: no config.json, GGUF or safetensors to read shapes from")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelInfoError(f"{path}: not a readable config.json: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelInfoError(f"{path}: not a JSON object")
    return data


def hub_config(repo_id: str, hub_dir: Path | None = None) -> Path:
    """A hub model's ``config.json`` (the copy in ``hub_dir``, personad's download cache,
    or the user's Hugging Face cache, else only that file fetched into the latter, unless
    ``HF_HUB_OFFLINE`` is set)."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    for cache in ([hub_dir] if hub_dir is not None else []) + [None]:
        cached = try_to_load_from_cache(repo_id, "config.json", cache_dir=cache)
        if isinstance(cached, str):
            return Path(cached)
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise ModelInfoError(
            f"{repo_id}: its config.json is not in the local cache and HF_HUB_OFFLINE is set"
        )
    try:
        return Path(hf_hub_download(repo_id, "config.json"))
    except Exception as exc:  # network, missing repo, gated model: all the same to a user
        raise ModelInfoError(f"{repo_id}: cannot fetch its config.json: {exc}") from exc


def cuda_memory() -> tuple[float, float] | None:
    """(free, total) GiB of the first CUDA device from ``nvidia-smi``; None without one."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=memory.free,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        free, total = (float(x) for x in out.splitlines()[0].split(","))
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
    return free / 1024, total / 1024  # MiB -> GiB


def gpu_count() -> int:
    """Visible CUDA devices as ``nvidia-smi -L`` lists them (0 without it)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def ram_available_gib(meminfo: Path = Path("/proc/meminfo")) -> float:
    """``MemAvailable`` in GiB (what can be allocated without swapping)."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / GIB
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES") / GIB


def device_memory(
    *, device: str, gpu_memory_gb: float | None, memory_limit_mb: int | None
) -> tuple[str, float, str]:
    """(device type, GiB to plan with, where the number came from); see the module
    docstring for the order. ``device``: the ``training.device`` setting."""
    if gpu_memory_gb is not None:
        kind = "cpu" if device == "cpu" else "cuda"
        return kind, float(gpu_memory_gb), "training.gpu_memory_gb"
    cuda = cuda_memory() if device != "cpu" else None
    if cuda is not None:
        return "cuda", cuda[0], "free on GPU 0 (nvidia-smi)"
    ram = ram_available_gib()
    if memory_limit_mb:
        limit = memory_limit_mb * 1024 * 1024 / GIB
        if limit < ram:
            return "cpu", limit, "training.memory_limit_mb"
    return "cpu", ram, "RAM available (no GPU)"

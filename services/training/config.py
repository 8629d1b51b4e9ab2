"""The training configuration's resolution in layers (docs/ARCHITECTURE.md, "Training
configuration"); the configuration itself, :class:`TrainingConfig` and its sections, is
:mod:`services.training.config_model`.

Layers, each overriding the one below (the name is what ``ResolvedConfig.sources`` records):

1. ``default``: the field defaults of :class:`TrainingConfig`;
2. ``smart``: from the base model's size category (``modelinfo.CATEGORY_DEFAULTS``:
   learning rate per kind, epochs, LoRA rank with alpha = 2 x rank, batch size,
   accumulation) and the dataset size (fewer than 100 samples: 2 more epochs; more than
   5,000: 1 fewer); a small profile's LoRA (fewer than 300 samples, a model under 2B
   parameters) takes an optimizer step every 8 samples at 3e-3 (tiny) or 2e-3 (small)
   for the fewest epochs that make 54 steps (2 to 6) and keeps the share of its adapter
   within the drift budget (``lora.scale`` auto), each step held near the base
   (``lora.anchor``): see :data:`SMALL_PROFILE`;
3. ``global``: ``etc/fine-tune-config.json``;
4. ``mode``: ``etc/modes/<mode>-config.json`` when a mode filter is given. A mode file
   holds only what is about the mode (``services.curation.config.ModeConfig``, the one
   schema and loader of mode files): ``learning_rate_scale`` multiplies the rate resolved
   so far, and warm-up, weight decay, gradient norm, checkpoints and the dataset
   thresholds; batch, accumulation, rank, epochs and sequence length stay the size
   category's unless a job or ``training.config`` sets them;
5. ``preset``: ``quick``, ``balanced`` or ``quality`` when one is given. It sits above the
   files because choosing a preset is a per-job decision, and below the job arguments
   because those name single keys explicitly. Presets are defined in :data:`PRESETS`;
   ``etc/fine-tune-config.json`` may redefine them under ``"presets"``;
6. ``job``: explicit job arguments (nested ``{"lora": {"r": 8}}`` or dotted ``{"lora.r": 8}``).

The global file takes its hyperparameters from ``"training"`` and, for a full fine-tune,
then from ``"training"."full"`` (overrides for full runs: they want a learning rate 10-50x
lower than LoRA), and its dataset requirements from ``"dataset"`` (and ``"dataset"."full"``
for a full run). The evaluation gate's settings (``config_model.GateSettings``) sit under
``"training"."gate"``, like ``"lora"`` (as a job argument: ``gate.min_improvement``). Keys
starting with ``$`` and ``notes`` are comments; any other unknown key is an error. Every
error is a :class:`TrainingConfigError` naming the file (or layer) and the dotted key.
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from services import durable
from services.training.config_model import DatasetRequirements, TrainingConfig
from services.training.errors import TrainingConfigError
from services.training.modelinfo import CATEGORY_DEFAULTS, ModelInfo, probe

Kind = Literal["lora", "full"]
KINDS: tuple[str, ...] = ("lora", "full")
LAYERS: tuple[str, ...] = ("default", "smart", "global", "mode", "preset", "job")
GLOBAL_FILE = "fine-tune-config.json"
CONFIG_FILE = "config.json"
FEW_SAMPLES = 100
MANY_SAMPLES = 5000
# A LoRA on fewer training samples than this, of a model under 2B parameters, is a small
# profile's: its facts are few, each told in several memories, and it must learn them in
# a few epochs. Measured on SmolLM2-135M (bench/fidelity.py, bench/FIDELITY.md): one
# optimizer step per SMALL_PROFILE_BATCH samples (no accumulation) at SMALL_PROFILE_LR
# (3e-3 on a tiny model: at 1e-3 the model answers its own trained questions without their
# facts) for the fewest whole epochs that make SMALL_PROFILE_STEPS optimizer steps, at least
# SMALL_PROFILE_MIN_EPOCHS and at most SMALL_PROFILE_MAX_EPOCHS (54 steps against 36: a 65-sample
# persona recalled 75% of its facts closed-book with two seeds against 67-68%, a 142-sample
# one 80% against 57%, at no more drift; the epochs no longer jump from 6 to 2 at 100
# samples, where 99 samples made 78 steps and 100 made 26); the epochs are counted on the
# profile's own samples, and its questions in other words (services.persona_questions, added
# by the dataset build) add their steps to those. An adapter trained that
# hard also drifts on general text: each step pays SMALL_PROFILE_ANCHOR x its drift on a
# general conversation (lora.anchor: services.training.anchor; 0.3 recalled more than 1.0
# on both demo personas, the drift still a sixth of the budget), and the share of the
# adapter within the drift budget is kept (lora.scale auto: services.training.adapter_scale;
# with the anchor, the whole adapter stays within it). The small category's rate is the
# tiny one's scaled as the size defaults scale it (not measured).
SMALL_PROFILE = 300
SMALL_PROFILE_CATEGORIES = ("tiny", "small")
SMALL_PROFILE_BATCH = 8
SMALL_PROFILE_LR = {"tiny": 3e-3, "small": 2e-3}
SMALL_PROFILE_STEPS = 54
SMALL_PROFILE_MIN_EPOCHS = 2
SMALL_PROFILE_MAX_EPOCHS = 6
SMALL_PROFILE_ANCHOR = 0.3


PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"num_epochs": 1, "max_seq_length": 1024, "lora": {"r": 8, "alpha": 16}},
    "balanced": {},
    "quality": {"num_epochs": 4, "warmup_ratio": 0.06, "lora": {"r": 32, "alpha": 64}},
}


@dataclass
class ResolvedConfig:
    """A resolved :class:`TrainingConfig` with the provenance of every key."""

    config: TrainingConfig
    sources: dict[str, str]
    kind: str
    mode: str | None
    preset: str | None
    base_model: str
    model: ModelInfo
    n_samples: int
    files: dict[str, str] = field(default_factory=dict)
    plan: dict[str, Any] | None = None  # the memory plan (services.training.memory_plan)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "mode": self.mode,
            "preset": self.preset,
            "base_model": self.base_model,
            "model": self.model.to_dict(),
            "n_samples": self.n_samples,
            "config": self.config.model_dump(mode="json"),
            "sources": dict(sorted(self.sources.items())),
            "files": self.files,
            "plan": self.plan,
        }

    def write(self, run_dir: Path) -> Path:
        """Write ``<run_dir>/config.json`` atomically (``services.durable``); return its path."""
        run_dir.mkdir(parents=True, exist_ok=True)
        return durable.write_json(run_dir / CONFIG_FILE, self.to_dict())

    @classmethod
    def read(cls, path: Path) -> ResolvedConfig:
        """Load a ``config.json`` written by :meth:`write`."""
        source = str(path)
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            model = data["model"]
            info = ModelInfo(int(model["params"]), model["source"], model["category"])
            return cls(
                config=_validate(data["config"], source),
                sources=dict(data["sources"]),
                kind=data["kind"],
                mode=data["mode"],
                preset=data["preset"],
                base_model=data["base_model"],
                model=info,
                n_samples=int(data["n_samples"]),
                files=dict(data.get("files") or {}),
                plan=data.get("plan"),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TrainingConfigError(
                f"not a resolved training config: {exc}", source=source
            ) from exc


class _Layers:
    """The configuration merged so far, the layer that set each key, and the files read."""

    def __init__(self) -> None:
        self.merged: dict[str, Any] = TrainingConfig().model_dump()
        self.sources = {key: "default" for key in _flatten(self.merged)}
        self.files: dict[str, str] = {}

    def apply(self, layer: str, data: dict[str, Any], source: str) -> None:
        """Merge ``data`` over the configuration; it must stay valid."""
        candidate = _deep_merge(self.merged, data)
        _validate(candidate, source)
        self.merged = candidate
        self.sources.update({key: layer for key in _flatten(data)})


def resolve_config(
    *,
    base_model: Path,
    kind: str,
    n_samples: int,
    mode: str | None,
    preset: str | None,
    job_args: dict[str, Any],
    etc_dir: Path,
) -> ResolvedConfig:
    """Resolve the configuration of one run; see the module docstring for the order."""
    if kind not in KINDS:
        raise TrainingConfigError(
            f"must be one of {', '.join(KINDS)}, not {kind!r}", source="job", key="kind"
        )
    info = probe(base_model)
    layers = _Layers()
    layers.apply("smart", _smart_defaults(info, kind, n_samples), "smart defaults")
    global_path = etc_dir / GLOBAL_FILE
    global_data = _apply_global(layers, global_path, kind)
    if mode is not None:
        _apply_mode(layers, etc_dir, mode, kind)
    if preset is not None:
        _apply_preset(layers, _presets(global_data, str(global_path)), preset)
    layers.apply("job", _undot(job_args), "job arguments")
    return ResolvedConfig(
        config=_validate(layers.merged, "resolved config"),
        sources=layers.sources,
        kind=kind,
        mode=mode,
        preset=preset,
        base_model=str(base_model),
        model=info,
        n_samples=n_samples,
        files=layers.files,
    )


def _apply_global(layers: _Layers, path: Path, kind: str) -> dict[str, Any]:
    """Apply ``etc/fine-tune-config.json`` when there is one; returns its data ({} when
    there is none), which may define presets."""
    if not path.exists():
        return {}
    layers.files["global"] = str(path)
    data = _read_json(path)
    _check_keys(data, {"training", "dataset", "presets"}, str(path))
    for layer in _file_layers(data, kind, str(path)):
        layers.apply("global", layer, str(path))
    return data


def _apply_mode(layers: _Layers, etc_dir: Path, mode: str, kind: str) -> None:
    """Apply ``etc/modes/<mode>-config.json``, which must exist, loaded by the one mode-file
    loader (``services.curation.config``): its learning-rate scale multiplies the rate
    resolved so far, its other keys replace theirs, its dataset thresholds (the full
    fine-tune ones for a full run) set ``dataset``."""
    from services.curation.config import CurationError
    from services.curation.mode_config import load_mode_config

    if not re.fullmatch(r"[a-z][a-z0-9_-]*", mode):
        raise TrainingConfigError(f"not a mode name: {mode!r}", source="job", key="mode")
    path = etc_dir / "modes" / f"{mode}-config.json"
    if not path.exists():
        raise TrainingConfigError(f"no config for mode {mode!r}", source=str(path))
    layers.files["mode"] = str(path)
    try:
        cfg = load_mode_config(mode, etc_dir)
    except CurationError as exc:
        message = str(exc).removeprefix(f"{path}: ").removeprefix(f"key '{exc.key}': ")
        raise TrainingConfigError(message, source=str(path), key=exc.key) from exc
    hyper = cfg.hyperparameters(kind)
    scale = hyper.pop("learning_rate_scale", None)
    if scale is not None:
        hyper["learning_rate"] = min(1.0, layers.merged["learning_rate"] * scale)
    minimum, recommended = cfg.thresholds(kind)
    dataset: dict[str, Any] = {"min_samples": minimum, "recommended_samples": recommended}
    if cfg.dataset.max_samples is not None:
        dataset["max_samples"] = cfg.dataset.max_samples
    layers.apply("mode", {**hyper, "dataset": dataset}, str(path))


def _apply_preset(layers: _Layers, presets: dict[str, dict[str, Any]], preset: str) -> None:
    if preset not in presets:
        raise TrainingConfigError(
            f"unknown preset {preset!r} (one of {', '.join(sorted(presets))})",
            source="job",
            key="preset",
        )
    layers.apply("preset", presets[preset], f"preset {preset!r}")


def _smart_defaults(info: ModelInfo, kind: str, n_samples: int) -> dict[str, Any]:
    d = CATEGORY_DEFAULTS[info.category]
    if is_small_profile(info, kind, n_samples):
        return {
            "learning_rate": SMALL_PROFILE_LR[info.category],
            "num_epochs": small_profile_epochs(n_samples),
            "batch_size": SMALL_PROFILE_BATCH,
            "gradient_accumulation_steps": 1,
            "lora": {
                "r": d.lora_r,
                "alpha": 2 * d.lora_r,
                "scale": "auto",
                "anchor": SMALL_PROFILE_ANCHOR,
            },
        }
    epochs = d.num_epochs
    if n_samples < FEW_SAMPLES:
        epochs += 2
    elif n_samples > MANY_SAMPLES:
        epochs = max(1, epochs - 1)
    return {
        "learning_rate": d.full_learning_rate if kind == "full" else d.lora_learning_rate,
        "num_epochs": epochs,
        "batch_size": d.batch_size,
        "gradient_accumulation_steps": d.gradient_accumulation_steps,
        "lora": {"r": d.lora_r, "alpha": 2 * d.lora_r},
    }


def small_profile_epochs(n_samples: int) -> int:
    """A small profile's epochs: the fewest whole ones that make :data:`SMALL_PROFILE_STEPS`
    steps of :data:`SMALL_PROFILE_BATCH` samples, within ``[SMALL_PROFILE_MIN_EPOCHS,
    SMALL_PROFILE_MAX_EPOCHS]``."""
    per_epoch = max(1, math.ceil(n_samples / SMALL_PROFILE_BATCH))
    epochs = math.ceil(SMALL_PROFILE_STEPS / per_epoch)
    return min(SMALL_PROFILE_MAX_EPOCHS, max(SMALL_PROFILE_MIN_EPOCHS, epochs))


def is_small_profile(info: ModelInfo, kind: str, n_samples: int) -> bool:
    """A LoRA of a small profile on a small model (see :data:`SMALL_PROFILE`)."""
    return (
        kind == "lora" and n_samples < SMALL_PROFILE and info.category in SMALL_PROFILE_CATEGORIES
    )


def _file_layers(data: dict[str, Any], kind: str, source: str) -> list[dict[str, Any]]:
    """The global file's layer data: its ``training`` keys, its ``full`` overrides, its
    ``dataset`` and, for a full run, its ``dataset.full`` (the thresholds of a full
    fine-tune of all modes)."""
    training = _section(data, "training", source)
    full = _section(training, "full", source, prefix="training.")
    if "lora" in full:
        raise TrainingConfigError(
            "LoRA settings do not apply to full runs", source=source, key="training.full.lora"
        )
    shared = {k: v for k, v in training.items() if k != "full"}
    hyper = set(TrainingConfig.model_fields) - {"dataset"}
    _check_keys(shared, hyper, source, prefix="training.")
    _check_keys(full, hyper - {"lora"}, source, prefix="training.full.")
    defaults = TrainingConfig().model_dump()
    _validate(_deep_merge(defaults, shared), source, "training.")
    _validate(_deep_merge(defaults, full), source, "training.full.")
    dataset = _section(data, "dataset", source)
    full_dataset = _section(dataset, "full", source, prefix="dataset.")
    dataset = {k: v for k, v in dataset.items() if k != "full"}
    known = set(DatasetRequirements.model_fields)
    _check_keys(dataset, known, source, prefix="dataset.")
    _check_keys(full_dataset, known, source, prefix="dataset.full.")
    layers = [
        shared,
        full if kind == "full" else {},
        {"dataset": {k: v for k, v in dataset.items() if k in known}},
        {"dataset": full_dataset} if kind == "full" else {},
    ]
    return [layer for layer in layers if _flatten(layer)]


def _section(data: dict[str, Any], key: str, source: str, prefix: str = "") -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise TrainingConfigError("must be a JSON object", source=source, key=prefix + key)
    return _strip_comments(value)


def _presets(global_data: dict[str, Any], source: str) -> dict[str, dict[str, Any]]:
    presets = copy.deepcopy(PRESETS)
    for name, value in _section(global_data, "presets", source).items():
        if not isinstance(value, dict):
            raise TrainingConfigError("must be a JSON object", source=source, key=f"presets.{name}")
        value = _strip_comments(value)
        _check_keys(value, set(TrainingConfig.model_fields), source, prefix=f"presets.{name}.")
        _validate(_deep_merge(TrainingConfig().model_dump(), value), source, f"presets.{name}.")
        presets[name] = value
    return presets


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainingConfigError(f"cannot read: {exc}", source=str(path)) from exc
    except json.JSONDecodeError as exc:
        raise TrainingConfigError(f"not valid JSON: {exc}", source=str(path)) from exc
    if not isinstance(data, dict):
        raise TrainingConfigError("must hold a JSON object", source=str(path))
    return _strip_comments(data)


def _strip_comments(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if not (k.startswith("$") or k == "notes")}


def _check_keys(data: dict[str, Any], allowed: set[str], source: str, *, prefix: str = "") -> None:
    for key in data:
        if key not in allowed:
            raise TrainingConfigError("unknown key", source=source, key=prefix + key)


def _validate(data: dict[str, Any], source: str, prefix: str = "") -> TrainingConfig:
    try:
        return TrainingConfig.model_validate(data)
    except ValidationError as exc:
        # A union reports one error per member, its name last ("bool", "literal['auto']").
        errors = exc.errors()
        key = _error_key(errors[0]["loc"])
        message = " or ".join(e["msg"] for e in errors if _error_key(e["loc"]) == key)
        raise TrainingConfigError(message, source=source, key=prefix + key) from exc


def _error_key(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc if not str(p).startswith(("literal[", "bool", "list[")))


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _undot(args: dict[str, Any]) -> dict[str, Any]:
    """``{"lora.r": 8}`` -> ``{"lora": {"r": 8}}``; nested dicts pass through."""
    out: dict[str, Any] = {}
    for key, value in args.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise TrainingConfigError(
                    "is both a value and a section", source="job arguments", key=key
                )
        node[leaf] = _deep_merge(node[leaf], value) if isinstance(node.get(leaf), dict) else value
    return out

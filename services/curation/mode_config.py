"""The per-mode configs, ``etc/modes/<mode>-config.json``: the one schema
(:class:`ModeConfig`) and the one loader (:func:`load_mode_config`) of mode files, read
alike by curation, the dataset metrics, the job supervisor and the training configuration
(``services.training.config``). An invalid file raises :class:`CurationError` naming the
file and the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from services.curation.config import (
    DEFAULT_ETC_DIR,
    MODES,
    CurationError,
    Mode,
    StrictModel,
    read_json,
    strip_comments,
    validate_model,
)

# A mode file holds what is about the mode; these come from the base model's size
# category (services.training.modelinfo) unless a job or ``training.config`` sets them.
SIZE_KEYS: tuple[str, ...] = (
    "learning_rate",
    "num_epochs",
    "batch_size",
    "gradient_accumulation_steps",
    "max_seq_length",
    "micro_batch_tokens",
    "lora",
)


class ModeHyper(StrictModel):
    """What a mode changes in a run: the learning rate relative to the size category's
    (``learning_rate_scale``), regularisation, warm-up and checkpoints; unset keys leave
    the layers below as they are."""

    learning_rate_scale: float | None = Field(default=None, gt=0, le=100)
    warmup_steps: int | None = Field(default=None, ge=0)
    warmup_ratio: float | None = Field(default=None, ge=0, le=1)
    weight_decay: float | None = Field(default=None, ge=0)
    max_grad_norm: float | None = Field(default=None, gt=0)
    save_steps: int | None = Field(default=None, ge=1)
    save_total_limit: int | None = Field(default=None, ge=1)
    lr_scheduler: Literal["cosine", "linear", "constant"] | None = None


class ModeTraining(ModeHyper):
    full: ModeHyper = ModeHyper()


class FullThresholds(StrictModel):
    """A full fine-tune's sample thresholds (kept apart from the LoRA ones): fewer than
    ``min_samples`` skips a full fine-tune of this mode (unless forced), fewer than
    ``recommended_samples`` warns."""

    min_samples: int = Field(ge=0)
    recommended_samples: int = Field(ge=0)


class DatasetRequirements(StrictModel):
    min_samples: int = Field(ge=0)
    recommended_samples: int = Field(ge=0)
    max_samples: int | None = Field(default=None, ge=1)
    full: FullThresholds | None = None


class ModeConfig(StrictModel):
    """One ``etc/modes/<mode>-config.json``: dataset requirements (LoRA and full
    fine-tune thresholds) and what the mode changes in a run. The one schema of mode files:
    curation, the dataset metrics and the training configuration all load it here."""

    mode: Mode
    dataset: DatasetRequirements
    training: ModeTraining = ModeTraining()
    source: str = Field(default="", exclude=True)

    def hyperparameters(self, kind: str = "lora") -> dict[str, Any]:
        """What this mode sets in a ``lora`` or ``full`` run (unset keys left out; a full
        run's ``full`` keys over the shared ones), ``learning_rate_scale`` included."""
        if kind not in ("lora", "full"):
            raise CurationError(f"unknown training kind {kind!r}; expected 'lora' or 'full'")
        out = self.training.model_dump(exclude={"full"}, exclude_none=True)
        if kind == "full":
            out.update(self.training.full.model_dump(exclude_none=True))
        return out

    def thresholds(self, kind: str = "lora") -> tuple[int, int]:
        """(min_samples, recommended_samples) of a ``lora`` or ``full`` run of this mode."""
        d = self.dataset
        if kind == "full" and d.full is not None:
            return d.full.min_samples, d.full.recommended_samples
        return d.min_samples, d.recommended_samples


def _check_mode_config(cfg: ModeConfig, mode: str) -> tuple[str, str] | None:
    if cfg.mode != mode:
        return "mode", f"is '{cfg.mode}' but the file is the config of mode '{mode}'"
    d = cfg.dataset
    if d.recommended_samples < d.min_samples:
        return "dataset.recommended_samples", (
            f"{d.recommended_samples} is below min_samples ({d.min_samples})"
        )
    if d.max_samples is not None and d.max_samples < d.recommended_samples:
        return "dataset.max_samples", (
            f"{d.max_samples} is below recommended_samples ({d.recommended_samples})"
        )
    if d.full is not None and d.full.recommended_samples < d.full.min_samples:
        return "dataset.full.recommended_samples", (
            f"{d.full.recommended_samples} is below min_samples ({d.full.min_samples})"
        )
    return None


def _size_key(data: Any) -> str | None:
    """The first key of a mode file's ``training`` (or ``training.full``) that belongs to
    the size category, as a dotted key."""
    training = data.get("training") if isinstance(data, dict) else None
    if not isinstance(training, dict):
        return None
    for prefix, section in (("training.", training), ("training.full.", training.get("full"))):
        if isinstance(section, dict):
            for key in SIZE_KEYS:
                if key in section:
                    return prefix + key
    return None


def parse_mode_config(data: Any, mode: str, source: str = "<mode config>") -> ModeConfig:
    """A mode file from an already-parsed JSON object: the one schema and loader of mode
    files (curation, dataset metrics and the training configuration all use it)."""
    size_key = _size_key(strip_comments(data))
    if size_key is not None:
        leaf = size_key.rsplit(".", 1)[-1]
        hint = "learning_rate_scale" if leaf == "learning_rate" else leaf
        raise CurationError(
            f"{source}: key '{size_key}': comes from the base model's size category, not "
            f"the mode; set it for every job in training.config, for one job with "
            f"`personad train --set {leaf}=...`"
            + (f", or scale the rate with {hint}" if leaf == "learning_rate" else ""),
            path=source,
            key=size_key,
        )
    cfg: ModeConfig = validate_model(ModeConfig, data, source).model_copy(update={"source": source})
    problem = _check_mode_config(cfg, mode)
    if problem:
        key, msg = problem
        raise CurationError(f"{source}: key '{key}': {msg}", path=source, key=key)
    return cfg


def load_mode_config(mode: str, etc_dir: Path | str | None = None) -> ModeConfig:
    """Load and validate ``<etc_dir>/modes/<mode>-config.json``."""
    if mode not in MODES:
        raise CurationError(f"unknown mode {mode!r}; the modes are {', '.join(MODES)}")
    base = Path(etc_dir) if etc_dir is not None else DEFAULT_ETC_DIR
    p = base / "modes" / f"{mode}-config.json"
    return parse_mode_config(read_json(p), mode, str(p))


def load_mode_configs(etc_dir: Path | str | None = None) -> dict[str, ModeConfig]:
    """Every mode's config, keyed by mode."""
    return {mode: load_mode_config(mode, etc_dir) for mode in MODES}

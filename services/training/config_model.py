"""The training configuration: :class:`TrainingConfig`, every hyperparameter of a run, with
its sections :class:`LoraSettings`, :class:`DatasetRequirements` (``"dataset"``) and
:class:`GateSettings` (``"gate"``), each strict (unknown keys and wrong types are errors).
Its field defaults are the ``default`` layer of the resolution
(:func:`services.training.config.resolve_config`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class LoraSettings(_Strict):
    r: int = Field(default=16, ge=1, le=1024)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: Literal["all-linear"] | list[str] = Field(default="all-linear", min_length=1)
    scale: Literal["auto"] | Annotated[float, Field(gt=0, le=1)] = Field(
        default=1.0,
        description="Share of the trained adapter kept (services.training.adapter_scale); "
        "auto: the largest whose drift from the base on general text is within budget.",
    )
    anchor: float = Field(
        default=0.0,
        ge=0,
        le=100,
        description="Weight of the drift penalty added at each step (services.training."
        "anchor): KL of the base's from the model's next tokens on a general conversation; "
        "0: none.",
    )


class DatasetRequirements(_Strict):
    required_samples: int = Field(
        default=4, ge=1, description="Fewer training samples than this is bad input: the run fails."
    )
    min_samples: int = Field(default=0, ge=0, description="Fewer is allowed, with a warning.")
    recommended_samples: int = Field(
        default=0, ge=0, description="Fewer is allowed, with a warning."
    )
    max_samples: int | None = Field(default=None, ge=1, description="Train on at most this many.")


class GateSettings(_Strict):
    """The evaluation gate a candidate passes before it is published
    (``services.training.gate``)."""

    enabled: bool = Field(default=True, description="False: every candidate is published.")
    min_improvement: float = Field(
        default=0.0,
        ge=-1,
        lt=1,
        description="Held-out loss must be <= the reference's x (1 - this); 0.01 = 1% better.",
    )
    max_regression: float = Field(
        default=0.05,
        gt=-1,
        le=10,
        description="Regression-set loss must be <= the reference's x (1 + this).",
    )
    probe_tokens: int = Field(
        default=24, ge=0, le=512, description="Tokens generated per tag probe; 0: no probe."
    )
    probe_per_mode: int = Field(
        default=2, ge=0, le=100, description="Samples probed per mode; 0: no probe."
    )
    fidelity_probes: int = Field(
        default=8,
        ge=0,
        le=200,
        description="Held-out questions the persona-fidelity check asks (the profile's own "
        "probes.jsonl first, then held-out emulation samples); 0: no fidelity check.",
    )
    fidelity_tokens: int = Field(
        default=48, ge=1, le=1024, description="Tokens at most per fidelity answer."
    )
    fidelity_tolerance: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="A candidate's fact recall (with and without retrieval) may fall at most "
        "this far (absolute share) below its reference's; more is rejected.",
    )


class TrainingConfig(_Strict):
    """Every hyperparameter of a training run; the defaults are the ``default`` layer."""

    learning_rate: float = Field(default=2e-4, gt=0, le=1)
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(default=0.05, ge=0, le=1)
    warmup_steps: int | None = Field(
        default=None,
        ge=0,
        description="Warm-up in optimizer steps, replacing warmup_ratio when set; at most a "
        "tenth of the run's steps, so that a short run still trains at its rate.",
    )
    weight_decay: float = Field(default=0.01, ge=0)
    max_grad_norm: float = Field(default=1.0, gt=0)
    num_epochs: int = Field(default=3, ge=1, le=1000)
    max_steps: int | None = Field(
        default=None, ge=1, description="Stop after this many optimizer steps."
    )
    batch_size: int = Field(default=4, ge=1)
    gradient_accumulation_steps: int = Field(default=4, ge=1)
    max_seq_length: int = Field(default=2048, ge=64)
    micro_batch_tokens: Literal["auto"] | Annotated[int, Field(ge=1)] = Field(
        default="auto",
        description="Padded tokens per forward pass; auto: one sample per pass on a CPU, "
        "batch_size x max_seq_length on a GPU. Speed and memory only: a step still takes "
        "batch_size x gradient_accumulation_steps samples.",
    )
    save_steps: int = Field(default=200, ge=1)
    save_total_limit: int = Field(default=2, ge=1)
    eval_steps: int | None = Field(
        default=None, ge=1, description="None: evaluate at each checkpoint."
    )
    eval_fraction: float = Field(
        default=0.1,
        ge=0,
        le=0.5,
        description="Held out for eval when the dataset has no eval split.",
    )
    bf16: Literal["auto"] | bool = "auto"
    gradient_checkpointing: Literal["auto"] | bool = "auto"
    packing: Literal["auto"] | bool = "auto"
    seed: int = Field(default=42, ge=0)
    lora: LoraSettings = LoraSettings()
    merge_lora: bool = False
    tokens_per_s: float | None = Field(
        default=None, gt=0, description="Throughput for time estimates."
    )
    dataset: DatasetRequirements = DatasetRequirements()
    gate: GateSettings = GateSettings()

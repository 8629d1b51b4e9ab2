"""A job's memory plan and time estimate, from its resolved configuration (no torch).

:func:`plan_job` plans a :class:`~services.training.config.ResolvedConfig` for the device
(``model_shape.device_memory``) and :func:`apply_plan` writes the plan into it: the
strategy and its numbers under ``"plan"`` of the run's ``config.json``, and the settings
it changed (``batch_size``, ``gradient_accumulation_steps`` and ``micro_batch_tokens`` so
that a step still takes as many samples; ``gradient_checkpointing``) with the source
``plan``. A plan that does not fit raises :class:`MemoryPlanError` before anything loads.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from services.training.config import ResolvedConfig
from services.training.errors import TrainingError
from services.training.memory_plan import (
    MemoryPlan,
    ModelShape,
    Settings,
    choose,
    fallback,
    job_devices,
)
from services.training.model_shape import device_memory, gpu_count, model_shape
from services.training.modelinfo import estimate_seconds

CHARS_PER_TOKEN = 4  # a rough count of dataset tokens from its characters, for the estimate


class MemoryPlanError(TrainingError):
    """No strategy of the run's kind fits the device: the message has the numbers and the
    ways out. ``plan`` is the cheapest plan that was tried."""

    def __init__(self, plan: MemoryPlan):
        super().__init__(plan.reason)
        self.plan = plan


def run_settings(resolved: ResolvedConfig, device: str) -> tuple[Settings, bool]:
    """The memory-relevant settings of a run on ``device`` (as the recipe will pick them),
    and whether the user fixed gradient checkpointing."""
    cfg = resolved.config
    cuda = device == "cuda"
    if isinstance(cfg.micro_batch_tokens, int):
        micro = max(1, cfg.micro_batch_tokens // cfg.max_seq_length)
    else:
        micro = cfg.batch_size if cuda else 1
    fixed = isinstance(cfg.gradient_checkpointing, bool)
    checkpointing = (
        bool(cfg.gradient_checkpointing)
        if fixed
        else cuda and resolved.model.category not in ("tiny", "small")
    )
    settings = Settings(
        kind=resolved.kind,
        device=device,
        bf16=cfg.bf16 if isinstance(cfg.bf16, bool) else cuda,
        seq_len=cfg.max_seq_length,
        micro_batch=micro,
        effective_batch=cfg.batch_size * cfg.gradient_accumulation_steps,
        checkpointing=checkpointing,
        lora_r=cfg.lora.r,
        load_bytes=0 if cuda else weight_file_bytes(Path(resolved.base_model), resolved),
    )
    return settings, fixed


def weight_file_bytes(base: Path, resolved: ResolvedConfig) -> int:
    """Bytes of the safetensors files a model loads from; a GGUF or a model without them is
    loaded from its fp32 conversion (4 bytes a parameter)."""
    files = sorted(base.glob("*.safetensors")) if base.is_dir() else []
    files = [f for f in files if not f.name.startswith("adapter_")]
    if files:
        return sum(f.stat().st_size for f in files)
    return 4 * resolved.model.params


def plan_job(
    resolved: ResolvedConfig,
    shape: ModelShape,
    *,
    device: str = "auto",
    gpu_memory_gb: float | None = None,
    memory_limit_mb: int | None = None,
    launcher: str | None = None,
    nproc: int | None = None,
) -> MemoryPlan:
    """The best plan that fits (``fits`` False, with ``reason``, when none does)."""
    kind, gib, source = device_memory(
        device=device, gpu_memory_gb=gpu_memory_gb, memory_limit_mb=memory_limit_mb
    )
    settings, fixed = run_settings(resolved, kind)
    return choose(
        shape,
        settings,
        device_gib=gib,
        device_source=source,
        checkpointing_fixed=fixed,
        devices=job_devices(launcher, gpu_count() if kind == "cuda" else 0, nproc),
    )


def apply_plan(resolved: ResolvedConfig, plan: MemoryPlan, **extra: Any) -> ResolvedConfig:
    """``resolved`` with the plan's settings and ``"plan"`` (plus ``extra`` in it)."""
    cfg = resolved.config
    settings, _ = run_settings(resolved, plan.device)
    changes: dict[str, Any] = {}
    if plan.micro_batch != settings.micro_batch:
        changes["micro_batch_tokens"] = plan.micro_batch * cfg.max_seq_length
        if plan.micro_batch < cfg.batch_size:
            changes["batch_size"] = plan.micro_batch
            changes["gradient_accumulation_steps"] = plan.gradient_accumulation_steps
    if plan.gradient_checkpointing != settings.checkpointing:
        changes["gradient_checkpointing"] = plan.gradient_checkpointing
    config = cfg.model_copy(update=changes)
    sources = {**resolved.sources, **dict.fromkeys(changes, "plan")}
    record = {**plan.to_dict(), "changed": changes, **extra}
    return replace(resolved, config=config, sources=sources, plan=record)


def plan_fallback(resolved: ResolvedConfig) -> ResolvedConfig | None:
    """After an out-of-memory failure: ``resolved`` with the next cheaper plan, its
    ``fallback_from`` the plan that failed; None when there is none (or no plan)."""
    record = resolved.plan
    if not record:
        return None
    shape = model_shape(Path(resolved.base_model))
    failed = _plan_from_record(record)
    settings, _ = run_settings(resolved, failed.device)
    nxt = fallback(failed, shape, settings)
    if nxt is None:
        return None
    keep = {k: record[k] for k in ("estimate_s", "tokens", "warnings") if k in record}
    return apply_plan(resolved, nxt, **keep)


def _plan_from_record(record: dict[str, Any]) -> MemoryPlan:
    from services.training.memory_plan import Estimate

    fields = {k: v for k, v in record.items() if k in MemoryPlan.__dataclass_fields__}
    fields["estimate"] = Estimate(**record["estimate"])
    return MemoryPlan(**fields)


def dataset_tokens(path: Path) -> int:
    """About how many tokens a dataset file holds (its characters / CHARS_PER_TOKEN)."""
    try:
        return path.stat().st_size // CHARS_PER_TOKEN
    except OSError:
        return 0


def estimate_s(
    resolved: ResolvedConfig, plan: MemoryPlan, tokens: int, *, nproc: int | None = None
) -> float:
    """Seconds the job's training should take (``modelinfo.estimate_seconds``) over
    ``nproc`` devices (default: the plan's)."""
    cfg = resolved.config
    kind: Literal["lora", "full"] = "full" if plan.strategy.startswith("full") else "lora"
    seconds = estimate_seconds(
        tokens,
        params=plan.params,
        kind=kind,
        epochs=cfg.num_epochs,
        tokens_per_s=cfg.tokens_per_s,
        device="cuda" if plan.device == "cuda" else "cpu",
    )
    if plan.strategy == "qlora":
        seconds *= 1.3  # dequantizing the base's weights at every pass
    return seconds / max(1, nproc or plan.devices)


def summary(plan: dict[str, Any]) -> str:
    """One line for people: strategy, peak and device memory, micro-batch, estimate."""
    eta = plan.get("estimate_s")
    text = (
        f"{plan['strategy']}: ~{plan['peak_gib']:.1f} GiB of {plan['device_gib']:.0f} GiB "
        f"({plan['device']}), micro-batch {plan['micro_batch']} x "
        f"{plan['gradient_accumulation_steps']}"
        + (", gradient checkpointing" if plan.get("gradient_checkpointing") else "")
    )
    if eta is not None:
        text += f", about {_duration(float(eta))}"
    if plan.get("fallback_from"):
        text += f" (after running out of memory with {plan['fallback_from']['strategy']})"
    return text


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"

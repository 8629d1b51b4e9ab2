"""A training job's memory plan and time estimate without queueing or loading anything:
``personad train PROFILE --dry-run --base-model M --gpu-memory-gb N`` (no daemon needed).

The base model needs only its ``config.json`` (or GGUF metadata, or safetensors headers):
a directory holding just ``config.json`` can be planned, and a hub id is planned from its
cached ``config.json`` (fetched alone when it is not cached and the machine is online). The
profile's eligible samples (when the ledger has the profile) give the dataset size and,
at about 4 characters a token, the tokens the time estimate counts; without them the
configuration is resolved for an empty dataset and no time is estimated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.curation import DEFAULT_ETC_DIR
from services.curation.sample import Sample
from services.ledger import Ledger
from services.settings import Settings
from services.training.base_model import parse_spec
from services.training.config import resolve_config
from services.training.hub_download import hub_cache
from services.training.job_memory import CHARS_PER_TOKEN, apply_plan, estimate_s, plan_job
from services.training.model_shape import hub_config, model_shape
from services.training.ollama_base import base_warning


def base_location(spec: str, cache_dir: Path | None = None) -> Path:
    """Where to read the model's shapes: its file or directory; for a hub id the directory
    of its ``config.json`` (found in ``<cache_dir>/hub`` or the Hugging Face cache, else
    fetched alone: nothing else is)."""
    parsed = parse_spec(spec)
    if parsed.kind == "hub":
        hub_dir = None if cache_dir is None else hub_cache(cache_dir)
        return hub_config(parsed.location, hub_dir).parent
    return Path(parsed.location)


def profile_dataset(settings: Settings, profile: str) -> tuple[int, int]:
    """(eligible samples, about how many tokens they hold) of a profile; (0, 0) without a
    ledger or the profile."""
    if not settings.ledger_path.exists():
        return 0, 0
    with Ledger(settings.ledger_path, migrate=False) as ledger:
        if profile not in ledger.profiles():
            return 0, 0
        samples = [Sample.from_record(r) for r in ledger.sample_records(profile)]
    eligible = [s for s in samples if s.eligible]
    chars = sum(len(s.prompt) + len(s.response_text) for s in eligible)
    return len(eligible), chars // CHARS_PER_TOKEN


def preview(
    settings: Settings,
    profile: str,
    *,
    kind: str = "lora",
    mode: str | None = None,
    preset: str | None = None,
    job_config: dict[str, Any] | None = None,
    base_model: str | None = None,
    gpu_memory_gb: float | None = None,
    etc_dir: Path = DEFAULT_ETC_DIR,
) -> dict[str, Any]:
    """``{"plan": {...}, "profile", "kind", "base_model", "model", "n_samples", "config"}``;
    ``plan.fits`` False with ``plan.reason`` when nothing fits. Raises the services' errors
    (an unknown base model, a bad configuration)."""
    t = settings.training
    spec = base_model or t.base_model
    location = base_location(spec, settings.state_dir / "base-models")
    n_samples, tokens = profile_dataset(settings, profile)
    resolved = resolve_config(
        base_model=location,
        kind=kind,
        n_samples=n_samples,
        mode=mode,
        preset=preset,
        job_args={**t.config, **(job_config or {})},
        etc_dir=etc_dir,
    )
    plan = plan_job(
        resolved,
        model_shape(location),
        device=t.device,
        gpu_memory_gb=gpu_memory_gb if gpu_memory_gb is not None else t.gpu_memory_gb,
        memory_limit_mb=t.memory_limit_mb,
    )
    extra: dict[str, Any] = {"tokens": tokens}
    if tokens:
        extra["estimate_s"] = round(estimate_s(resolved, plan, tokens), 1)
    planned = apply_plan(resolved, plan, **extra)
    cfg = planned.config
    warning = base_warning(spec)
    return {
        "plan": planned.plan,
        "warnings": [warning] if warning else [],
        "profile": profile,
        "kind": kind,
        "mode": mode,
        "base_model": spec,
        "model": resolved.model.to_dict(),
        "n_samples": n_samples,
        "config": {
            "batch_size": cfg.batch_size,
            "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
            "micro_batch_tokens": cfg.micro_batch_tokens,
            "max_seq_length": cfg.max_seq_length,
            "gradient_checkpointing": cfg.gradient_checkpointing,
            "lora_r": cfg.lora.r,
            "num_epochs": cfg.num_epochs,
        },
    }

"""What a training job will do, said before it starts (Cortex's summary): the model and its
size category, the dataset's size and task type, the preset, the key hyperparameters with
the layer each came from, the memory plan and the time estimate, and whether the job will
be skipped. ``train`` answers with it, ``train --dry-run`` prints it without queueing.

It reads the ledger and resolves the configuration exactly as the job supervisor will
(:func:`plan_for_job` is the supervisor's plan too); only the memory plan's device and the
token count are estimates (the run itself tokenizes with the model's tokenizer).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from services.curation import Sample
from services.dataset_build import select_samples
from services.errors import PersonadError
from services.ledger import Ledger
from services.lifecycle import JobPlan, ProfileHistory, plan_full, plan_lora, skip_reason
from services.settings import TriggerSettings
from services.token_stats import TokenCounter, estimate_tokens
from services.training.base_model import locate
from services.training.config import ResolvedConfig, resolve_config
from services.training.modelinfo import estimate_seconds
from services.training.ollama_base import base_warning

# The hyperparameters a person checks before a job, in this order.
KEY_SETTINGS = (
    "learning_rate",
    "num_epochs",
    "batch_size",
    "gradient_accumulation_steps",
    "lora.r",
    "lora.alpha",
    "lora.scale",
    "lora.anchor",
    "max_seq_length",
    "warmup_steps",
    "warmup_ratio",
    "weight_decay",
    "max_grad_norm",
    "max_steps",
)
LORA_ONLY = ("lora.r", "lora.alpha", "lora.scale", "lora.anchor")


def plan_for_job(
    ledger: Ledger,
    profile: str,
    kind: str,
    *,
    job_id: int,
    original_base: str,
    triggers: TriggerSettings,
    everything: bool = False,
    base_model: str | None = None,
) -> JobPlan:
    """What a job trains on (``services.lifecycle`` decides; the ledger tells);
    ``base_model``: the base the job names, if it names one."""
    if kind == "full":
        return plan_full(original_base, base_model)
    current, base_job = ledger.current_base(profile)
    cut = ledger.last_training_cut(profile)
    new, old = ledger.sample_records_split(profile, cut)
    history = ProfileHistory(current, base_job, cut, new, old)
    return plan_lora(
        history,
        job_id=job_id,
        original_base=original_base,
        triggers=triggers,
        everything=everything,
        requested_base=base_model,
    )


def task_types(samples: Sequence[Sample]) -> dict[str, int]:
    """Cortex's task types of the samples: prose continuation is ``completion``, agent
    actions are ``structured``, everything else ``chat``."""
    counts: Counter[str] = Counter()
    for s in samples:
        if s.kind == "continuation":
            counts["completion"] += 1
        elif s.mode == "agent":
            counts["structured"] += 1
        else:
            counts["chat"] += 1
    return dict(counts)


@dataclass(frozen=True)
class SummaryRequest:
    """A job request as ``train`` received it."""

    profile: str
    kind: str
    mode: str | None = None
    preset: str | None = None
    config: dict[str, Any] | None = None
    everything: bool = False
    force: bool = False
    name: str | None = None
    base_model: str | None = None  # the job's own base (None: training.base_model)


@dataclass(frozen=True)
class SummaryContext:
    """What the daemon knows that a summary needs."""

    original_base: str
    triggers: TriggerSettings
    etc_dir: Path
    mode_minimum: Callable[[str], int]
    job_config: dict[str, Any]  # the training.config setting (a job's config wins)
    max_samples: int | None = None
    device: str = "auto"
    plan: Callable[[ResolvedConfig, int], dict[str, Any] | None] | None = None
    tokens: Callable[[Path], TokenCounter] | None = None
    cache_dir: Path | None = None  # <state>/base-models: converted and downloaded bases


def job_summary(
    ledger: Ledger, req: SummaryRequest, ctx: SummaryContext, job_id: int = 0
) -> dict[str, Any]:
    """The summary of ``req`` (see the module doc). Raises the services' errors (an
    invalid ``--set`` key is a ``TrainingConfigError``) with reasons for people."""
    planned = plan_for_job(
        ledger,
        req.profile,
        req.kind,
        job_id=job_id,
        original_base=ctx.original_base,
        triggers=ctx.triggers,
        everything=req.everything,
        base_model=req.base_model,
    )
    pool = (
        planned.samples
        if planned.samples is not None
        else [Sample.from_record(r) for r in ledger.sample_records(req.profile)]
    )
    chosen = select_samples(pool, mode=req.mode, max_samples=ctx.max_samples)
    train = [s for s in chosen if s.split == "train"]
    location = locate(planned.base, ctx.cache_dir)
    resolved = resolve_config(
        base_model=location,
        kind=req.kind,
        n_samples=len(train),
        mode=req.mode,
        preset=req.preset,
        job_args={**ctx.job_config, **(req.config or {})},
        etc_dir=ctx.etc_dir,
    )
    counter = ctx.tokens(location) if ctx.tokens else TokenCounter(estimate_tokens, "")
    tokens = sum(counter.count(f"{s.prompt}\n{s.response}") for s in train)
    plan = ctx.plan(resolved, tokens) if ctx.plan else None
    types = task_types(chosen)
    return {
        "profile": req.profile,
        "kind": req.kind,
        "mode": req.mode,
        "preset": req.preset or "balanced",
        "name": req.name,
        "model": {"base": planned.base, **resolved.model.to_dict(), **_warning(planned.base)},
        "dataset": {
            "samples": len(chosen),
            "train": len(train),
            "eval": len(chosen) - len(train),
            "all": req.kind == "full" or req.everything,
            "replayed": planned.summary.get("replayed"),
            "task_type": max(types, key=lambda t: types[t]) if types else None,
            "task_types": types,
            "tokens": tokens,
            "tokenizer": counter.source or None,
        },
        "hyperparameters": _key_settings(resolved),
        "steps": optimizer_steps(resolved, len(train)),
        "estimate_s": _estimate(resolved, plan, tokens, ctx.device),
        "plan": plan,
        "skip": skip_reason(
            req.kind,
            req.mode,
            len(train),
            triggers=ctx.triggers,
            mode_minimum=ctx.mode_minimum,
            force=req.force,
            required=resolved.config.dataset.required_samples,
            everything=req.everything,
        ),
    }


def _warning(base: str) -> dict[str, str]:
    """``{"warning": ...}`` when the base trains worse than its original weights would."""
    warning = base_warning(base)
    return {"warning": warning} if warning else {}


def optimizer_steps(resolved: ResolvedConfig, n_train: int) -> int:
    """Optimizer steps the run will take (``max_steps`` caps them)."""
    cfg = resolved.config
    per_epoch = math.ceil(n_train / (cfg.batch_size * cfg.gradient_accumulation_steps))
    steps = per_epoch * cfg.num_epochs
    return min(steps, cfg.max_steps) if cfg.max_steps else steps


def _key_settings(resolved: ResolvedConfig) -> dict[str, dict[str, Any]]:
    flat = resolved.config.model_dump(mode="json")
    out: dict[str, dict[str, Any]] = {}
    for key in KEY_SETTINGS:
        if resolved.kind == "full" and key in LORA_ONLY:
            continue
        node: Any = flat
        for part in key.split("."):
            node = node[part]
        if node is None and key in ("warmup_steps", "max_steps"):
            continue
        if key == "warmup_ratio" and flat.get("warmup_steps") is not None:
            continue
        out[key] = {"value": node, "source": resolved.sources.get(key, "default")}
    return out


def _estimate(
    resolved: ResolvedConfig, plan: dict[str, Any] | None, tokens: int, device: str
) -> float:
    if plan and plan.get("estimate_s") is not None:
        return round(float(plan["estimate_s"]), 1)
    kind: Literal["lora", "full"] = "full" if resolved.kind == "full" else "lora"
    seconds = estimate_seconds(
        tokens,
        params=resolved.model.params,
        kind=kind,
        epochs=resolved.config.num_epochs,
        tokens_per_s=resolved.config.tokens_per_s,
        device="cuda" if device == "cuda" else "cpu",
    )
    return round(seconds, 1)


def memory_plan(
    device: str, gpu_memory_gb: float | None, memory_limit_mb: int | None
) -> Callable[[ResolvedConfig, int], dict[str, Any] | None]:
    """The memory planner's plan of a resolved run (``services.training.job_memory``), with
    its time estimate; None when the model's shapes cannot be read."""
    from services.training.job_memory import estimate_s, plan_job
    from services.training.model_shape import model_shape

    def plan(resolved: ResolvedConfig, tokens: int) -> dict[str, Any] | None:
        try:
            shape = model_shape(Path(resolved.base_model))
            chosen = plan_job(
                resolved,
                shape,
                device=device,
                gpu_memory_gb=gpu_memory_gb,
                memory_limit_mb=memory_limit_mb,
            )
        except (PersonadError, OSError, ValueError):
            return None
        return {
            **chosen.to_dict(),
            "estimate_s": round(estimate_s(resolved, chosen, tokens), 1),
        }

    return plan

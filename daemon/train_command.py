"""The `train` socket command: checking a request, saying what the job will do
(:mod:`services.job_summary`), and queueing it (or, with ``dry_run``, not)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from daemon.control import CommandError
from services.curation import DEFAULT_ETC_DIR, load_mode_config
from services.errors import PersonadError
from services.job_summary import SummaryContext, SummaryRequest, job_summary, memory_plan
from services.ledger import Ledger
from services.profile_names import RULE, is_valid_profile_name
from services.settings import Settings
from services.token_stats import token_counter
from services.training.base_model import parse_spec
from services.training.errors import TrainingConfigError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")


def train_request(args: dict[str, Any]) -> SummaryRequest:
    """A `train` request from the socket's arguments; bad ones raise ``bad_args``."""
    profile = args.get("profile")
    if not isinstance(profile, str) or not profile:
        raise CommandError("bad_args", "'profile' must be a non-empty string")
    if not is_valid_profile_name(profile):
        raise CommandError("bad_args", f"invalid profile name {profile!r}: {RULE}")
    kind = args.get("kind", "lora")
    if kind not in ("lora", "full"):
        raise CommandError("bad_args", "'kind' must be 'lora' or 'full'")
    mode = args.get("mode")
    if mode is not None and mode not in ("dual", "emulation", "agent"):
        raise CommandError("bad_args", "'mode' must be dual, emulation or agent")
    preset = args.get("preset")
    if preset is not None and preset not in ("quick", "balanced", "quality"):
        raise CommandError("bad_args", "'preset' must be quick, balanced or quality")
    config = args.get("config") or {}
    if not isinstance(config, dict):
        raise CommandError("bad_args", "'config' must be an object of settings")
    name = args.get("name")
    if name is not None and not (isinstance(name, str) and NAME.fullmatch(name)):
        raise CommandError(
            "bad_args",
            "'name' must be 1 to 80 letters, digits, '.', '_' or '-', starting with a "
            f"letter or digit, not {name!r}",
        )
    base_model = args.get("base_model")
    if base_model is not None:
        if not isinstance(base_model, str) or not base_model:
            raise CommandError("bad_args", "'base_model' must be a non-empty string")
        try:
            parse_spec(base_model)
        except PersonadError as exc:
            raise CommandError("bad_args", str(exc)) from exc
    return SummaryRequest(
        profile=profile,
        kind=kind,
        mode=mode,
        preset=preset,
        config=config,
        everything=bool(args.get("all")),
        force=bool(args.get("force")),
        name=name,
        base_model=base_model,
    )


def summary_context(settings: Settings) -> SummaryContext:
    t = settings.training
    return SummaryContext(
        original_base=t.base_model,
        triggers=settings.triggers,
        etc_dir=DEFAULT_ETC_DIR,
        mode_minimum=lambda mode: load_mode_config(mode).thresholds("full")[0],
        job_config=dict(t.config),
        max_samples=t.max_samples,
        device=t.device,
        plan=memory_plan(t.device, t.gpu_memory_gb, t.memory_limit_mb),
        tokens=lambda location: token_counter(location, settings.state_dir / "base-models"),
        cache_dir=settings.state_dir / "base-models",
    )


def summarize(ledger: Ledger, req: SummaryRequest, ctx: SummaryContext) -> dict[str, Any]:
    """The job's summary; an invalid training setting is refused (``bad_args``), any other
    problem is said in the summary's ``error`` (the job itself will report it)."""
    try:
        return job_summary(ledger, req, ctx)
    except TrainingConfigError as exc:
        raise CommandError("bad_args", f"invalid training setting: {exc}") from exc
    except (PersonadError, OSError) as exc:
        return {"profile": req.profile, "kind": req.kind, "error": str(exc)}


def queue_job(
    ledger: Ledger, req: SummaryRequest, ctx: SummaryContext, *, dry_run: bool = False
) -> dict[str, Any]:
    """Summarize, then queue (unless ``dry_run``): ``{"job", "created", "coalesced"?,
    "examples", "summary"}``, or ``{"dry_run": true, "summary", "plan"}``."""
    summary = summarize(ledger, req, ctx)
    if dry_run:
        return {"dry_run": True, "summary": summary, "plan": summary.get("plan")}
    request = {
        "preset": req.preset,
        "config": req.config or {},
        "force": req.force,
        "all": req.everything,
        "name": req.name,
        "base_model": req.base_model,
    }
    job, created = ledger.enqueue_job(
        req.profile, req.kind, mode=req.mode, args=request, reason="manual"
    )
    out: dict[str, Any] = {
        "job": job.to_dict(),
        "created": created,
        "examples": (summary.get("dataset") or {}).get("train"),
        "summary": summary,
    }
    if not created:
        out["coalesced"] = (
            f"the same request (profile {req.profile}, kind {req.kind}, mode "
            f"{req.mode or 'all'}{', base ' + req.base_model if req.base_model else ''}) is "
            f"already {job.state} as job {job.id}"
        )
    return out


def model_size(artifact: Path) -> int | None:
    """Bytes of a run's artifact (``adapter/`` or ``model/``); None without one."""
    if not artifact.is_dir():
        return None
    return sum(p.stat().st_size for p in artifact.rglob("*") if p.is_file())


def job_result(
    result: dict[str, Any], plan: dict[str, Any], examples: int, run_dir: Path, kind: str
) -> dict[str, Any]:
    """A trained job's result: the child's, with the lifecycle ``plan``, the ``examples``
    trained on, ``training_seconds`` and the artifact's size."""
    size = model_size(run_dir / ("adapter" if kind == "lora" else "model"))
    return {
        **result,
        "plan": plan,
        "examples": examples,
        "training_seconds": (result.get("metrics") or {}).get("train_seconds"),
        "model_size_bytes": size,
        "model_size_mb": None if size is None else round(size / 1e6, 3),
    }

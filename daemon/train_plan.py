"""``personad train PROFILE --dry-run`` planned here, without the daemon
(``services.plan_preview``): with ``--base-model`` or ``--gpu-memory-gb`` (plan for a model
not downloaded, a GPU not bought), or when the daemon is not running. Otherwise the daemon
answers a dry run with the job's whole summary (``daemon.train_command``).

Without ``--dry-run``, ``--base-model`` is the job's own base (:func:`job_base`: checked
here, a path made absolute for the daemon)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from daemon.render import console
from services.errors import PersonadError
from services.settings import Settings

EXIT_FAILED = 1


def add_flags(train: argparse.ArgumentParser) -> None:
    train.add_argument(
        "--base-model",
        help="train this job on this base model instead of training.base_model (a model "
        "directory, a .gguf file, embedded:NAME, ollama:NAME (a model installed in Ollama) "
        "or a hub id ORG/NAME, downloaded when missing); with --dry-run, plan for it",
    )
    train.add_argument(
        "--gpu-memory-gb", type=float, help="plan for a GPU of this many GiB (with --dry-run)"
    )


def dry_run(settings: Settings, args: argparse.Namespace) -> int:
    """Print the plan; 0 when it fits, 1 when it does not (or cannot be made)."""
    from services.plan_preview import preview

    try:
        result = preview(
            settings,
            args.profile,
            kind=args.kind,
            mode=args.mode,
            preset=args.preset,
            base_model=args.base_model,
            gpu_memory_gb=args.gpu_memory_gb,
        )
    except PersonadError as exc:
        print(f"personad: cannot plan: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps({"dry_run": True, **result}, indent=2, default=str))
    else:
        show(result)
    return 0 if result["plan"]["fits"] else EXIT_FAILED


def show(result: dict[str, Any]) -> None:
    """The plan for people."""
    from services.training.job_memory import summary

    plan = result["plan"]
    model = result.get("model") or {}
    params = f" ({model['params'] / 1e9:.2f}B)" if model.get("params") else ""
    console.print(f"plan for {result['kind']} of {result['base_model']}{params}:", markup=False)
    for warning in result.get("warnings") or []:
        console.print(f"  warning: {warning}", markup=False)
    if plan["fits"]:
        console.print(f"  {summary(plan)}", markup=False)
    else:
        console.print(f"  does not fit: {plan['reason']}", markup=False)


def local(args: argparse.Namespace) -> bool:
    """Whether a dry run is planned here rather than by the daemon."""
    return bool(args.dry_run and (args.base_model or args.gpu_memory_gb is not None))


def misused(args: argparse.Namespace) -> str | None:
    """Why the train flags do not go together (or the base model names nothing usable),
    or None."""
    if not args.dry_run and args.gpu_memory_gb is not None:
        return "--gpu-memory-gb plans a job: use it with --dry-run"
    if args.base_model is not None and not args.dry_run:  # a dry run says it cannot plan
        try:
            args.base_model = job_base(args.base_model)
        except PersonadError as exc:
            return f"--base-model: {exc}"
    return None


def job_base(spec: str) -> str:
    """A base model spec as the daemon must receive it: a local path made absolute (the
    daemon runs elsewhere); PersonadError when it names nothing usable."""
    from services.training.base_model import parse_spec

    parse_spec(spec)
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec  # else a hub id, embedded:, ollama:

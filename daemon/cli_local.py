"""The `personad` subcommands that work without the daemon: `dataset`, `report`, `demo`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon import render
from daemon.cli_backup import run_backup, run_restore
from services.settings import Settings

EXIT_FAILED = 1


def _dataset(settings: Settings, args: argparse.Namespace) -> int:
    from services.curation import load_rules
    from services.errors import PersonadError
    from services.ledger import Ledger
    from services.persona_style import SYSTEM_FILE
    from services.run_prep import build_profile_dataset, new_run_dir, renderer_for

    if not settings.ledger_path.exists():
        print(
            f"personad: no ledger at {settings.ledger_path}: nothing ingested yet", file=sys.stderr
        )
        return EXIT_FAILED
    try:
        with Ledger(settings.ledger_path) as ledger:
            if args.profile not in ledger.profiles():
                known = ", ".join(ledger.profiles()) or "none"
                print(f"personad: no profile {args.profile!r} (known: {known})", file=sys.stderr)
                return EXIT_FAILED
            renderer = renderer_for(
                args.family,
                args.base_model or settings.training.base_model,
                settings.state_dir / "base-models",
            )
            out = args.out or new_run_dir(settings.state_dir, args.profile, "dataset")
            summary = build_profile_dataset(
                ledger,
                args.profile,
                out,
                renderer,
                load_rules(),
                mode=args.mode,
                max_samples=args.max_samples,
                tokens=_token_counter(settings, args.base_model or settings.training.base_model),
                system_file=settings.profiles_dir / args.profile / SYSTEM_FILE,
            )
    except PersonadError as exc:
        # A contaminated dataset lands here too, with the offending ids and tags.
        print(f"personad: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2, default=str))
    else:
        render.dataset(summary.to_dict(), summary.out_dir)
    return 0


def _token_counter(settings: Settings, base_model: str) -> Any:
    """The base model's tokenizer for a dataset's token statistics (else the estimate)."""
    from services.errors import PersonadError
    from services.token_stats import token_counter
    from services.training.base_model import locate

    cache_dir = settings.state_dir / "base-models"
    try:
        location = locate(base_model, cache_dir)
    except PersonadError:
        location = Path(base_model)
    return token_counter(location, cache_dir)


def _report(settings: Settings, args: argparse.Namespace) -> int:
    from services.ledger import Ledger
    from services.report import ReportError, latest_run, write_report

    target = Path(args.target)
    try:
        run_dir = target if target.is_dir() else latest_run(settings.state_dir, args.target)
        published = None
        if settings.ledger_path.exists():
            with Ledger(settings.ledger_path) as ledger:
                for profile in ledger.profiles():
                    for v in ledger.versions(profile):
                        if v["run_dir"] and Path(v["run_dir"]) == run_dir.resolve():
                            active = " (active)" if v["active"] else ""
                            published = f"{profile} v{v['version']}{active}"
        report = write_report(run_dir, args.out, published)
    except ReportError as exc:
        print(f"personad: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(
            json.dumps(
                {
                    "run_dir": str(report.run_dir),
                    "png": str(report.png),
                    "markdown": str(report.markdown),
                },
                indent=2,
            )
        )
    else:
        print(report.text)
        print(f"loss curves: {report.png}")
    return 0


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from daemon.demo import DemoError, run_demo
    from daemon.logs import configure_logging

    configure_logging("warning", "console")
    if args.json:  # people's lines to stderr, the result alone on stdout
        render.console.file = sys.stderr
    try:
        result = run_demo(
            args.dir,
            base_model=args.base_model,
            family=args.family,
            train_config=args.train_config,
            persona=args.persona,
        )
    except DemoError as exc:
        print(f"personad: demo failed: {exc} (see {args.dir / 'daemon.log'})", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    return 0


LOCAL_COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "demo": _demo,
    "dataset": _dataset,
    "report": _report,
    "backup": run_backup,
    "restore": run_restore,
}

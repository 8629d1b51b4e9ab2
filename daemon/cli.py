"""`personad`: run the daemon, or talk to it over the control socket.

Every socket command is a subcommand that prints for people and, with --json,
prints the raw result for programs. Exit status: 0 ok, 1 command failed,
2 bad usage or settings, 3 daemon not running.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from daemon import render
from daemon.client import ClientError, CommandFailed, ControlClient, DaemonNotRunning
from services.settings import Settings, SettingsError, load_settings

EXIT_FAILED, EXIT_USAGE, EXIT_NOT_RUNNING = 1, 2, 3


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML settings file (default: $PERSONAD_CONFIG)")
    p.add_argument("--state-dir", type=Path, help="override the state_dir setting")
    p.add_argument("--socket", type=Path, dest="socket_path", help="override socket_path")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="personad", description="Keep a personal language model in step with a person."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, json_flag: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _common(p)
        if json_flag:
            p.add_argument("--json", action="store_true", help="print the raw JSON result")
        return p

    run = command("run", "run the daemon in the foreground", json_flag=False)
    run.add_argument("--profiles-dir", type=Path, help="override the profiles_dir setting")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    run.add_argument("--log-format", choices=["auto", "json", "console"])

    command("ping", "check that the daemon answers")
    command("status", "the daemon, its profiles, jobs and schedules")

    search = command("search", "find a profile's memories closest to a query")
    search.add_argument("profile")
    search.add_argument("query")
    search.add_argument("-k", type=int, default=5, help="how many results (default 5)")

    rejects = command("rejects", "files and records that could not be ingested, and why")
    rejects.add_argument("profile", nargs="?")
    rejects.add_argument("--limit", type=int, default=200)

    reindex = command("reindex", "rebuild a profile's vector index from the ledger")
    reindex.add_argument("profile")

    dataset = command(
        "dataset", "build a training dataset from a profile's samples (no daemon needed)"
    )
    dataset.add_argument("profile")
    dataset.add_argument("--mode", choices=["dual", "emulation", "agent"])
    dataset.add_argument(
        "--max", type=int, dest="max_samples", help="at most N samples, best first"
    )
    family = dataset.add_mutually_exclusive_group()
    family.add_argument("--family", choices=["qwen", "llama", "phi", "gptj", "smollm"])
    family.add_argument("--base-model", help="render with this base model's chat template")
    dataset.add_argument("--out", type=Path, help="directory to write (default: a new run dir)")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        "state_dir": args.state_dir,
        "socket_path": args.socket_path,
    }
    if args.command == "run":
        overrides["profiles_dir"] = args.profiles_dir
        log = {k: v for k, v in (("level", args.log_level), ("format", args.log_format)) if v}
        if log:
            overrides["log"] = log
    return load_settings(args.config, overrides)


def _run_daemon(settings: Settings) -> int:
    from daemon.app import Daemon
    from daemon.lock import AlreadyRunning
    from daemon.logs import configure_logging
    from daemon.notify import Notifier

    configure_logging(settings.log.level, settings.log.format)
    try:
        return Daemon(settings, Notifier.from_environ(os.environ)).run()
    except AlreadyRunning as exc:
        print(f"personad: {exc}", file=sys.stderr)
        return EXIT_FAILED


Printer = Callable[[Any, argparse.Namespace], None]

# command -> (socket args from the CLI args, printer for people)
CLIENT_COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], dict[str, Any]], Printer]] = {
    "ping": (lambda a: {}, render.ping),
    "status": (lambda a: {}, render.status),
    "search": (lambda a: {"profile": a.profile, "query": a.query, "k": a.k}, render.search),
    "rejects": (lambda a: {"profile": a.profile, "limit": a.limit}, render.rejects),
    "reindex": (lambda a: {"profile": a.profile}, render.reindex),
}


def _dataset(settings: Settings, args: argparse.Namespace) -> int:
    from services.curation import CurationError, load_rules
    from services.ledger import Ledger, LedgerError
    from services.runs import build_profile_dataset, new_run_dir, renderer_for
    from services.schemas import SchemaError
    from services.training.errors import TrainingError

    if not settings.ledger_path.exists():
        print(
            f"personad: no ledger at {settings.ledger_path}: nothing ingested yet", file=sys.stderr
        )
        return EXIT_FAILED
    try:
        ledger = Ledger(settings.ledger_path)
        if args.profile not in ledger.profiles():
            known = ", ".join(ledger.profiles()) or "none"
            print(f"personad: no profile {args.profile!r} (known: {known})", file=sys.stderr)
            return EXIT_FAILED
        renderer = renderer_for(args.family, args.base_model or settings.training.base_model)
        out = args.out or new_run_dir(settings.state_dir, args.profile, "dataset")
        summary = build_profile_dataset(
            ledger,
            args.profile,
            out,
            renderer,
            load_rules(),
            mode=args.mode,
            max_samples=args.max_samples,
        )
    except (CurationError, LedgerError, SchemaError, TrainingError) as exc:
        # A contaminated dataset lands here too, with the offending ids and tags.
        print(f"personad: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2, default=str))
    else:
        render.dataset(summary.to_dict(), summary.out_dir)
    return 0


LOCAL_COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "dataset": _dataset,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args)
    except SettingsError as exc:
        print(f"personad: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "run":
        return _run_daemon(settings)
    if args.command in LOCAL_COMMANDS:
        return LOCAL_COMMANDS[args.command](settings, args)
    to_args, printer = CLIENT_COMMANDS[args.command]
    try:
        with ControlClient(settings.socket_file, timeout=600.0) as client:
            result = client.call(args.command, to_args(args))
    except DaemonNotRunning as exc:
        print(f"personad: {exc}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    except CommandFailed as exc:
        print(f"personad: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    except ClientError as exc:
        print(f"personad: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if getattr(args, "json", False):
        print(json.dumps(result, indent=2, default=str))
    else:
        printer(result, args)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

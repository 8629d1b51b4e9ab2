"""`personad`: run the daemon, or talk to it over the control socket.

Every socket command is a subcommand that prints for people and, with --json,
prints the raw result for programs. Exit status: 0 ok, 1 command failed,
2 bad usage or settings, 3 daemon not running.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from daemon import render, render_profile, train_plan
from daemon.cli_backup import add_commands as add_backup_commands
from daemon.cli_local import EXIT_FAILED, LOCAL_COMMANDS
from daemon.cli_profile import add_commands as add_profile_data_commands
from daemon.cli_profile import overrides, remember_args, remember_interactive
from daemon.client import ClientError, CommandFailed, ControlClient, DaemonNotRunning
from daemon.interrupt import Interrupted, interruptible
from services.profile_names import InvalidProfileName, check_profile_name
from services.settings import CONFIG_ENV, Settings, SettingsError, load_settings

EXIT_USAGE, EXIT_NOT_RUNNING = 2, 3


def _profile(text: str) -> str:
    """A profile argument: the one profile-name pattern, checked before the daemon is asked."""
    try:
        return check_profile_name(text)
    except InvalidProfileName as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML settings file (default: $PERSONAD_CONFIG)")
    p.add_argument("--state-dir", type=Path, help="override the state_dir setting")
    p.add_argument("--socket", type=Path, dest="socket_path", help="override socket_path")


class _Commands:
    """Adds subcommands: each has the common settings options and, unless told, --json."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self._sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(self, name: str, help_text: str, json_flag: bool = True) -> argparse.ArgumentParser:
        p = self._sub.add_parser(name, help=help_text, description=help_text)
        _common(p)
        if json_flag:
            p.add_argument("--json", action="store_true", help="print the raw JSON result")
        return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="personad", description="Keep a personal language model in step with a person."
    )
    commands = _Commands(parser)
    _daemon_commands(commands)
    _memory_commands(commands)
    _training_commands(commands)
    _profile_commands(commands)
    add_profile_data_commands(commands, _profile)
    _model_commands(commands)
    _dataset_command(commands)
    add_backup_commands(commands)
    return parser


def _daemon_commands(commands: _Commands) -> None:
    """run, ping, dashboard, status."""
    run = commands.add("run", "run the daemon in the foreground", json_flag=False)
    run.add_argument("--profiles-dir", type=Path, help="override the profiles_dir setting")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    run.add_argument("--log-format", choices=["auto", "json", "console"])

    commands.add("ping", "check that the daemon answers")
    commands.add("dashboard", "the dashboard's address with its token (the HTTP API)")
    status = commands.add("status", "the daemon, its profiles, jobs and schedules")
    status.add_argument("--watch", action="store_true", help="a live view, refreshed every second")
    status.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    status.add_argument("--iterations", type=int, help=argparse.SUPPRESS)


def _memory_commands(commands: _Commands) -> None:
    """search, rejects, reindex."""
    search = commands.add("search", "find a profile's memories closest to a query")
    search.add_argument("profile", type=_profile)
    search.add_argument("query")
    search.add_argument("-k", type=int, default=5, help="how many results (default 5)")

    rejects = commands.add("rejects", "files and records that could not be ingested, and why")
    rejects.add_argument("profile", nargs="?", type=_profile)
    rejects.add_argument("--limit", type=int, default=200)

    reindex = commands.add("reindex", "rebuild a profile's vector index from the ledger")
    reindex.add_argument("profile", type=_profile)


def _training_commands(commands: _Commands) -> None:
    """train, jobs, cancel."""
    train = commands.add("train", "queue a training job for a profile")
    train.add_argument("profile", type=_profile)
    train.add_argument("--kind", choices=["lora", "full"], default="lora")
    train.add_argument("--mode", choices=["dual", "emulation", "agent"])
    train.add_argument("--preset", choices=["quick", "balanced", "quality"])
    train.add_argument("--wait", action="store_true", help="follow the job until it ends")
    train.add_argument(
        "--force", action="store_true", help="train even below the minimum sample counts"
    )
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="an expert override of one hyperparameter for this job (e.g. lora.r=8, "
        "learning_rate=1e-4); repeatable; the value is read as JSON, else as text",
    )
    train.add_argument(
        "--all",
        action="store_true",
        help="train on the profile's whole eligible corpus, not only what is new",
    )
    train.add_argument(
        "--dry-run",
        action="store_true",
        help="say what the job would do (model, dataset, settings, memory, time); queue nothing",
    )
    train.add_argument("--name", help="the name of the published model (letters, digits, . _ -)")
    train_plan.add_flags(train)

    commands.add("jobs", "training jobs, newest first")
    cancel = commands.add("cancel", "cancel a queued or running job")
    cancel.add_argument("job", type=int)


def _profile_commands(commands: _Commands) -> None:
    """versions, rollback, pause, resume: a profile's models and whether it trains."""
    versions = commands.add("versions", "a profile's published model versions")
    versions.add_argument("profile", type=_profile)
    rollback = commands.add("rollback", "make an earlier version the active model")
    rollback.add_argument("profile", type=_profile)
    rollback.add_argument("--to", help="the version, e.g. v2 (default: the one before)")
    pause = commands.add("pause", "stop training a profile (or all); ingest goes on")
    pause.add_argument("profile", nargs="?", type=_profile)
    resume = commands.add("resume", "let a paused profile (or all) train again")
    resume.add_argument("profile", nargs="?", type=_profile)


def _model_commands(commands: _Commands) -> None:
    """ask, eval, demo, report: the model answering, its fidelity, the whole cycle, a run's
    report."""
    ask = commands.add("ask", "answer a question as the person (their memories + active model)")
    ask.add_argument("profile", type=_profile)
    ask.add_argument("question")
    ask.add_argument("-k", type=int, default=4, help="memories to retrieve (default 4)")
    ask.add_argument("--compare-base", action="store_true", help="also answer with the base model")

    demo = commands.add("demo", "the whole cycle on this machine, offline, in one go")
    demo.add_argument("--dir", type=Path, default=Path("demo"), help="an empty directory (./demo)")
    demo.add_argument("--base-model", default="embedded:smollm2", help=argparse.SUPPRESS)
    demo.add_argument("--family", help=argparse.SUPPRESS)
    demo.add_argument("--train-config", type=json.loads, help=argparse.SUPPRESS)
    demo.add_argument(
        "--persona", default="maren", choices=("maren", "odile"), help=argparse.SUPPRESS
    )

    evaluate = commands.add(
        "eval", "a published version's persona fidelity against the base model, on demand"
    )
    evaluate.add_argument("profile", type=_profile)
    evaluate.add_argument("--version", help="the version, e.g. v2 (default: the active one)")

    report = commands.add("report", "a run's loss curves (PNG), dataset quality, gate and version")
    report.add_argument("target", metavar="RUN_DIR|PROFILE")
    report.add_argument("--out", type=Path, help="where to write the PNG (default: in the run dir)")


def _dataset_command(commands: _Commands) -> None:
    dataset = commands.add(
        "dataset", "build a training dataset from a profile's samples (no daemon needed)"
    )
    dataset.add_argument("profile", type=_profile)
    dataset.add_argument("--mode", choices=["dual", "emulation", "agent"])
    dataset.add_argument(
        "--max", type=int, dest="max_samples", help="at most N samples, best first"
    )
    family = dataset.add_mutually_exclusive_group()
    family.add_argument("--family", choices=["qwen", "llama", "phi", "gptj", "smollm"])
    family.add_argument("--base-model", help="render with this base model's chat template")
    dataset.add_argument("--out", type=Path, help="directory to write (default: a new run dir)")


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
    settings = load_settings(args.config, overrides)
    if settings.config_file is not None:  # the same file for whatever reads the settings later
        os.environ[CONFIG_ENV] = str(settings.config_file.resolve())  # (and child processes)
    return settings


def _run_daemon(settings: Settings) -> int:
    from daemon.app import Daemon
    from daemon.lock import AlreadyRunning
    from daemon.logs import configure_logging
    from daemon.notify import Notifier
    from services.ledger import LedgerUnusable

    configure_logging(settings.log.level, settings.log.format)
    try:
        code = Daemon(settings, Notifier.from_environ(os.environ)).run()
    except (AlreadyRunning, LedgerUnusable) as exc:
        print(f"personad: {exc}", file=sys.stderr)
        return EXIT_FAILED
    # Everything is closed and committed. Leave without the interpreter's teardown:
    # native threads of torch or chromadb still winding down (a model still loading,
    # say) can abort the process there.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


Printer = Callable[[Any, argparse.Namespace], None]

# command -> (socket args from the CLI args, printer for people)
CLIENT_COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], dict[str, Any]], Printer]] = {
    "ping": (lambda a: {}, render.ping),
    "dashboard": (lambda a: {}, render.dashboard),
    "status": (lambda a: {}, render.status),
    "search": (lambda a: {"profile": a.profile, "query": a.query, "k": a.k}, render.search),
    "rejects": (lambda a: {"profile": a.profile, "limit": a.limit}, render.rejects),
    "reindex": (lambda a: {"profile": a.profile}, render.reindex),
    "train": (
        lambda a: {
            "profile": a.profile,
            "kind": a.kind,
            "mode": a.mode,
            "preset": a.preset,
            "force": a.force,
            "all": a.all,
            "config": overrides(a.overrides),
            "dry_run": a.dry_run,
            "name": a.name,
            "base_model": a.base_model,
        },
        render_profile.train,
    ),
    "stats": (lambda a: {"profile": a.profile}, render_profile.stats),
    "remember": (remember_args, render_profile.remembered),
    "jobs": (lambda a: {}, render.jobs),
    "cancel": (lambda a: {"job": a.job}, render.cancel),
    "versions": (lambda a: {"profile": a.profile}, render.versions),
    "rollback": (
        lambda a: {"profile": a.profile, "to": _version_number(a.to)},
        render.rolled_back,
    ),
    "ask": (
        lambda a: {
            "profile": a.profile,
            "question": a.question,
            "k": a.k,
            "compare_base": a.compare_base,
        },
        render.ask,
    ),
    "eval": (
        lambda a: {
            k: v
            for k, v in (
                ("profile", a.profile),
                ("version", _version_number(a.version, "--version")),
            )
            if v is not None
        },
        render.evaluated,
    ),
    "pause": (lambda a: {"profile": a.profile}, render.paused),
    "resume": (lambda a: {"profile": a.profile}, render.paused),
}


def _version_number(text: str | None, flag: str = "--to") -> int | None:
    if text is None:
        return None
    digits = text.lower().removeprefix("v")
    if not digits.isdigit():
        raise SystemExit(f"personad: {flag} takes a version like v2, not {text!r}")
    return int(digits)


def _wait_for_job(client: ControlClient, job_id: int, as_json: bool) -> int:
    """Follow a job until it ends; 0 when it succeeded."""
    job = render.follow_job(lambda: _find_job(client, job_id), quiet=as_json)
    if as_json:
        print(json.dumps(job, indent=2, default=str))
    else:
        render_profile.finished(job)
    return 0 if job["state"] == "succeeded" else EXIT_FAILED


def _cancel_started_job(settings: Settings, queued: dict[str, Any]) -> str:
    """train --wait interrupted: the job it queued is cancelled (the daemon stops its
    training child); a job it only joined (an identical request was already queued or
    running) goes on."""
    job_id = int(queued["job"]["id"])
    if not queued.get("created"):
        return f"job {job_id} was queued before this command and goes on (personad cancel {job_id})"
    try:
        with ControlClient(settings.socket_file, timeout=1.5) as client:
            state = client.call("cancel", {"job": job_id})["state"]
    except CommandFailed as exc:  # it ended meanwhile
        return f"job {job_id} was not cancelled: {exc.message}"
    except ClientError as exc:
        return f"job {job_id} could not be cancelled ({exc}); personad cancel {job_id} stops it"
    return f"job {job_id} {state} (the daemon stops its training child)"


def _find_job(client: ControlClient, job_id: int) -> dict[str, Any]:
    for job in client.call("jobs", {"limit": 1000})["jobs"]:
        if job["id"] == job_id:
            return dict(job)
    raise ClientError(f"job {job_id} is gone from the ledger")


def main(argv: Sequence[str] | None = None) -> int:
    previous = os.environ.get(CONFIG_ENV)
    try:
        return _main(argv)
    finally:  # --config is this command's, not its caller's (a script or test in one process)
        if previous is None:
            os.environ.pop(CONFIG_ENV, None)
        else:
            os.environ[CONFIG_ENV] = previous


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args)
    except SettingsError as exc:
        print(f"personad: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "run":
        return _run_daemon(settings)  # the daemon drains on SIGINT/SIGTERM itself
    try:
        with interruptible():
            return _command(settings, args)
    except Interrupted as exc:
        print(_interrupted_line(args, exc), file=sys.stderr, flush=True)
        return exc.exit_code


def _interrupted_line(args: argparse.Namespace, exc: Interrupted) -> str:
    """One line: which command the signal stopped, and what its clean-up stopped."""
    what = args.command
    if args.command == "status" and args.watch:
        what = "status --watch"
    elif args.command == "train" and args.wait:
        what = "train --wait"
    done = "; ".join(exc.stopped) if exc.stopped else "nothing is left running"
    during = f" {exc.during}" if exc.during else ""
    return f"personad: {what} interrupted ({exc.name}){during}; {done}"


def _command(settings: Settings, args: argparse.Namespace) -> int:
    if args.command == "status" and args.watch:
        from daemon.status_view import watch

        return watch(settings.socket_file, args.interval, args.iterations)
    if args.command == "train" and train_plan.misused(args):
        print(f"personad: {train_plan.misused(args)}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "train" and train_plan.local(args):
        return train_plan.dry_run(settings, args)
    if args.command in LOCAL_COMMANDS:
        return LOCAL_COMMANDS[args.command](settings, args)
    to_args, printer = CLIENT_COMMANDS[args.command]
    try:
        # eval waits for its child (ask.timeout_s x 4 at most), every other command less.
        timeout = settings.ask.timeout_s * 4 + 60 if args.command == "eval" else 600.0
        with ControlClient(settings.socket_file, timeout=timeout) as client:
            if args.command == "remember" and args.interactive:
                return remember_interactive(client, args)
            result = client.call(args.command, to_args(args))
            if args.command == "train" and args.wait and not args.dry_run:
                if not args.json:
                    printer(result, args)
                try:
                    return _wait_for_job(client, int(result["job"]["id"]), args.json)
                except Interrupted as exc:
                    exc.stopped.append(_cancel_started_job(settings, result))
                    raise
    except DaemonNotRunning as exc:
        if args.command == "train" and args.dry_run:  # planning needs no daemon
            return train_plan.dry_run(settings, args)
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

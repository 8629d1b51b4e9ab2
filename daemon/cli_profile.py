"""`personad` subcommands about a profile's data: `stats` and `remember` (with
`--interactive`), and the `train --set KEY=VALUE` parser."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from daemon import render_profile
from daemon.client import CommandFailed, ControlClient

DONE = "done"


def add_commands(commands: Any, profile_type: Callable[[str], str]) -> None:
    """Add `stats` and `remember` to the CLI (``commands`` is cli's ``_Commands``)."""
    stats = commands.add("stats", "a profile's training statistics (ZEGA's fields)")
    stats.add_argument("profile", type=profile_type)

    remember = commands.add(
        "remember", "write a prompt/completion pair into a profile's memory folder"
    )
    remember.add_argument("profile", type=profile_type)
    remember.add_argument("--prompt", help="what was asked or said")
    remember.add_argument("--completion", help="what the person answered")
    remember.add_argument("--quality", type=float, help="quality 0..10 (default: curated)")
    remember.add_argument(
        "--metadata", type=_json_object, help='a JSON object, e.g. \'{"topic": "cooking"}\''
    )
    remember.add_argument(
        "--interactive",
        action="store_true",
        help=f"ask for prompt/response pairs until '{DONE}'",
    )


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc.msg}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('must be a JSON object, e.g. {"topic": "cooking"}')
    return value


def remember_args(a: argparse.Namespace) -> dict[str, Any]:
    """The socket args of a one-shot `remember`."""
    if a.prompt is None or a.completion is None:
        raise SystemExit("personad: remember needs --prompt and --completion (or --interactive)")
    return {
        k: v
        for k, v in (
            ("profile", a.profile),
            ("prompt", a.prompt),
            ("completion", a.completion),
            ("quality", a.quality),
            ("metadata", a.metadata),
        )
        if v is not None
    }


def overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``["lora.r=8", "lr_scheduler=linear"]`` -> ``{"lora.r": 8, "lr_scheduler": "linear"}``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key or not text.strip():
            raise SystemExit(f"personad: --set takes KEY=VALUE (e.g. lora.r=8), not {pair!r}")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text.strip()
    return out


def _ask(prompt: str, stdin: TextIO, stdout: TextIO) -> str | None:
    """One line from the person (None at end of input or ``done``)."""
    stdout.write(prompt)
    stdout.flush()
    line = stdin.readline()
    if not line:
        return None
    text = line.strip()
    return None if text.lower() == DONE else text


def remember_interactive(
    client: ControlClient,
    args: argparse.Namespace,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    """Ask for prompt/response pairs until ``done`` (or end of input); each is remembered
    at once. Returns the exit status (0 unless nothing could be remembered)."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stdout.write(f"Pairs for {args.profile}; type '{DONE}' to finish.\n")
    saved: list[dict[str, Any]] = []
    failed = 0
    while True:
        prompt = _ask("prompt> ", stdin, stdout)
        if prompt is None:
            break
        response = _ask("response> ", stdin, stdout)
        if response is None:
            break
        call = {"profile": args.profile, "prompt": prompt, "completion": response}
        if args.quality is not None:
            call["quality"] = args.quality
        if args.metadata is not None:
            call["metadata"] = args.metadata
        try:
            result = client.call("remember", call)
        except CommandFailed as exc:
            failed += 1
            stdout.write(f"not remembered: {exc.message}\n")
            continue
        saved.append(result)
        if not args.json:
            render_profile.remembered(result, args)
    if args.json:
        stdout.write(json.dumps({"remembered": saved, "failed": failed}, indent=2) + "\n")
    else:
        stdout.write(f"{len(saved)} pair(s) remembered, {failed} refused\n")
    return 1 if failed and not saved else 0

"""`personad backup DEST` (online) and `personad restore SRC [--force]` (daemon stopped)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from daemon.lock import AlreadyRunning, InstanceLock
from services.backup import BackupError, backup, restore
from services.ledger import LedgerError
from services.settings import Settings

EXIT_FAILED = 1


def add_commands(sub: Any) -> None:
    """The two subcommands, on the CLI's ``_Commands``."""
    bk = sub.add("backup", "back the state up into DEST while the daemon runs (or not)")
    bk.add_argument("dest", type=Path, metavar="DEST", help="a new or empty directory")
    rs = sub.add("restore", "restore a backup into the state directory (daemon stopped)")
    rs.add_argument("src", type=Path, metavar="SRC", help="a directory written by backup")
    rs.add_argument(
        "--force",
        action="store_true",
        help="restore over a state that is not empty (it is moved into replaced-<time>/)",
    )


def _counts(c: dict[str, Any]) -> str:
    active = ", ".join(f"{p} v{v}" for p, v in sorted(c["active"].items())) or "none"
    return (
        f"{c['memories']} memories, {c['samples']} samples, {c['jobs']} jobs, "
        f"{c['versions']} versions (active: {active})"
    )


def run_backup(settings: Settings, args: argparse.Namespace) -> int:
    try:
        manifest = backup(settings, args.dest, config_file=args.config)
    except (BackupError, LedgerError, OSError) as exc:
        print(f"personad: backup failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(manifest, indent=2))
        return 0
    print(f"backed up {_counts(manifest['counts'])} into {args.dest}")
    for missing in manifest["versions_missing"]:
        print(f"  not in the registry (retired meanwhile?): {missing}")
    return 0


def run_restore(settings: Settings, args: argparse.Namespace) -> int:
    lock = InstanceLock(settings.state_dir / "personad.lock")
    try:
        lock.acquire()  # no daemon runs on this state, and none starts meanwhile
    except AlreadyRunning as exc:
        print(f"personad: restore refused: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        done = restore(settings, args.src, force=args.force)
    except (BackupError, LedgerError, OSError) as exc:
        print(f"personad: restore failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        lock.release()
    if args.json:
        print(json.dumps(done, indent=2))
        return 0
    print(f"restored {_counts(done['counts'])} from {done['restored_from']}")
    if done["replaced"]:
        print(f"  the state that was there is in {done['replaced']}")
    print(f"  settings of the backup: {done['settings']}")
    print("  the index is rebuilt from the ledger when the daemon starts")
    return 0

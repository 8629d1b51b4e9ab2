"""The reliability and security suite at full size; prints its figures and writes JSON.

Sections (each a real daemon process; `--only` picks some, in this order):

- ``crash``: drop files continuously, SIGKILL the daemon at random moments (start-up,
  ingest, big index writes, and a training job's starting, training, gate and publish
  phases), restart it, and check after every round: each complete file's memories in the
  ledger exactly once, index count = ledger count, ``PRAGMA integrity_check`` ok, no job
  left ``running``, the active model the old or the new version and loadable;
- ``stateful``: the Hypothesis state machine of ingestion (create, chunked writes,
  temp + rename, duplicates, rewrites, deletes, SIGTERM and SIGKILL restarts);
- ``fuzz``: parsers on random and hostile inputs, fuzzed files dropped into a daemon's
  folder, fuzzed socket sessions, storms of 1,000 concurrent connections;
- ``event_loss``: a share of file events dropped on purpose; the reconcile scan finds them;
- ``overflow``: a real inotify queue overflow (needs root to lower the kernel limit);
- ``soak``: files at 5/s and a status query per second for 10 minutes: RSS, fds, threads;
- ``idle``: the idle daemon's CPU use;
- ``links``: links planted in a memory folder (another profile, the state dir, /etc);
- ``interruption``: SIGINT/SIGTERM to demo (during ingest and training) and status --watch;
- ``ledger``: the first-migration fixture migrated from every stage; damaged and newer
  ledgers refused;
- ``index``: the Chroma index deleted, overwritten or its segments deleted, while the
  daemon is down or running;
- ``backup``: backup during a steady ingest, restore into a fresh state, compared;
- ``disk_full``: a small tmpfs under the state directory (root): ingest and training.

    .venv/bin/python bench/reliability.py [--only crash,soak] [--quick] [--json-out F]

``--quick`` runs the CI sizes. Figures of the last full run: bench/RELIABILITY.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from bench.child_run import child_env  # noqa: E402

Section = Callable[[Path, bool, int], dict[str, Any]]


def crash(root: Path, quick: bool, seed: int) -> dict[str, Any]:
    from tests.reliability.crash import run_crash_rounds

    return run_crash_rounds(
        root, rounds=10 if quick else 200, seed=seed, train_every=5 if quick else 20
    )


def stateful(root: Path, quick: bool, seed: int) -> dict[str, Any]:
    from tests.reliability.stateful import run_stateful

    if quick:
        return run_stateful(max_examples=5, steps=15)
    return run_stateful(max_examples=25, steps=30, derandomize=False)


def fuzz(root: Path, quick: bool, seed: int) -> dict[str, Any]:
    from tests.reliability.fuzz import run_fuzz

    return run_fuzz(root, examples=800 if quick else 20_000, seed=seed)


def event_loss(root: Path, quick: bool, seed: int) -> dict[str, Any]:
    from tests.reliability.eventloss import run_event_loss

    if quick:
        return run_event_loss(root, files=30, drop_rate=0.3, seed=seed)
    return run_event_loss(root, files=300, drop_rate=0.3, seed=seed, files_per_s=20)


def overflow(root: Path, quick: bool, seed: int) -> dict[str, Any]:
    from tests.reliability.eventloss import inotify_limit_unwritable, run_overflow

    why = inotify_limit_unwritable()
    if why:
        return {"skipped": why}
    return run_overflow(root, files=300 if quick else 3000, max_queued_events=16)


def soak(root: Path, quick: bool, seed: int) -> dict[str, Any]:
    from tests.reliability.soak import run_soak

    if quick:
        return run_soak(root, seconds=45)
    return run_soak(root, seconds=600, sample_every_s=10)


def idle(root: Path, quick: bool, seed: int) -> dict[str, Any]:
    from tests.reliability.soak import idle_cpu

    return idle_cpu(root, seconds=10 if quick else 60)


def links(root: Path, quick: bool, seed: int) -> dict[str, Any]:
    from tests.reliability.foreign import run_planted_links

    return run_planted_links(root)


def interruption(root: Path, quick: bool, seed: int) -> dict[str, Any]:
    """Ctrl-C / SIGTERM to status --watch, ask, train --wait and demo (early and late)."""
    import signal

    from tests.reliability.interruption import demo_args, has_socket, interrupt_cli
    from tests.services.training.training_helpers import build_tiny_model

    tiny = build_tiny_model(root / "tiny")
    config = json.dumps(
        {
            "batch_size": 4,
            "gradient_accumulation_steps": 1,
            "max_seq_length": 256,
            "max_steps": 100_000,
        }
    )
    env = child_env()
    cases = []
    for moment, sig in (
        ("ingesting and indexing", signal.SIGTERM),
        ("job 1 running: step ", signal.SIGINT),
    ):
        out = root / f"demo-{sig}"
        cases.append(
            interrupt_cli(
                demo_args(out, tiny, config), env, lambda p, e, m=moment: m in e, sig
            ).summary()
        )
    from tests.reliability.fuzz import fuzz_daemon

    with fuzz_daemon(root / "w", indexed=True) as d:
        for sig in (signal.SIGINT, signal.SIGTERM):
            cases.append(
                interrupt_cli(
                    ["status", "--watch", "--interval", "0.2", "--socket", str(d.socket)],
                    d.env,
                    lambda p, e: has_socket(p.pid) and time.sleep(0.5) is None,
                    sig,
                    settle_s=0.5,
                ).summary()
            )
    return {
        "cases": cases,
        "left_total": sum(c["left"] for c in cases),
        "slowest_s": max(c["seconds"] for c in cases),
    }


def ledger(root: Path, quick: bool, seed: int) -> dict[str, Any]:
    from services.ledger import Ledger
    from services.ledger.schema import MIGRATIONS
    from tests.reliability.damaged import ledger_refusals, old_ledger

    migrated = []
    for applied in range(1, len(MIGRATIONS) + 1):
        path = old_ledger(root / f"m{applied}" / "ledger.sqlite3", applied)
        with Ledger(path) as opened:
            counts = opened.profile_counts()["alice"]
            migrated.append(
                {
                    "from": MIGRATIONS[applied - 1][0],
                    "memories": counts["memories"],
                    "samples": counts["samples"],
                    "integrity": opened.integrity_check(),
                }
            )
    return {"migrations": migrated, "refusals": ledger_refusals(root / "refusals")}


def index(root: Path, quick: bool, seed: int) -> dict[str, Any]:
    from tests.reliability.damaged import INDEX_DAMAGE, index_rebuild

    return {"scenarios": [index_rebuild(root / f"i{n}", how) for n, how in enumerate(INDEX_DAMAGE)]}


def backup(root: Path, quick: bool, seed: int) -> dict[str, Any]:
    from tests.reliability.backups import backup_round_trip

    return backup_round_trip(root, files=10 if quick else 40)


def disk_full(root: Path, quick: bool, seed: int) -> dict[str, Any]:
    from tests.reliability.backups import fake_python
    from tests.reliability.diskfull import (
        ingest_disk_full,
        small_fs_unavailable,
        training_disk_full,
    )

    why = small_fs_unavailable()
    if why:
        return {"skipped": why}
    return {
        "ingest": ingest_disk_full(root / "i", files=12 if quick else 40),
        "training": training_disk_full(root / "t", fake_python(root)),
    }


SECTIONS: dict[str, Section] = {
    "crash": crash,
    "stateful": stateful,
    "fuzz": fuzz,
    "event_loss": event_loss,
    "overflow": overflow,
    "soak": soak,
    "idle": idle,
    "links": links,
    "interruption": interruption,
    "ledger": ledger,
    "index": index,
    "backup": backup,
    "disk_full": disk_full,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", help=f"comma-separated sections of: {', '.join(SECTIONS)}")
    p.add_argument("--quick", action="store_true", help="the reduced (CI) sizes")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json-out", type=Path, help="write the figures here (after each section)")
    args = p.parse_args(argv)
    names = list(SECTIONS) if not args.only else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        p.error(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    results: dict[str, Any] = {"quick": args.quick, "seed": args.seed, "sections": {}}
    failed = False
    for name in names:
        root = Path(tempfile.mkdtemp(prefix=f"pr-{name[:4]}-"))  # short: it holds a socket
        started = time.monotonic()
        print(f"== {name} ...", flush=True)
        try:
            figures = SECTIONS[name](root, args.quick, args.seed)
        except Exception as exc:  # a failed invariant or a crashed harness: record it, go on
            figures = {"error": f"{type(exc).__name__}: {exc}"}
            failed = True
        finally:
            shutil.rmtree(root, ignore_errors=True)
        figures["section_seconds"] = round(time.monotonic() - started, 1)
        results["sections"][name] = figures
        print(json.dumps(figures, indent=2, default=str), flush=True)
        if args.json_out:
            args.json_out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Damaged stores: a ledger the daemon must refuse, and a Chroma index it must rebuild.

:func:`ledger_refusals` starts `personad run` on ledgers that are damaged (the header
zeroed, b-tree pages overwritten, the file cut in half) or written by a newer personad,
and records for each: the exit status, what it said, whether it printed a traceback and
whether the file is byte for byte as it was.
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from services.ledger import Ledger
from services.ledger.schema import MIGRATIONS
from tests.conftest import FIXTURES
from tests.daemon_process import REPO, DaemonProcess

FIRST_LEDGER = FIXTURES / "ledgers" / "0001_initial.sql"
LEDGER_DAMAGE = ("header", "pages", "truncated", "newer")


def old_ledger(path: Path, applied: int = 1) -> Path:
    """The fixture ledger of 0001_initial, with the next ``applied - 1`` migrations."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.executescript(FIRST_LEDGER.read_text())
    for name, sql in MIGRATIONS[1:applied]:
        conn.executescript(sql)
        conn.execute("INSERT INTO migrations VALUES (?, '2025-06-01T00:00:00+00:00')", [name])
    conn.commit()
    conn.close()
    return path


def damage_ledger(path: Path, how: str) -> None:
    """``header``: not a database any more; ``pages``: every page after the first
    overwritten at its start (the schema reads, the tables do not); ``truncated``: the
    second half gone; ``newer``: intact, with a migration this code does not know."""
    if how == "newer":
        conn = sqlite3.connect(path)
        conn.execute("INSERT INTO migrations VALUES ('0099_from_the_future', 'later')")
        conn.commit()
        conn.close()
        return
    Ledger(path).close()  # migrated and checkpointed: everything in the main file
    data = bytearray(path.read_bytes())
    if how == "header":
        data[:100] = b"\x00" * 100
    elif how == "pages":
        page = int.from_bytes(data[16:18], "big") or 65536
        for start in range(page, len(data), page):
            data[start : start + 64] = b"\xa5" * 64
    elif how == "truncated":
        data = data[: len(data) // 2]
    else:
        raise ValueError(how)
    path.write_bytes(bytes(data))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ledger_refusal(root: Path, how: str) -> dict[str, Any]:
    d = DaemonProcess(root)
    ledger = old_ledger(d.state_dir / "ledger.sqlite3", len(MIGRATIONS))
    damage_ledger(ledger, how)
    before = sha(ledger)
    done = subprocess.run(
        d.command("run"), cwd=REPO, env=d.env, capture_output=True, text=True, timeout=120
    )
    said = [line for line in done.stderr.splitlines() if line.strip()]
    return {
        "damage": how,
        "exit": done.returncode,
        "said": said[-1] if said else "",
        "lines": len(said),
        "traceback": "Traceback" in done.stderr + done.stdout,
        "file_unchanged": sha(ledger) == before,
        "names_file": str(ledger) in done.stderr,
        "names_restore": "personad restore" in done.stderr,
        "files_beside": sorted(p.name for p in ledger.parent.iterdir()),
    }


def ledger_refusals(root: Path) -> list[dict[str, Any]]:
    return [ledger_refusal(root / how, how) for how in LEDGER_DAMAGE]

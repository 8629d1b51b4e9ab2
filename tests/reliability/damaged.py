"""Damaged stores: a ledger the daemon must refuse, and a Chroma index it must rebuild.

:func:`index_rebuild` damages the Chroma index (deleted, overwritten, its segment files
deleted) while the daemon is down or running, and records whether every memory is
indexed and found again by its own text, and what the daemon logged.

:func:`ledger_refusals` starts `personad run` on ledgers that are damaged (the header
zeroed, b-tree pages overwritten, the file cut in half) or written by a newer personad,
and records for each: the exit status, what it said, whether it printed a traceback and
whether the file is byte for byte as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from services.ledger import Ledger
from services.ledger.schema import MIGRATIONS
from tests.conftest import FIXTURES
from tests.daemon_process import REPO, DaemonProcess
from tests.reliability.fuzz import fuzz_daemon

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


INDEX_DAMAGE = (
    "deleted-while-down",
    "garbage-while-down",
    "segments-deleted-while-down",
    "deleted-while-running",
    "garbage-while-running",
)


def _memory_files(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    texts = [f"On day {i} the ferry to island {i} left at {i % 12 + 1} o'clock." for i in range(n)]
    rows = [
        {"prompt": f"Ferry {i}?", "completion": t, "quality_score": 8} for i, t in enumerate(texts)
    ]
    (folder / "ferries.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return texts


def _index_ok(d: DaemonProcess, texts: list[str]) -> bool:
    counts = d.call("status")["profiles"].get("alice", {})
    return counts.get("indexed") == counts.get("memories") == len(texts)


def _found(d: DaemonProcess) -> int:
    """How many memories a search for their own stored text finds first."""
    conn = sqlite3.connect(f"file:{d.state_dir / 'ledger.sqlite3'}?mode=ro", uri=True)
    try:
        stored = [str(r[0]) for r in conn.execute("SELECT text FROM memories")]
    finally:
        conn.close()
    found = 0
    for text in stored:
        hits = d.call("search", {"profile": "alice", "query": text, "k": 1})["results"]
        found += bool(hits) and hits[0]["text"] == text
    return found


def _damage_index(index: Path, how: str) -> None:
    if how.startswith("deleted"):
        shutil.rmtree(index)
    elif how.startswith("garbage"):
        db = index / "chroma.sqlite3"
        data = bytearray(db.read_bytes())
        data[: min(len(data), 65536)] = os.urandom(min(len(data), 65536))
        db.write_bytes(bytes(data))
    elif how.startswith("segments"):
        for child in index.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
    else:
        raise ValueError(how)


def index_rebuild(root: Path, how: str, memories: int = 40) -> dict[str, Any]:
    """One damage to the Chroma index; the daemon must end with every memory indexed
    and found again, and say so in its log."""
    started = time.monotonic()
    with fuzz_daemon(root, indexed=True) as d:
        texts = _memory_files(d.profiles_dir / "alice" / "memory", memories)
        d.wait_for(lambda: _index_ok(d, texts), 60)
        index = d.state_dir / "index"
        if how.endswith("while-running"):
            _damage_index(index, how)
            # The ingest worker notices within IDLE_WAIT_S (2 s) of idling; until then the
            # ledger still says every memory is indexed.
            d.wait_for(lambda: "the index was deleted or damaged" in d.log(), 30)
            d.wait_for(lambda: _settled(d, texts), 90)
            result = _outcome(d, texts, how)
        else:
            assert d.stop() == 0
            _damage_index(index, how)
            d.start()
            d.wait_for(lambda: _settled(d, texts), 90)
            result = _outcome(d, texts, how)
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def _settled(d: DaemonProcess, texts: list[str]) -> bool:
    try:
        return _index_ok(d, texts) and d.call("status")["daemon"]["ingest"]["state"] == "running"
    except Exception:
        return False


def _outcome(d: DaemonProcess, texts: list[str], how: str) -> dict[str, Any]:
    log = d.log()
    return {
        "damage": how,
        "memories": len(texts),
        "found_again": _found(d),
        "said": [
            line
            for line in (
                "index lacks memories",
                "the index is damaged",
                "the index was deleted or damaged",
            )
            if line in log
        ],
        "set_aside": sorted(p.name for p in d.state_dir.iterdir() if ".damaged-" in p.name),
    }

"""Memories dropped into watched folders, end to end, through the real daemon."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import FIXTURES
from tests.daemon_process import DaemonProcess

FAST = {
    "PERSONAD_INGEST__DEBOUNCE_MS": "50",
    "PERSONAD_INGEST__SETTLE_S": "1.0",
    "PERSONAD_INGEST__RECONCILE_INTERVAL_S": "5",
}


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    root = Path(tempfile.mkdtemp(prefix="pd-"))
    d = DaemonProcess(root, env=FAST)
    for profile in ("alice", "bob"):
        (d.profiles_dir / profile / "memory").mkdir(parents=True)
    d.start()
    yield d
    assert d.stop() == 0
    shutil.rmtree(root, ignore_errors=True)


def memdir(d: DaemonProcess, profile: str) -> Path:
    return d.profiles_dir / profile / "memory"


def counts(d: DaemonProcess, profile: str) -> dict:
    return d.call("status")["profiles"].get(profile, {})


def settled(d: DaemonProcess, profile: str, memories: int, rejects: int | None = None) -> dict:
    """Wait until the profile holds ``memories`` memories, all indexed."""

    def check() -> dict | None:
        c = counts(d, profile)
        ok = c.get("memories") == memories and c.get("indexed") == memories
        if rejects is not None:
            ok = ok and c.get("rejects") == rejects
        return c if ok and c.get("queue") == 0 else None

    return d.wait_for(check, timeout=90)


def search(d: DaemonProcess, profile: str, query: str, k: int = 3) -> list[dict]:
    return d.call("search", {"profile": profile, "query": query, "k": k})["results"]


PROMPT_COMPLETION = [
    {
        "prompt": "What is the capital of Portugal?",
        "completion": "Lisbon, on the Tagus.",
        "quality_score": 9,
    },
    {
        "prompt": "How do you brew green tea?",
        "completion": "Water at 80 degrees, two minutes.",
        "quality_score": 8,
    },
]
CHAT = {
    "messages": [
        {"role": "system", "content": "You are Bob."},
        {"role": "user", "content": "Which bicycle do you ride to work?"},
        {"role": "assistant", "content": "A blue steel touring bike with panniers."},
        {"role": "user", "content": "And on weekends?"},
        {"role": "assistant", "content": "A carbon road bike for long climbs in the hills."},
    ]
}


def test_every_format_lands_in_two_profiles_and_is_found(daemon: DaemonProcess) -> None:
    alice, bob = memdir(daemon, "alice"), memdir(daemon, "bob")
    # alice: real MetaHuman episodic events, in nested date folders as MetaHuman writes them.
    events = sorted(p for p in (FIXTURES / "metahuman").glob("*.json") if p.name != "SOURCES.json")
    for i, src in enumerate(events):
        target = alice / "episodic" / "2025" / "11" / f"{i:02d}" / src.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, target)
    # bob: every other format.
    (bob / "pc.jsonl").write_text("\n".join(json.dumps(r) for r in PROMPT_COMPLETION) + "\n")
    (bob / "pr.csv").write_text(
        "prompt,response\n"
        "Where did you grow up?,In a small harbour town in the north.\n"
        '"Favourite book, and why?","Moby-Dick, for the sea chapters."\n'
    )
    (bob / "alpaca.json").write_text(
        json.dumps(
            [
                {
                    "instruction": "Summarise my week",
                    "input": "Mon gym, Tue dentist",
                    "output": "Gym on Monday and the dentist on Tuesday.",
                },
            ]
        )
    )
    (bob / "chat.json").write_text(json.dumps(CHAT))
    (bob / "qa.txt").write_text(
        "Q: What instrument do you play?\nA: The cello, since I was nine.\n\n"
        "Q: Coffee or tea?\nA: Tea in the morning, coffee never.\n"
    )
    (bob / "essay.md").write_text(
        "# On walking\n\n" + "Walking in the rain clears my head like nothing else. " * 30
    )
    a = settled(daemon, "alice", len(events))
    b = settled(daemon, "bob", 2 + 2 + 1 + 2 + 2 + 1, rejects=0)
    assert a["rejects"] == 0
    assert b["samples"] == b["memories"]

    top = search(daemon, "bob", "which bike does he ride to the office")[0]
    assert "touring bike" in top["text"]
    assert top["source"] == str(bob / "chat.json")
    assert top["type"] == "chat"
    assert top["mode"] == "emulation"
    assert 0 < top["score"] <= 1
    assert search(daemon, "bob", "capital city of Portugal")[0]["text"].startswith(
        "What is the capital of Portugal?"
    )
    assert "cello" in search(daemon, "bob", "musical instrument")[0]["text"]
    alice_top = search(daemon, "alice", "authentication system progress")[0]
    assert "authentication" in alice_top["text"]
    # Profiles are separate indexes.
    assert all("authentication" not in h["text"] for h in search(daemon, "bob", "authentication"))


def test_slow_writer_and_rename_into_place(daemon: DaemonProcess) -> None:
    alice = memdir(daemon, "alice")
    before = counts(daemon, "alice")["memories"]
    records = [
        {
            "prompt": f"Slow question {i} about sailing knots?",
            "response": f"Slow answer {i}: the bowline and the clove hitch.",
        }
        for i in range(6)
    ]
    lines = [json.dumps(r) + "\n" for r in records]
    with open(alice / "slow.jsonl", "w") as f:
        for line in lines:
            # Half a record, a pause longer than the debounce, then the rest.
            f.write(line[:20])
            f.flush()
            time.sleep(0.3)
            f.write(line[20:])
            f.flush()
    tmp = alice / "renamed.jsonl.tmp"
    tmp.write_text(
        json.dumps({"prompt": "Renamed into place?", "response": "Yes, atomically."}) + "\n"
    )
    tmp.rename(alice / "renamed.jsonl")
    c = settled(daemon, "alice", before + 7)
    assert c["rejects"] == 0  # never a half-written record
    assert "atomically" in search(daemon, "alice", "renamed into place")[0]["text"]


def test_duplicates_are_stored_once(daemon: DaemonProcess) -> None:
    bob = memdir(daemon, "bob")
    settled_before = counts(daemon, "bob")["memories"]
    # The same records again, in another file, in another container format.
    (bob / "again.json").write_text(json.dumps(PROMPT_COMPLETION))
    (bob / "chat-copy.json").write_text(json.dumps(CHAT))
    daemon.wait_for(lambda: daemon.call("status")["daemon"]["ingest"]["queue"] == 0)
    time.sleep(1.5)
    c = counts(daemon, "bob")
    assert c["memories"] == settled_before
    assert c["indexed"] == settled_before
    ids = [h["id"] for h in search(daemon, "bob", "capital of Portugal", k=10)]
    assert len(ids) == len(set(ids))


def test_bad_files_are_rejected_with_reasons_and_nothing_else_is_lost(
    daemon: DaemonProcess,
) -> None:
    carol = daemon.profiles_dir / "carol" / "memory"
    carol.mkdir(parents=True)
    (carol / "broken.json").write_text('{"prompt": "unfinished", ')
    (carol / "binary.json").write_bytes(b"\x00\x01\x02\xff" * 64)
    (carol / "empty.jsonl").write_text("")
    (carol / "latin1.txt").write_bytes("Q: Caf\xe9?\nA: Oui.\n".encode("latin-1"))
    (carol / "mixed.csv").write_text(
        "prompt,response\nGood row one?,Yes it is fine.\nbad row with,too,many,columns\n"
        "Good row two?,Also fine.\n"
    )
    (carol / "notes.docx").write_bytes(b"PK\x03\x04 not a memory")
    c = settled(daemon, "carol", 2, rejects=6)
    assert c["memories"] == 2
    rejects = daemon.call("rejects", {"profile": "carol"})["rejects"]
    by_file = {Path(r["path"]).name: r for r in rejects}
    assert set(by_file) == {
        "broken.json",
        "binary.json",
        "empty.jsonl",
        "latin1.txt",
        "mixed.csv",
        "notes.docx",
    }
    assert "JSON" in by_file["broken.json"]["reason"]
    assert "binary" in by_file["binary.json"]["reason"].lower()
    assert "empty" in by_file["empty.jsonl"]["reason"].lower()
    assert "UTF-8" in by_file["latin1.txt"]["reason"]
    assert by_file["mixed.csv"]["locator"] == "row 2"  # the second data row, on line 3
    assert "line 3" in by_file["mixed.csv"]["reason"]
    assert ".docx" in by_file["notes.docx"]["reason"]
    assert all(r["sha256"] for r in rejects if r["path"].endswith(".json"))
    # Rejects are listed by the CLI for people too.
    shown = daemon.cli("rejects", "carol")
    assert shown.returncode == 0 and "broken.json" in shown.stdout
    # Fixing a file clears its reject and takes its memories.
    (carol / "broken.json").write_text(
        '{"prompt": "finished now?", "response": "Yes, valid JSON."}'
    )
    c = settled(daemon, "carol", 3, rejects=5)
    # Nothing in the watched tree was modified, moved or deleted.
    assert sorted(p.name for p in carol.iterdir()) == sorted(
        ["broken.json", "binary.json", "empty.jsonl", "latin1.txt", "mixed.csv", "notes.docx"]
    )


def own_profile(d: DaemonProcess, profile: str) -> None:
    """A profile of its own for a test (three memories, one about the cello), settled."""
    mem = memdir(d, profile)
    mem.mkdir(parents=True)
    (mem / "qa.txt").write_text(
        "Q: What instrument do you play?\nA: The cello, since I was nine.\n\n"
        "Q: Where do you live?\nA: In a flat above a bakery in Ghent.\n\n"
        "Q: What do you drink in the morning?\nA: Strong black coffee, no sugar.\n"
    )
    settled(d, profile, 3)


def test_search_and_status_on_the_cli(daemon: DaemonProcess) -> None:
    own_profile(daemon, "erin")
    result = daemon.cli_json("search", "erin", "cello", "-k", "2")
    assert len(result["results"]) == 2
    assert set(result["results"][0]) == {
        "id",
        "score",
        "text",
        "type",
        "mode",
        "timestamp",
        "source",
    }
    unknown = daemon.cli("search", "nobody", "x")
    assert unknown.returncode == 1 and "no profile 'nobody'" in unknown.stderr
    status = daemon.cli_json("status")
    erin = status["profiles"]["erin"]
    assert erin["memories"] == erin["indexed"] == 3
    assert set(erin) >= {
        "memories",
        "rejects",
        "indexed",
        "samples",
        "since_last_training",
        "active_version",
        "last_ingest_at",
        "queue",
        "eligible_by_mode",
        "quality",
    }


def test_reindex_rebuilds_from_the_ledger(daemon: DaemonProcess) -> None:
    own_profile(daemon, "fran")
    result = daemon.call("reindex", {"profile": "fran"})
    assert result["indexed"] == 3
    assert counts(daemon, "fran")["indexed"] == 3
    assert "cello" in search(daemon, "fran", "musical instrument")[0]["text"]


def test_files_dropped_while_stopped_are_ingested_at_start(short_tmp: Path) -> None:
    d = DaemonProcess(short_tmp, env=FAST)
    mem = d.profiles_dir / "dora" / "memory"
    mem.mkdir(parents=True)
    (mem / "one.jsonl").write_text(
        json.dumps({"prompt": "First?", "response": "First answer."}) + "\n"
    )
    d.start()
    settled(d, "dora", 1)
    assert d.stop() == 0
    (mem / "two.jsonl").write_text(
        json.dumps({"prompt": "While down?", "response": "Still taken."}) + "\n"
    )
    (mem / "sub").mkdir()
    (mem / "sub" / "three.txt").write_text("Q: Nested?\nA: Found by the start-up scan.\n")
    d.start()
    settled(d, "dora", 3, rejects=0)
    assert d.stop() == 0

"""`index.chroma_url` against a real Chroma server: shared by two daemons, down at
start-up and mid-ingest. Memories always reach the ledger; the index catches up with
no loss and no duplicates once the server is back; search says why it cannot answer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.client import CommandFailed
from services.ledger import Ledger
from tests.chroma_server import ChromaServer, free_port
from tests.daemon_process import DaemonProcess

FAST = {
    "PERSONAD_INGEST__DEBOUNCE_MS": "50",
    "PERSONAD_INGEST__SETTLE_S": "0.5",
    "PERSONAD_INGEST__RECONCILE_INTERVAL_S": "5",
}


def _drop(d: DaemonProcess, profile: str, name: str, start: int, n: int) -> None:
    memory = d.profiles_dir / profile / "memory"
    memory.mkdir(parents=True, exist_ok=True)
    rows = [
        {"prompt": f"{profile} question {i} about boats?", "completion": f"{profile} answer {i}"}
        for i in range(start, start + n)
    ]
    tmp = memory / f"{name}.tmp"
    tmp.write_text("\n".join(json.dumps(r) for r in rows))
    tmp.rename(memory / f"{name}.jsonl")


def _daemon(root: Path, url: str) -> DaemonProcess:
    return DaemonProcess(root, env={**FAST, "PERSONAD_INDEX__CHROMA_URL": url})


def _profile(d: DaemonProcess, profile: str) -> dict:
    return d.call("status")["profiles"].get(profile, {})


def _ledger_ids(d: DaemonProcess, profile: str) -> set[str]:
    with Ledger(d.state_dir / "ledger.sqlite3", migrate=False) as ledger:
        return {m["id"] for m in ledger.unindexed(profile, 10_000)} | ledger.indexed_ids(profile)


def _agree(d: DaemonProcess, server: ChromaServer, profile: str, n: int) -> None:
    """The ledger holds n memories, all indexed; the server's collection holds exactly
    those n ids (Chroma ids are unique: a repeat would leave count above n)."""
    d.wait_for(
        lambda: (
            _profile(d, profile).get("memories") == n and _profile(d, profile).get("indexed") == n
        ),
        timeout=90,
    )
    col = server.collection(profile)
    stored = col.get(include=[])["ids"]
    assert col.count() == len(stored) == len(set(stored)) == n
    assert set(stored) == _ledger_ids(d, profile)


@pytest.fixture
def server(short_tmp: Path) -> Iterator[ChromaServer]:
    s = ChromaServer(short_tmp / "chroma")
    yield s
    s.kill()


def test_two_daemons_with_their_own_profiles_share_one_server(
    short_tmp: Path, server: ChromaServer
) -> None:
    server.start()
    one = _daemon(short_tmp / "one", server.url)
    two = _daemon(short_tmp / "two", server.url)
    try:
        _drop(one, "alice", "a", 0, 12)
        _drop(two, "bob", "b", 0, 7)
        one.start()
        two.start()
        _agree(one, server, "alice", 12)
        _agree(two, server, "bob", 7)
        hits = one.call("search", {"profile": "alice", "query": "boats", "k": 20})["results"]
        assert len(hits) == 12 and all(h["text"].startswith("alice") for h in hits)
        hits = two.call("search", {"profile": "bob", "query": "boats", "k": 20})["results"]
        assert len(hits) == 7 and all(h["text"].startswith("bob") for h in hits)
    finally:
        assert one.stop() == 0
        assert two.stop() == 0


def test_server_down_at_start_up_then_back(short_tmp: Path) -> None:
    server = ChromaServer(short_tmp / "chroma", port=free_port())
    d = _daemon(short_tmp / "d", server.url)
    try:
        _drop(d, "alice", "a", 0, 15)
        d.start()  # nothing listens at chroma_url: the daemon starts anyway
        status = d.wait_for(
            lambda: (
                (s := d.call("status"))["daemon"]["ingest"]["state"] == "index-error"
                and s["profiles"].get("alice", {}).get("memories") == 15
                and s
            ),
            timeout=90,
        )
        assert status["profiles"]["alice"]["indexed"] == 0
        assert server.url in status["daemon"]["ingest"]["last_error"]
        searched = d.cli("search", "alice", "boats")
        assert searched.returncode == 1
        assert f"the Chroma server at {server.url} is not reachable" in searched.stderr
        server.start()
        _agree(d, server, "alice", 15)
        assert d.call("status")["daemon"]["ingest"]["state"] == "running"
        assert len(d.call("search", {"profile": "alice", "query": "boats", "k": 3})["results"])
    finally:
        assert d.stop() == 0
        server.kill()


def test_server_down_mid_ingest_loses_and_repeats_nothing(
    short_tmp: Path, server: ChromaServer
) -> None:
    server.start()
    d = _daemon(short_tmp / "d", server.url)
    try:
        _drop(d, "alice", "a", 0, 10)
        d.start()
        _agree(d, server, "alice", 10)
        server.kill()
        _drop(d, "alice", "b", 10, 20)
        d.wait_for(lambda: _profile(d, "alice").get("memories") == 30, timeout=90)
        assert _profile(d, "alice")["indexed"] == 10
        with pytest.raises(CommandFailed) as failed:
            d.call("search", {"profile": "alice", "query": "boats"})
        assert failed.value.code == "unavailable"
        assert failed.value.message.startswith(f"cannot search: the Chroma server at {server.url}")
        server.start()  # the same data directory: the first 10 are still there
        _drop(d, "alice", "c", 30, 5)
        _agree(d, server, "alice", 35)
    finally:
        assert d.stop() == 0

"""Crash consistency: the real daemon SIGKILLed at random moments loses nothing,
duplicates nothing, keeps its files sound and its active model whole."""

from __future__ import annotations

import json
from pathlib import Path

from services.ledger import Ledger
from services.publish.local import LocalRegistry
from services.publish.ollama import OllamaPublisher
from services.publish.release import ReleaseConfig, align_published
from tests.fakes.ollama_server import FakeOllama
from tests.reliability.crash import run_crash_rounds
from tests.services.publish.publish_helpers import write_adapter


def test_random_kills_lose_and_duplicate_nothing(short_tmp: Path) -> None:
    figures = run_crash_rounds(
        short_tmp / "c", rounds=5, seed=7, train_every=3, train_phases=("training", "publish")
    )
    summary = json.dumps({k: v for k, v in figures.items() if k != "round_log"}, indent=1)
    assert figures["rounds"] == 5, summary
    # The kills hit every kind of moment asked for.
    hits = figures["kills_by_phase"]
    assert hits.get("training", 0) >= 1 and hits.get("publish", 0) >= 1, summary
    assert figures["kills_by_target"].keys() >= {"ingest", "index", "startup"}, summary
    assert figures["complete_files"] > 50 and figures["memories_expected"] > 200, summary
    # Every complete file's memories are there exactly once, in the ledger and the index.
    assert figures["memories_in_ledger"] == figures["memories_expected"], summary
    assert figures["losses"] == 0 and figures["unexpected_memories"] == 0, summary
    assert figures["duplicates"] == 0 and figures["uncurated"] == 0, summary
    assert figures["stale_files"] == 0 and figures["stale_rejects"] == 0, summary
    assert figures["index_mismatches"] == 0, summary
    assert all(c["index"] == c["ledger"] for c in figures["final_index"].values()), summary
    assert figures["searches"] > 15 and figures["search_misses"] == 0, summary
    assert figures["integrity_failures"] == 0, summary
    # Interrupted jobs were retried; the chain published once; nothing stayed running.
    assert figures["stuck_jobs"] == 0 and figures["unretried_jobs"] == 0, summary
    assert figures["job_failures"] == [] and len(figures["published"]) == 1, summary
    assert figures["jobs_by_state"] == {"interrupted": 2, "succeeded": 1}, summary
    assert figures["active_model_checks"] > 5 and figures["active_model_failures"] == 0, summary
    assert figures["final_stop_rc"] == 0 and figures["problems"] == [], summary


def _config(root: Path, url: str) -> ReleaseConfig:
    return ReleaseConfig(models_dir=root / "models", cache_dir=root / "cache", ollama_url=url)


def test_start_up_removes_what_an_interrupted_publish_left(tmp_path: Path) -> None:
    """A crash after v2 was copied in (and created in Ollama) but before the ledger
    recorded it: the next start removes the leftovers, so v2 can be published again."""
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    registry = LocalRegistry(tmp_path / "models")
    with FakeOllama() as fake:
        cfg = _config(tmp_path, fake.url)
        registry.publish("alice", 1, write_adapter(tmp_path / "a1"), kind="lora", base="b")
        registry.activate("alice", 1)
        fake.add_model("personad-alice:v1", weights=b"GGUF one")
        with OllamaPublisher(fake.url, "personad") as pub:
            digest = pub.activate("alice", 1)
        ledger.add_version(
            "alice", 1, kind="lora", job_id=1, run_dir=None, path=None, base="b", digest=digest
        )
        # The interrupted publish of v2.
        registry.publish("alice", 2, write_adapter(tmp_path / "a2", seed=1), kind="lora", base="b")
        fake.add_model("personad-alice:v2", weights=b"GGUF two")

        repaired = align_published(ledger, cfg)

        assert repaired == [
            "alice: unrecorded local v2 removed",
            "alice: unrecorded ollama v2 removed",
        ]
        assert (registry.versions("alice"), registry.active("alice")) == ([1], 1)
        assert fake.model_names() == ["personad-alice:latest", "personad-alice:v1"]
        assert fake.model("personad-alice:latest").digest == digest
        registry.publish("alice", 2, write_adapter(tmp_path / "a3", seed=2), kind="lora", base="b")
        assert registry.versions("alice") == [1, 2]
    ledger.close()


def test_start_up_undoes_a_first_publish_the_ledger_never_recorded(tmp_path: Path) -> None:
    """A crash after the switch to v1 but before the ledger recorded it: no version is
    active again, everywhere, as the ledger says."""
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    registry = LocalRegistry(tmp_path / "models")
    with FakeOllama() as fake:
        registry.publish("alice", 1, write_adapter(tmp_path / "a1"), kind="lora", base="b")
        registry.activate("alice", 1)
        fake.add_model("personad-alice:v1")
        with OllamaPublisher(fake.url, "personad") as pub:
            pub.activate("alice", 1)

        repaired = align_published(ledger, _config(tmp_path, fake.url))

        assert repaired == [
            "alice: local active v1 was never recorded; none active",
            "alice: unrecorded local v1 removed",
            "alice: ollama latest v1 was never recorded; removed",
            "alice: unrecorded ollama v1 removed",
        ]
        assert (registry.versions("alice"), registry.active("alice")) == ([], None)
        assert fake.model_names() == []
    ledger.close()

"""After training: the gate's verdict, publishing, the swap, rollback and start-up alignment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.curation import load_rules
from services.ingest import Ingestor, make_curator
from services.ledger import Ledger
from services.persona_prompt import system_message
from services.publish.local import LocalRegistry
from services.publish.release import align_published, rollback
from services.settings import Settings, load_settings
from tests.daemon.jobs_harness import Harness
from tests.fakes.ollama_server import FakeOllama


def _add(ledger: Ledger, root: Path, n: int, start: int = 0) -> None:
    path = root / "profiles" / "alice" / "memory" / f"b{start}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "\n".join(
            json.dumps(
                {
                    "prompt": f"question {i} about the world?",
                    "completion": f"answer {i}: hello world, the question and the answer.",
                    "quality_score": 9,
                }
            )
            for i in range(start, start + n)
        )
    )
    Ingestor(ledger, None, max_file_bytes=10**7, curate=make_curator(load_rules())).ingest_file(
        "alice", path
    )


def _settings(root: Path, model: Path, **ollama: object) -> Settings:
    return load_settings(
        overrides={
            "state_dir": str(root / "state"),
            "profiles_dir": str(root / "profiles"),
            "training": {"base_model": str(model), "family": "smollm"},
            "triggers": {"lora_min_samples": 4},
            "ollama": {"keep_versions": 2, **ollama},
        }
    )


def test_publish_swap_retention_and_rollback_locally(
    tmp_path: Path, tiny_model: Path, fake_python: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAINER", "ok")
    h = Harness(_settings(tmp_path, tiny_model), fake_python)
    _add(h.ledger, tmp_path, 12)
    registry = LocalRegistry(tmp_path / "state" / "models")
    h.supervisor.start()
    try:
        jobs = []
        for round_ in range(3):
            _add(h.ledger, tmp_path, 6, start=100 + 10 * round_)
            jobs.append(h.run())
        assert [j.state for j in jobs] == ["succeeded"] * 3, [j.reason for j in jobs]
        assert [j.reason for j in jobs] == ["published v1", "published v2", "published v3"]
    finally:
        h.supervisor.stop(10)
    assert h.ledger.active_version("alice") == 3
    assert registry.active("alice") == 3
    active = tmp_path / "state" / "models" / "alice" / "active"
    assert (active / "adapter" / "adapter_config.json").is_file()
    assert json.loads((active / "base.json").read_text())["base"] == str(tiny_model)
    # Retention: 2 kept, the oldest pruned everywhere.
    assert registry.versions("alice") == [2, 3]
    assert [v["version"] for v in h.ledger.versions("alice")] == [2, 3]
    cfg = h.supervisor.release_config()
    assert rollback(h.ledger, cfg, "alice") == 2
    assert (registry.active("alice"), h.ledger.active_version("alice")) == (2, 2)
    # Someone points the link elsewhere: start-up alignment puts it back.
    registry.activate("alice", 3)
    assert align_published(h.ledger, cfg) == ["alice: local active -> v2"]
    assert registry.active("alice") == 2


def test_a_rejected_candidate_is_never_published(
    tmp_path: Path, tiny_model: Path, fake_python: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAINER", "ok-rejected")
    h = Harness(_settings(tmp_path, tiny_model), fake_python)
    _add(h.ledger, tmp_path, 12)
    h.supervisor.start()
    try:
        job = h.run()
    finally:
        h.supervisor.stop(10)
    assert job.state == "rejected"
    assert job.reason == "gate: held-out loss did not improve by the margin"
    assert h.ledger.active_version("alice") is None
    assert (Path(job.run_dir or "") / "adapter").is_dir()  # kept in its run dir
    assert not (tmp_path / "state" / "models" / "alice" / "active").exists()


def test_publish_to_ollama_and_a_failed_swap_keeps_the_old_version(
    tmp_path: Path, tiny_model: Path, fake_python: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAINER", "ok")
    with FakeOllama() as ollama:
        params = {"temperature": 0.7, "top_p": 0.9, "repeat_penalty": 1.1}
        h = Harness(_settings(tmp_path, tiny_model, url=ollama.url, **params), fake_python)
        _add(h.ledger, tmp_path, 12)
        h.supervisor.start()
        try:
            first = h.run(kind="full", force=True)
            assert first.state == "succeeded", first.reason
            release = (first.result or {})["release"]
            assert release["ollama_model"] == "personad-alice:v1"
            assert ollama.model("personad-alice:latest").digest == release["digest"]
            modelfile = (Path(first.run_dir or "") / "Modelfile").read_text()
            assert "TEMPLATE" in modelfile and "PARAMETER stop <|im_end|>" in modelfile
            # Every mode's closing tag ends a served answer, malformed closers too.
            for closer in ("</world", "</assistant", "</action"):
                assert f"PARAMETER stop {closer}\n" in modelfile
            for name, value in params.items():
                assert f"PARAMETER {name} {value}" in modelfile
            # SYSTEM is the persona's system message, opening with the head it trained under,
            # and the version keeps that head for ask.
            head = json.loads((Path(first.run_dir or "") / "persona.json").read_text())["system"]
            assert head.startswith("You are alice.")
            assert f'SYSTEM """{system_message("alice", (), head)}"""' in modelfile
            info = LocalRegistry(tmp_path / "state" / "models").info("alice", 1)
            assert info["info"]["system"] == head
            # The next swap fails at the copy: latest stays on v1 everywhere.
            ollama.fail_next("/api/copy", times=5, status=500, error="disk full")
            _add(h.ledger, tmp_path, 8, start=200)
            second = h.run(kind="full", force=True)
        finally:
            h.supervisor.stop(10)
        assert second.state == "failed", (second.reason, second.result)
        assert "disk full" in (second.reason or "")
        assert ollama.model("personad-alice:latest").digest == release["digest"]
        assert h.ledger.active_version("alice") == 1
        assert LocalRegistry(tmp_path / "state" / "models").active("alice") == 1
        assert "personad-alice:v2" not in ollama.model_names()

"""A job's own base model (``train --base-model M``) and a hub base downloaded before the
job trains (from the stand-in hub of tests/fakes/hf_hub.py), through the real supervisor,
training child, gate, publishing and ask."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.child import apply_event
from daemon.control import CommandError
from daemon.render import _progress_text
from daemon.train_command import queue_job, summary_context, train_request
from services.ask import AskConfig, ask
from services.ledger import Job, Ledger
from services.publish.local import LocalRegistry
from services.settings import Settings
from services.training.progress import parse_line
from tests.daemon.jobs_harness import Harness
from tests.daemon.test_supervisor import _profile, _settings
from tests.fakes.hf_hub import FakeHub, Repo

SMALL = {"max_steps": 2, "batch_size": 4, "gradient_accumulation_steps": 1}


def _serves_on(settings_dir: Path, ledger: Ledger, cfg: AskConfig, base: str) -> None:
    """The active version answers, from an adapter on ``base``."""
    registry = LocalRegistry(settings_dir / "models")
    assert registry.info("alice", 1)["base"] == base
    model, adapter = registry.serving_model("alice", cfg.base_model)
    assert (model, adapter) == (base, registry.path("alice", 1) / "adapter")
    question = "question number 3 about the world?"
    out = ask(ledger, None, cfg, "alice", question, k=0, compare_base=True)
    assert out["active_version"] == "v1"
    assert out["answers"]["v1"]["model"] == f"{base} + {adapter}"
    assert isinstance(out["answers"]["v1"]["text"], str)
    assert out["answers"]["base"]["model"] == base  # compared with the base it sits on


def _train_alice_on(tmp_path: Path, tiny_model: Path, base: str) -> tuple[Settings, Harness, Job]:
    """Settings, harness and the finished job of one LoRA of 30 memories that names ``base``
    (``training.base_model`` being ``tiny_model``)."""
    _profile(tmp_path / "state", tmp_path / "profiles", n=30)
    settings = _settings(tmp_path, tiny_model)
    h = Harness(settings, python=None)
    h.supervisor.start()
    try:
        job = h.run(timeout=300, base_model=base, force=True, config=SMALL)
    finally:
        h.supervisor.stop(10)
    return settings, h, job


def test_a_job_trains_on_the_base_it_names_and_its_version_serves_on_it(
    tmp_path: Path, tiny_model: Path, tiny_model_64: Path
) -> None:
    settings, h, job = _train_alice_on(tmp_path, tiny_model, str(tiny_model_64))
    assert job.state == "succeeded", (job.reason, job.error)
    assert job.reason == "published v1"
    plan = (job.result or {})["plan"]
    assert plan["base"] == str(tiny_model_64) and plan["base_requested"] is True
    # The adapter was trained on the 64-wide model, not on training.base_model.
    adapter = json.loads((Path(job.run_dir or "") / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(tiny_model_64)
    _serves_on(settings.state_dir, h.ledger, AskConfig.from_settings(settings), str(tiny_model_64))


@pytest.fixture
def hub(tiny_model: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    fake = FakeHub({"acme/tiny": Repo.of_dir(tiny_model)}).start()
    # The children the supervisor starts inherit this environment: online, at the fake.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "user-hf"))
    yield fake
    fake.stop()


def test_a_hub_base_not_downloaded_is_fetched_into_the_state_dir_then_trained_on(
    tmp_path: Path, tiny_model: Path, hub: FakeHub
) -> None:
    settings, h, job = _train_alice_on(tmp_path, tiny_model, "acme/tiny")
    assert job.state == "succeeded", (job.reason, job.error)
    hub_dir = settings.state_dir / "base-models" / "hub" / "models--acme--tiny"
    snapshots = list((hub_dir / "snapshots").iterdir())
    assert len(snapshots) == 1
    assert (snapshots[0] / "model.safetensors").read_bytes() == (
        tiny_model / "model.safetensors"
    ).read_bytes()
    # What the download reported, as status shows it.
    lines = (Path(job.run_dir or "") / "download.jsonl").read_bytes().splitlines()
    events = [parse_line(line) for line in lines]
    progress: dict[str, object] = {}
    for ev in events[:-1]:
        assert ev is not None
        apply_event(progress, ev)
    total = sum(p.stat().st_size for p in tiny_model.iterdir() if p.is_file())
    assert progress["download"] == {"repo": "acme/tiny", "done_bytes": total, "total_bytes": total}
    assert _progress_text(progress).strip() == "downloading acme/tiny: 0.00 of 0.00 GB"
    assert (job.result or {})["plan"]["base"] == "acme/tiny"
    _serves_on(settings.state_dir, h.ledger, AskConfig.from_settings(settings), "acme/tiny")


def test_download_progress_reads_in_gigabytes() -> None:
    progress: dict[str, object] = {"phase": "starting"}
    ev = parse_line(
        json.dumps(
            {
                "event": "download",
                "repo": "Qwen/Qwen2.5-7B-Instruct",
                "done_bytes": 1_500_000_000,
                "total_bytes": 15_230_000_000,
            }
        )
    )
    assert ev is not None
    apply_event(progress, ev)
    assert progress["phase"] == "downloading"
    assert _progress_text(progress) == "  downloading Qwen/Qwen2.5-7B-Instruct: 1.50 of 15.23 GB"


def test_a_hub_base_that_cannot_be_downloaded_fails_the_job_with_the_reason(
    tmp_path: Path, tiny_model: Path
) -> None:
    _profile(tmp_path / "state", tmp_path / "profiles", n=6)
    h = Harness(_settings(tmp_path, tiny_model), python=None)  # HF_HUB_OFFLINE is set
    h.supervisor.start()
    try:
        job = h.run(timeout=60, base_model="acme/tiny", force=True)
    finally:
        h.supervisor.stop(10)
    assert (job.state, job.exit_code) == ("failed", 3)
    assert job.reason == (
        "cannot download the base model: acme/tiny is not in the local cache and "
        "HF_HUB_OFFLINE is set; download it with hf download acme/tiny (on a machine "
        "online), or unset HF_HUB_OFFLINE"
    )
    assert not (Path(job.run_dir or "") / "fine_tune_dataset.jsonl").exists()


def test_a_bad_base_is_refused_before_queueing_and_bases_do_not_coalesce(
    tmp_path: Path, tiny_model: Path, tiny_model_64: Path
) -> None:
    _profile(tmp_path / "state", tmp_path / "profiles", n=6)
    settings = _settings(tmp_path, tiny_model)
    ledger = Ledger(settings.ledger_path)
    ctx = summary_context(settings)
    missing = tmp_path / "nowhere"
    with pytest.raises(CommandError) as refused:
        train_request({"profile": "alice", "base_model": str(missing)})
    assert refused.value.code == "bad_args"
    assert f"base model '{missing}': no such file or directory" in refused.value.message
    assert ledger.jobs() == []

    def queue(base: str | None) -> dict[str, object]:
        return queue_job(ledger, train_request({"profile": "alice", "base_model": base}), ctx)

    first, other, same = queue(str(tiny_model_64)), queue(None), queue(str(tiny_model_64))
    assert first["created"] is True and other["created"] is True
    assert same["created"] is False and same["job"] == first["job"]
    assert f"base {tiny_model_64}) is already queued" in str(same["coalesced"])
    assert [j.args.get("base_model") for j in reversed(ledger.jobs())] == [
        str(tiny_model_64),
        None,
    ]

"""A job that runs out of memory is retried once with the next cheaper plan."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from services.curation import load_rules
from services.ingest import Ingestor, make_curator
from services.ledger import Ledger
from services.settings import load_settings
from services.training.config import ResolvedConfig
from tests.daemon.jobs_harness import Harness

WORDS = ["zebra", "quartz", "kettle", "umbrella", "violin", "xylophone", "marmalade", "juniper"]


def _long_profile(state: Path, profiles: Path, n: int = 620) -> None:
    """Memories whose answers fill the 512-token window of the tiny model."""
    rng = random.Random(0)
    mem = profiles / "alice" / "memory"
    mem.mkdir(parents=True)
    (mem / "pc.jsonl").write_text(
        "\n".join(
            json.dumps(
                {
                    "prompt": f"Tell me story number {i}?",
                    "completion": " ".join(rng.choice(WORDS) for _ in range(300)),
                    "quality_score": 9,
                }
            )
            for i in range(n)
        )
    )
    with Ledger(state / "ledger.sqlite3") as ledger:
        curate = make_curator(load_rules())
        Ingestor(ledger, None, max_file_bytes=10**8, curate=curate).ingest_file(
            "alice", mem / "pc.jsonl"
        )


def test_an_out_of_memory_job_is_retried_with_half_the_micro_batch(
    tmp_path: Path, tiny_model_64: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The child's address space stays predictable: one thread pool, few malloc arenas.
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    state = tmp_path / "state"
    _long_profile(state, tmp_path / "profiles")
    # The planner is told of 8 GiB; the child may map 4600 MiB: 512 samples of 512 tokens
    # in one forward pass (about 5.6 GiB mapped, measured) run out of it, 256 (about
    # 3.7 GiB) do not.
    settings = load_settings(
        overrides={
            "state_dir": str(state),
            "profiles_dir": str(tmp_path / "profiles"),
            "training": {
                "base_model": str(tiny_model_64),
                "device": "cpu",
                "gpu_memory_gb": 8,
                "memory_limit_mb": 4600,
            },
        }
    )
    h = Harness(settings, python=None)
    h.supervisor.start()
    try:
        job = h.run(
            timeout=600,
            config={
                "batch_size": 512,
                "gradient_accumulation_steps": 1,
                "max_seq_length": 512,
                "micro_batch_tokens": 512 * 512,
                "max_steps": 1,
                "save_steps": 100,
                "gate": {"enabled": False},
            },
        )
    finally:
        h.supervisor.stop(10)
    assert job.state == "succeeded", (job.reason, job.error)
    assert "retried after running out of memory" in (job.reason or "")
    fallback = (job.result or {})["oom_fallback"]
    assert fallback["from"] == "lora micro-batch 512"
    assert fallback["to"] == "lora micro-batch 256"
    assert "allocate memory" in fallback["error"]
    run_dir = Path(job.run_dir or "")
    record = json.loads((run_dir / "oom_fallback.json").read_text())
    assert record["failed_plan"]["micro_batch"] == 512
    resolved = ResolvedConfig.read(run_dir / "config.json")
    assert resolved.plan is not None and resolved.plan["fallback_from"]["micro_batch"] == 512
    cfg = resolved.config
    assert (cfg.batch_size, cfg.gradient_accumulation_steps) == (256, 2)  # still 512 a step
    assert cfg.micro_batch_tokens == 256 * 512
    assert resolved.sources["micro_batch_tokens"] == "plan"
    assert job.result["metrics"]["steps"] == 1

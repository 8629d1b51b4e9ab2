"""The training child under torchrun: two ranks (gloo, this CPU) train the tiny model as
one process does with the same effective batch and seed, and write one set of artifacts."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from services.training.command import build_command
from services.training.config import resolve_config
from services.training.progress import DoneEvent, ProgressParser, StartEvent
from tests.services.training.training_helpers import REPO, write_dataset

# Dropout off: one process and two ranks draw their dropout masks from different streams.
SAME = {
    "learning_rate": 1e-2,
    "warmup_ratio": 0.0,
    "num_epochs": 1,
    "batch_size": 4,
    "gradient_accumulation_steps": 2,
    "max_seq_length": 128,
    "save_steps": 2,
    "save_total_limit": 2,
    "lora": {"dropout": 0.0},
}


def prepare(run_dir: Path, model: Path, tokenizer: Any, kind: str) -> Path:
    write_dataset(run_dir / "fine_tune_dataset.jsonl", tokenizer, n_train=32, n_eval=8)
    resolve_config(
        base_model=model,
        kind=kind,
        n_samples=40,
        mode=None,
        preset=None,
        job_args=SAME,
        etc_dir=REPO / "etc",
    ).write(run_dir)
    return run_dir


def train(run_dir: Path, kind: str, model: Path, nproc: int | None) -> DoneEvent:
    argv = build_command(
        run_dir=run_dir,
        kind=kind,
        base=str(model),
        cache_dir=run_dir.parent / "cache",
        progress_fd=1,
        device="cpu",
        nproc_per_node=nproc,
    )
    done = subprocess.run(
        argv,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    parser = ProgressParser()
    events = parser.feed(done.stdout.encode()) + parser.close()
    # One stream of progress: one start, one done, each step once.
    assert sum(isinstance(e, StartEvent) for e in events) == 1
    assert isinstance(events[-1], DoneEvent)
    assert sum(isinstance(e, DoneEvent) for e in events) == 1
    logged = [json.loads(line)["event"] for line in (run_dir / "progress.jsonl").open()]
    assert logged.count("start") == 1 and logged.count("done") == 1
    return events[-1]


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_two_ranks_train_as_one_process(
    tmp_path: Path, tiny_model: Path, tiny_tokenizer: Any, kind: str
) -> None:
    one = train(prepare(tmp_path / "one", tiny_model, tiny_tokenizer, kind), kind, tiny_model, None)
    two_dir = prepare(tmp_path / "two", tiny_model, tiny_tokenizer, kind)
    two = train(two_dir, kind, tiny_model, 2)
    assert two.metrics["ranks"] == 2 and "ranks" not in one.metrics
    assert one.metrics["steps"] == two.metrics["steps"] == 4
    for key in ("train_loss", "eval_loss", "eval_loss_final"):
        a, b = one.metrics[key], two.metrics[key]
        assert abs(a - b) <= 1e-3 * abs(a), (key, a, b)
    assert one.metrics["train_tokens"] == two.metrics["train_tokens"]
    # One set of artifacts, as one process writes them.
    artifact = "adapter" if kind == "lora" else "model"
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == sorted(
        p.name for p in two_dir.iterdir()
    )
    assert sorted(p.name for p in (two_dir / artifact).iterdir()) == sorted(
        p.name for p in (tmp_path / "one" / artifact).iterdir()
    )
    assert sorted(p.name for p in (two_dir / "checkpoints").iterdir()) == sorted(
        p.name for p in (tmp_path / "one" / "checkpoints").iterdir()
    )
    assert two.artifact == str(two_dir / artifact)
    assert two.metrics["gate"]["passed"] is True

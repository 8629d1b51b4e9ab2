"""The training child on an ``ollama:NAME`` base: the GGUF in Ollama's store is converted
once into the base-model cache and a LoRA trains on it, with the low-bit warning in the
child's log."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

from services.curation import load_rules
from services.ledger import Ledger
from services.run_prep import prepare_training_run
from services.training.command import ExitCode
from services.training.progress import DoneEvent, ProgressParser
from tests.fakes.ollama_server import FakeOllama
from tests.services.ollama_names import SPEC
from tests.services.test_ollama_base_planning import _ingest
from tests.services.training.training_helpers import run_child

SMALL = {"max_steps": 2, "batch_size": 2, "max_seq_length": 64, "num_epochs": 1}


def test_a_lora_trains_on_a_model_installed_in_ollama(
    ollama_smollm2: FakeOllama, tmp_path: Path
) -> None:
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        _ingest(ledger, tmp_path, n=24)
        run_dir = prepare_training_run(
            ledger,
            "alice",
            tmp_path / "run",
            kind="lora",
            base_model=SPEC,
            family=None,
            rules=load_rules(),
            job_args=SMALL,
            cache_dir=tmp_path / "cache",
        ).run_dir
    done = run_child(run_dir, "lora", SPEC, timeout=600)
    assert done.returncode == ExitCode.OK, done.stderr[-3000:]
    parser = ProgressParser()
    events = parser.feed(done.stdout.encode()) + parser.close()
    assert isinstance(events[-1], DoneEvent) and events[-1].metrics["steps"] == 2
    with safe_open(str(run_dir / "adapter" / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all("lora_" in k for k in keys)

    (converted,) = (tmp_path / "cache").iterdir()  # the run_child cache: one conversion
    assert converted.name.startswith("sha256-")
    assert json.loads((converted / "personad-source.json").read_text())["ollama"] in SPEC
    assert "low-bit base model" in done.stdout + done.stderr
    assert "a dequantized 4-bit base trains worse" in done.stdout + done.stderr

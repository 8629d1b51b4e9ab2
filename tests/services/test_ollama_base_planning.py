"""Planning a job on an ``ollama:NAME`` base: from its GGUF's header in Ollama's store,
loading no weights and converting nothing, with the low-bit warning where people see it
(``train --dry-run``, the run's config.json)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from services.curation import load_rules
from services.ledger import Ledger
from services.plan_preview import preview
from services.run_prep import prepare_training_run
from services.settings import load_settings
from services.training.base_model import embedded_path
from services.training.config import CONFIG_FILE
from services.training.modelinfo import count_parameters
from tests.daemon_process import REPO
from tests.fakes.ollama_server import FakeOllama
from tests.services.ollama_names import SPEC
from tests.services.test_run_prep_probes import _ingest

DRY_RUN = (sys.executable, "-m", "daemon.cli", "train", "alice", "--dry-run")
WARNING = "a dequantized 4-bit base trains worse than the original weights"


def test_a_run_is_prepared_from_the_gguf_header_with_the_warning_in_its_plan(
    ollama_smollm2: FakeOllama, tmp_path: Path
) -> None:
    cache = tmp_path / "base-models"
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        _ingest(ledger, tmp_path, n=40)
        prepared = prepare_training_run(
            ledger,
            "alice",
            tmp_path / "run",
            kind="lora",
            base_model=SPEC,
            family=None,  # the chat format from the GGUF's own template
            rules=load_rules(),
            cache_dir=cache,
        )
    config = json.loads((prepared.run_dir / CONFIG_FILE).read_text())
    assert Path(config["base_model"]).parent == ollama_smollm2.models_dir / "blobs"
    assert config["model"]["params"] == count_parameters(embedded_path("smollm2"))[0]
    assert config["plan"]["fits"] is True
    assert [w for w in config["plan"]["warnings"] if SPEC in w and WARNING in w]
    assert not cache.exists() or not any(cache.iterdir())  # nothing converted
    first = json.loads((prepared.run_dir / "fine_tune_dataset.jsonl").read_text().splitlines()[0])
    assert "<|im_start|>" in first["text"]  # SmolLM2's template, read from the blob


def test_a_dry_run_plan_names_the_warning(ollama_smollm2: FakeOllama, tmp_path: Path) -> None:
    settings = load_settings(overrides={"state_dir": tmp_path / "state"})
    result = preview(settings, "alice", base_model=SPEC, gpu_memory_gb=24)
    assert result["plan"]["fits"] is True
    assert result["model"]["params"] == count_parameters(embedded_path("smollm2"))[0]
    assert len(result["warnings"]) == 1 and WARNING in result["warnings"][0]

    done = subprocess.run(
        [*DRY_RUN, "--state-dir", str(tmp_path / "state"), "--base-model", SPEC],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PATH": "/usr/bin:/bin",
            "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(REPO),
            "OLLAMA_HOST": ollama_smollm2.url,
            "HOME": os.environ["HOME"],
        },
    )
    assert done.returncode == 0, done.stderr
    assert f"plan for lora of {SPEC}" in done.stdout
    assert f"warning: {SPEC} is quantized to Q4_1: {WARNING}" in done.stdout.replace("\n", " ")

    ollama_smollm2.stop()
    down = subprocess.run(
        [*DRY_RUN, "--state-dir", str(tmp_path / "state"), "--base-model", SPEC],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "OLLAMA_HOST": "127.0.0.1:9"},
    )
    assert down.returncode == 1
    assert "cannot plan: Ollama is not reachable at 127.0.0.1:9" in down.stderr

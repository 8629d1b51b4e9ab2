"""A LoRA job on a model installed in Ollama (``ollama:NAME``): planned from the GGUF in
Ollama's store with the low-bit warning in its summary and its run's plan, and published to
Ollama as ``FROM NAME`` plus the adapter, nothing merged or uploaded of the base."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.render_profile import summary_lines
from daemon.train_command import summarize, summary_context, train_request
from services.settings import load_settings
from services.training.base_model import embedded_path
from tests.daemon.jobs_harness import Harness
from tests.daemon.test_publish_flow import _add
from tests.fakes.ollama_server import FakeOllama
from tests.services.ollama_names import NAME, SPEC

WARNING = "a dequantized 4-bit base trains worse than the original weights"


def test_a_lora_on_an_ollama_base_is_published_on_the_installed_model(
    tmp_path: Path, fake_python: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRAINER", "ok")
    with FakeOllama() as ollama:
        ollama.add_model(NAME, weights_file=embedded_path("smollm2"), quantization_level="Q4_1")
        monkeypatch.setenv("OLLAMA_HOST", ollama.url)
        settings = load_settings(
            overrides={
                "state_dir": str(tmp_path / "state"),
                "profiles_dir": str(tmp_path / "profiles"),
                "training": {"base_model": SPEC, "family": "smollm"},
                "triggers": {"lora_min_samples": 4},
                "ollama": {"url": ollama.url},
            }
        )
        h = Harness(settings, fake_python)
        _add(h.ledger, tmp_path, 12)
        request = train_request({"profile": "alice"})
        summary = summarize(h.ledger, request, summary_context(settings))
        assert summary["model"]["base"] == SPEC
        assert f"  warning  {SPEC} is quantized to Q4_1: {WARNING}" in "\n".join(
            summary_lines(summary)
        )
        h.supervisor.start()
        try:
            job = h.run(kind="lora", force=True)
        finally:
            h.supervisor.stop(10)
        assert job.state == "succeeded", job.reason
        run_dir = Path(job.run_dir or "")
        argv = json.loads((run_dir / "argv.json").read_text())
        assert argv[argv.index("--base") + 1] == SPEC
        plan = json.loads((run_dir / "config.json").read_text())["plan"]
        assert [w for w in plan["warnings"] if WARNING in w]

        release = (job.result or {})["release"]
        assert release["ollama_model"] == "personad-alice:v1"
        (create,) = [r.json for r in ollama.requests_for("/api/create")]
        assert create["from"] == NAME and "adapter_model.safetensors" in create["adapters"]
        assert ollama.model("personad-alice:latest").parent_model == NAME
        modelfile = (run_dir / "Modelfile").read_text().splitlines()
        assert f"FROM {NAME}" in modelfile and f"ADAPTER {run_dir / 'adapter'}" in modelfile
        assert not (run_dir / "model").exists()  # nothing merged

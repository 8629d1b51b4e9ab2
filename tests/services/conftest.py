"""Fixtures of the services' tests: a fake Ollama server with SmolLM2's Q4_1 GGUF installed
(``ollama_smollm2``), its store laid out as the real server's, for ``ollama:NAME`` bases."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.training.base_model import embedded_path
from tests.fakes.ollama_server import FakeOllama
from tests.services.ollama_names import NAME


@pytest.fixture
def ollama_smollm2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeOllama]:
    """A server with SmolLM2's Q4_1 GGUF installed as NAME (its blob a link, not a copy)."""
    with FakeOllama() as fake:
        fake.add_model(
            NAME,
            weights_file=embedded_path("smollm2"),
            family="llama",
            parameter_size="134.52M",
            quantization_level="Q4_1",
        )
        monkeypatch.setenv("OLLAMA_HOST", fake.url)
        monkeypatch.delenv("OLLAMA_MODELS", raising=False)
        monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.ollama of the machine's
        yield fake

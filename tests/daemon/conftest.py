"""Fixtures for the job tests: a tiny model and a stand-in training interpreter."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from tests.services.training.training_helpers import build_tiny_model

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def fake_python(tmp_path: Path) -> str:
    script = tmp_path / "fake-python"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{HERE / "fake_trainer.py"}" "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)

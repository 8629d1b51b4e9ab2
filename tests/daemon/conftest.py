"""Fixtures for the job tests: a stand-in training interpreter (the tiny model is in
tests/conftest.py)."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture
def fake_python(tmp_path: Path) -> str:
    script = tmp_path / "fake-python"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{HERE / "fake_trainer.py"}" "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)

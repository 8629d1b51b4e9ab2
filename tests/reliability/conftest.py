"""A real daemon per test module, on fake-Ollama embeddings, for the fuzz and socket tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_process import DaemonProcess
from tests.reliability.fuzz import fuzz_daemon


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    """Default socket settings (64 connections at most); must stop cleanly."""
    root = Path(tempfile.mkdtemp(prefix="pdfz-"))
    try:
        with fuzz_daemon(root) as d:
            yield d
            assert d.stop() == 0
    finally:
        shutil.rmtree(root, ignore_errors=True)

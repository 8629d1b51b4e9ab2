"""Where the tests find the repository and their fixtures (all inside the repository)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Real public inputs (chat templates, Ollama templates, MetaHuman events); provenance in
# tests/fixtures/README.md and the SOURCES / .json sidecars beside each file.
FIXTURES = REPO / "tests" / "fixtures"

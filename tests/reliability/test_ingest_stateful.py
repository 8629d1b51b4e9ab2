"""Ingestion under random writers and restarts keeps exactly the memories of complete files.

The real daemon (fake-Ollama hash embeddings), driven by the Hypothesis state machine of
tests/reliability/stateful.py: files created whole, written in chunks with pauses,
renamed into place, duplicated under new names, rewritten, deleted, and the daemon
stopped by SIGTERM or SIGKILL and started again. The contract asserted at every check
(docs/ARCHITECTURE.md, "The data walk": memories are stored once, and stay when their file
changes or is deleted):
the ledger holds the memories of every complete file version the daemon could see,
each once and all indexed, and no memory of a half-written file.
"""

from __future__ import annotations

from tests.reliability.stateful import run_stateful


def test_ledger_holds_exactly_the_memories_of_complete_files() -> None:
    figures = run_stateful(max_examples=5, steps=15)
    assert figures["examples"] >= 5
    # Every example ended with a full check of the ledger against the model.
    assert figures["final_checks"] == figures["examples"]
    assert figures["max_memories"] > 0

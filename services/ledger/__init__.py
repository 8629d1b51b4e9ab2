"""The ledger: personad's source of truth, one SQLite file (WAL) under the state dir."""

from services.ledger.db import Database, utcnow
from services.ledger.errors import LedgerError
from services.ledger.memories import FileState, IngestOutcome, MemoryStore, SampleRow


class Ledger(MemoryStore):
    """Every ledger record type, on one connection (use one per thread)."""


__all__ = [
    "Database",
    "FileState",
    "IngestOutcome",
    "Ledger",
    "LedgerError",
    "MemoryStore",
    "SampleRow",
    "utcnow",
]

"""The ledger: personad's source of truth, one SQLite file (WAL) under the state dir."""

from services.ledger.db import Database, utcnow
from services.ledger.errors import LedgerError, LedgerUnusable
from services.ledger.jobs import Job, JobStore
from services.ledger.memories import FileState, IngestOutcome, MemoryStore, SampleRow
from services.ledger.profile_state import ProfileStateStore
from services.ledger.versions import VersionStore


class Ledger(MemoryStore, JobStore, ProfileStateStore, VersionStore):
    """Every ledger record type, on one connection (use one per thread)."""


__all__ = [
    "Database",
    "FileState",
    "IngestOutcome",
    "Job",
    "JobStore",
    "Ledger",
    "LedgerError",
    "LedgerUnusable",
    "MemoryStore",
    "ProfileStateStore",
    "SampleRow",
    "VersionStore",
    "utcnow",
]

"""Opening the ledger: one SQLite file in WAL mode, migrated at open, one
transaction per state change."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

import sqlite_utils
import structlog

from services.ledger.errors import LedgerError, LedgerUnusable
from services.ledger.schema import MIGRATIONS

log = structlog.get_logger(__name__)


def utcnow() -> str:
    """Timestamps in the ledger: ISO 8601, UTC, microseconds (sortable as text)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


class Database:
    """A connection to the ledger. Use one per thread, as a context manager
    (``with Ledger(path) as ledger:``) wherever its life is one block."""

    def __init__(self, path: Path, *, migrate: bool = True) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
            self.db = sqlite_utils.Database(conn)
            self._refuse_newer()  # before anything is written, even the journal mode
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.execute("PRAGMA busy_timeout=30000")
        except sqlite3.Error as exc:
            if _damaged(exc):
                raise LedgerUnusable(damaged_message(self.path, str(exc))) from exc
            raise LedgerError(f"cannot open the ledger {self.path}: {exc}") from exc
        self._lock = threading.RLock()
        if migrate:
            self.migrate()

    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite_utils.Database]:
        """One state change: BEGIN IMMEDIATE ... COMMIT, rolled back on any error.

        Nested use joins the outer transaction (sqlite-utils savepoints).
        """
        with self._lock:
            if self.conn.in_transaction:
                with self.db.atomic():
                    yield self.db
                return
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise LedgerError(f"cannot start a ledger transaction: {exc}") from exc
            try:
                yield self.db
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
            else:
                self.conn.execute("COMMIT")

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[sqlite_utils.Database]:
        """Several reads that see one moment of the ledger (a read transaction), so that
        counts read one after another agree although other connections write between them.

        Inside a transaction already, the reads join it.
        """
        with self._lock:
            if self.conn.in_transaction:
                yield self.db
                return
            self.conn.execute("BEGIN DEFERRED")
            try:
                yield self.db
            finally:
                if self.conn.in_transaction:
                    self.conn.execute("COMMIT")

    def applied_migrations(self) -> list[str]:
        if "migrations" not in self.db.table_names():
            return []
        return [r["name"] for r in self.db.query("SELECT name FROM migrations ORDER BY name")]

    def _refuse_newer(self) -> None:
        """LedgerUnusable when the file holds migrations this code does not know."""
        newer = sorted(set(self.applied_migrations()) - {name for name, _ in MIGRATIONS})
        if newer:
            self.db.close()
            raise LedgerUnusable(
                f"the ledger {self.path} was written by a newer personad: it has the "
                f"migration(s) {', '.join(newer)}, which this version does not know. Upgrade "
                "personad, or restore a backup made by this version (personad restore "
                "BACKUP_DIR); the ledger was left as it is"
            )

    def migrate(self) -> list[str]:
        """Apply the migrations not yet applied, each in its own transaction."""
        try:
            return self._migrate()
        except sqlite3.DatabaseError as exc:
            if _damaged(exc):
                raise LedgerUnusable(damaged_message(self.path, str(exc))) from exc
            raise

    def _migrate(self) -> list[str]:
        applied: list[str] = []
        with self.transaction() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT)"
            )
        done = set(self.applied_migrations())
        for name, sql in MIGRATIONS:
            if name in done:
                continue
            with self.transaction() as db:
                # Another process may have applied it while we waited for the lock.
                if db.execute("SELECT 1 FROM migrations WHERE name = ?", [name]).fetchone():
                    continue
                for statement in _statements(sql):
                    db.execute(statement)
                db.execute("INSERT INTO migrations VALUES (?, ?)", [name, utcnow()])
            applied.append(name)
            log.info("ledger migration applied", migration=name, ledger=str(self.path))
        return applied

    def verify(self) -> None:
        """Start-up: LedgerUnusable (naming the file and the restore command) when the
        file is not a database or ``PRAGMA quick_check`` finds damage."""
        try:
            rows = [str(r[0]) for r in self.db.execute("PRAGMA quick_check").fetchall()]
        except sqlite3.DatabaseError as exc:
            raise LedgerUnusable(damaged_message(self.path, str(exc))) from exc
        if rows != ["ok"]:
            raise LedgerUnusable(damaged_message(self.path, "; ".join(rows[:3])))

    def integrity_check(self) -> str:
        row = self.db.execute("PRAGMA integrity_check").fetchone()
        return str(row[0])


def _statements(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";") if s.strip()]


def _damaged(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorname", "") in ("SQLITE_CORRUPT", "SQLITE_NOTADB")


def damaged_message(path: Path, detail: str) -> str:
    return (
        f"the ledger {path} is damaged ({detail}); personad will not start on it and has "
        "not changed it. Stop here and restore the last backup: personad restore "
        "BACKUP_DIR --force (the damaged state is kept beside it)"
    )

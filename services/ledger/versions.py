"""Published model versions, numbered per profile; one of them is active."""

from __future__ import annotations

from typing import Any

from services.ledger.db import Database, utcnow


class VersionStore(Database):
    def next_version(self, profile: str) -> int:
        row = self.db.execute(
            "SELECT MAX(version) FROM model_versions WHERE profile = ?", [profile]
        ).fetchone()
        return int(row[0] or 0) + 1

    def add_version(
        self,
        profile: str,
        version: int,
        *,
        kind: str,
        job_id: int | None,
        run_dir: str | None,
        path: str | None,
        base: str | None,
        ollama_model: str | None = None,
        digest: str | None = None,
        activate: bool = True,
    ) -> None:
        """Record a published version (and make it the active one), in one transaction."""
        with self.transaction() as db:
            if activate:
                db.execute("UPDATE model_versions SET active = 0 WHERE profile = ?", [profile])
            db.execute(
                "INSERT INTO model_versions (profile, version, kind, job_id, run_dir, path, base,"
                " ollama_model, digest, created_at, active)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    profile,
                    version,
                    kind,
                    job_id,
                    run_dir,
                    path,
                    base,
                    ollama_model,
                    digest,
                    utcnow(),
                    1 if activate else 0,
                ],
            )

    def set_active_version(self, profile: str, version: int) -> None:
        with self.transaction() as db:
            db.execute("UPDATE model_versions SET active = 0 WHERE profile = ?", [profile])
            db.execute(
                "UPDATE model_versions SET active = 1 WHERE profile = ? AND version = ?",
                [profile, version],
            )

    def active_version(self, profile: str) -> int | None:
        row = self.db.execute(
            "SELECT version FROM model_versions WHERE profile = ? AND active = 1", [profile]
        ).fetchone()
        return int(row[0]) if row else None

    def active_versions(self) -> dict[str, int]:
        return {
            r[0]: int(r[1])
            for r in self.db.execute("SELECT profile, version FROM model_versions WHERE active = 1")
        }

    def versions(self, profile: str) -> list[dict[str, Any]]:
        return list(
            self.db.query(
                "SELECT * FROM model_versions WHERE profile = ? ORDER BY version", [profile]
            )
        )

    def delete_version(self, profile: str, version: int) -> None:
        with self.transaction() as db:
            db.execute(
                "DELETE FROM model_versions WHERE profile = ? AND version = ? AND active = 0",
                [profile, version],
            )

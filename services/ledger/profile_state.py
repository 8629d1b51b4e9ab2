"""Ledger records of the model lifecycle: pauses, each profile's current base, and
when each schedule last ran."""

from __future__ import annotations

import json
from typing import Any

from services.ledger.db import Database, utcnow

GLOBAL_PAUSE = "paused"


class ProfileStateStore(Database):
    # -- pause / resume -------------------------------------------------------------
    def set_paused(self, profile: str | None, paused: bool) -> None:
        """Pause (or resume) one profile, or everything when ``profile`` is None."""
        with self.transaction() as db:
            if profile is None:
                if paused:
                    db.execute(
                        "INSERT OR REPLACE INTO flags (name, value) VALUES (?, ?)",
                        [GLOBAL_PAUSE, utcnow()],
                    )
                else:
                    db.execute("DELETE FROM flags WHERE name = ?", [GLOBAL_PAUSE])
                return
            db.execute(
                "INSERT OR IGNORE INTO profiles (name, created_at) VALUES (?, ?)",
                [profile, utcnow()],
            )
            db.execute(
                "UPDATE profiles SET paused = ? WHERE name = ?", [1 if paused else 0, profile]
            )

    def globally_paused(self) -> bool:
        row = self.db.execute("SELECT 1 FROM flags WHERE name = ?", [GLOBAL_PAUSE]).fetchone()
        return row is not None

    def paused_profiles(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT name FROM profiles WHERE paused = 1")}

    def may_train(self, profile: str) -> bool:
        return not self.globally_paused() and profile not in self.paused_profiles()

    # -- the current base -------------------------------------------------------------
    def current_base(self, profile: str) -> tuple[str | None, int | None]:
        """(model dir, job id) of the profile's latest full fine-tune; (None, None): the
        original base model."""
        row = self.db.execute(
            "SELECT current_base, current_base_job FROM profiles WHERE name = ?", [profile]
        ).fetchone()
        return (row[0], row[1]) if row else (None, None)

    def set_current_base(self, profile: str, model_dir: str, job_id: int) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE profiles SET current_base = ?, current_base_job = ? WHERE name = ?",
                [model_dir, job_id, profile],
            )

    # -- samples for the lifecycle -------------------------------------------------
    def last_training_cut(self, profile: str) -> str | None:
        """When the dataset of the profile's last successful job was taken (its start)."""
        row = self.db.execute(
            "SELECT MAX(started_at) FROM jobs WHERE profile = ? AND state = 'succeeded'",
            [profile],
        ).fetchone()
        return row[0] if row else None

    def eligible_since(self, profile: str, cut: str | None) -> int:
        row = self.db.execute(
            "SELECT COUNT(*) FROM samples WHERE profile = ? AND excluded IS NULL"
            " AND created_at > ?",
            [profile, cut or ""],
        ).fetchone()
        return int(row[0])

    def sample_records_split(
        self, profile: str, cut: str | None
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(samples curated after ``cut``, samples curated before it), as records."""
        new: list[dict[str, Any]] = []
        old: list[dict[str, Any]] = []
        for created, record in self.db.execute(
            "SELECT created_at, record FROM samples WHERE profile = ? ORDER BY created_at,"
            " memory_id",
            [profile],
        ):
            (new if created > (cut or "") else old).append(json.loads(record))
        return new, old

    # -- schedules ---------------------------------------------------------------------
    def schedule_last_run(self, name: str) -> str | None:
        row = self.db.execute(
            "SELECT last_run_at FROM schedule_runs WHERE name = ?", [name]
        ).fetchone()
        return row[0] if row else None

    def set_schedule_run(self, name: str, when: str) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO schedule_runs (name, last_run_at) VALUES (?, ?)",
                [name, when],
            )

"""The durable job queue: training jobs and their states.

queued -> running -> succeeded | failed | cancelled | interrupted | skipped. A job
left ``running`` by a crash becomes ``interrupted`` at start-up and, within the retry
limit, a new queued job (``retry_of`` the old one) takes its place.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from services.ledger.db import Database, utcnow
from services.ledger.errors import LedgerError

ACTIVE = ("queued", "running")
FINAL = ("succeeded", "failed", "cancelled", "interrupted", "skipped", "rejected")


@dataclass(frozen=True)
class Job:
    id: int
    profile: str
    kind: str
    mode: str | None
    state: str
    reason: str | None
    args: dict[str, Any]
    created_at: str
    started_at: str | None
    finished_at: str | None
    attempts: int
    progress: dict[str, Any] | None
    result: dict[str, Any] | None
    error: str | None
    run_dir: str | None
    retry_of: int | None
    exit_code: int | None
    pid: int | None
    # A job running on a cluster: {"backend", "address", "submission_id", "plan"}.
    remote: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def request_key(kind: str, mode: str | None, args: dict[str, Any] | None) -> str:
    """What makes two job requests the same: kind, mode and every argument that is set
    (the base model among them); unset ones (None, false, empty) are left out, so a
    threshold job and a plain ``train`` are the same request."""
    given = {k: v for k, v in (args or {}).items() if v not in (None, False, {}, [], "")}
    return json.dumps([kind, mode, given], sort_keys=True)


def _job(row: dict[str, Any]) -> Job:
    return Job(
        id=row["id"],
        profile=row["profile"],
        kind=row["kind"],
        mode=row["mode"],
        state=row["state"],
        reason=row["reason"],
        args=json.loads(row["args"] or "{}"),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        attempts=row["attempts"],
        progress=json.loads(row["progress"]) if row["progress"] else None,
        result=json.loads(row["result"]) if row["result"] else None,
        error=row["error"],
        run_dir=row["run_dir"],
        retry_of=row["retry_of"],
        exit_code=row["exit_code"],
        pid=row["pid"],
        remote=json.loads(row["remote"]) if row.get("remote") else None,
    )


class JobStore(Database):
    def enqueue_job(
        self,
        profile: str,
        kind: str,
        *,
        mode: str | None = None,
        args: dict[str, Any] | None = None,
        reason: str = "manual",
        retry_of: int | None = None,
    ) -> tuple[Job, bool]:
        """Queue a job; returns (job, created). Only an identical request coalesces: a
        queued or running job of the same profile, kind, mode and base model
        (``args["base_model"]``) whose other arguments (preset, config, force, ...) are
        the same is returned instead of a new one. Any other request is queued behind it
        (jobs of one profile never run at once)."""
        wanted = request_key(kind, mode, args)
        with self.transaction() as db:
            for row in db.query(
                "SELECT * FROM jobs WHERE profile = ? AND kind = ? AND state IN (?, ?) ORDER BY id",
                [profile, kind, *ACTIVE],
            ):
                if request_key(row["kind"], row["mode"], json.loads(row["args"] or "{}")) == wanted:
                    return _job(row), False
            cur = db.execute(
                "INSERT INTO jobs (profile, kind, mode, state, reason, args, created_at, retry_of)"
                " VALUES (?, ?, ?, 'queued', ?, ?, ?, ?)",
                [profile, kind, mode, reason, json.dumps(args or {}), utcnow(), retry_of],
            )
            job_id = cur.lastrowid
        job = self.job(int(job_id or 0))
        assert job is not None
        return job, True

    def job(self, job_id: int) -> Job | None:
        row = next(self.db.query("SELECT * FROM jobs WHERE id = ?", [job_id]), None)
        return _job(row) if row else None

    def jobs(self, *, states: tuple[str, ...] | None = None, limit: int = 50) -> list[Job]:
        if states:
            marks = ",".join("?" * len(states))
            rows = self.db.query(
                f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY id DESC LIMIT ?",
                [*states, limit],
            )
        else:
            rows = self.db.query("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", [limit])
        return [_job(r) for r in rows]

    def next_queued(self, exclude_profiles: set[str] | None = None) -> Job | None:
        """The job to start next, fair across profiles (least recently served first).

        Each profile offers its oldest queued job; the profile whose latest job started
        longest ago goes first (a profile never served before everyone else), ties by
        the oldest job. So with many profiles and few slots, a profile with a backlog
        takes one turn and then waits behind every other profile that has work: no
        profile waits behind another's backlog. ``exclude_profiles`` (busy or paused)
        are passed over.
        """
        rows = self.db.query(
            "SELECT j.*, (SELECT MAX(s.started_at) FROM jobs s WHERE s.profile = j.profile)"
            " AS served FROM jobs j WHERE j.state = 'queued' AND j.id ="
            " (SELECT MIN(q.id) FROM jobs q WHERE q.profile = j.profile AND q.state = 'queued')"
            " ORDER BY served IS NOT NULL, served, j.id"
        )
        for row in rows:
            if not exclude_profiles or row["profile"] not in exclude_profiles:
                return _job(row)
        return None

    def start_job(self, job_id: int, run_dir: str) -> bool:
        """queued -> running; False when the job is no longer queued (cancelled)."""
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE jobs SET state = 'running', started_at = ?, run_dir = ?,"
                " attempts = attempts + 1 WHERE id = ? AND state = 'queued'",
                [utcnow(), run_dir, job_id],
            )
            return cur.rowcount == 1

    def set_pid(self, job_id: int, pid: int) -> None:
        """The training process (and process group) of a running job."""
        with self.transaction() as db:
            db.execute("UPDATE jobs SET pid = ? WHERE id = ?", [pid, job_id])

    def set_remote(self, job_id: int, remote: dict[str, Any]) -> None:
        """Where a running job runs on a cluster (kept so a restart re-attaches to it)."""
        with self.transaction() as db:
            db.execute("UPDATE jobs SET remote = ? WHERE id = ?", [json.dumps(remote), job_id])

    def set_progress(self, job_id: int, progress: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute("UPDATE jobs SET progress = ? WHERE id = ?", [json.dumps(progress), job_id])

    def try_set_progress(self, job_id: int, progress: dict[str, Any]) -> bool:
        """set_progress, best effort: a full disk or a busy ledger must not end a job."""
        try:
            self.set_progress(job_id, progress)
        except (sqlite3.Error, LedgerError):
            return False
        return True

    def finish_job(
        self,
        job_id: int,
        state: str,
        *,
        reason: str | None = None,
        error: str | None = None,
        result: dict[str, Any] | None = None,
        exit_code: int | None = None,
    ) -> None:
        assert state in FINAL, state
        with self.transaction() as db:
            db.execute(
                "UPDATE jobs SET state = ?, finished_at = ?, reason = COALESCE(?, reason),"
                " error = ?, result = COALESCE(?, result), exit_code = ? WHERE id = ?",
                [
                    state,
                    utcnow(),
                    reason,
                    error,
                    json.dumps(result) if result is not None else None,
                    exit_code,
                    job_id,
                ],
            )

    def cancel_queued(self, job_id: int) -> bool:
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE jobs SET state = 'cancelled', finished_at = ?, reason = 'cancelled'"
                " WHERE id = ? AND state = 'queued'",
                [utcnow(), job_id],
            )
            return cur.rowcount == 1

    def recover_interrupted(
        self, max_attempts: int, *, keep_remote: bool = False
    ) -> list[tuple[Job, Job | None]]:
        """At start-up: every job left running (the daemon was killed) becomes
        interrupted and is retried as :meth:`interrupt_job` does; with ``keep_remote``,
        a job submitted to a cluster stays running (the daemon re-attaches to it)."""
        return [
            (old, self.interrupt_job(old, max_attempts))
            for old in self.jobs(states=("running",), limit=10_000)
            if not (keep_remote and old.remote)
        ]

    def interrupt_job(
        self,
        job: Job,
        max_attempts: int,
        reason: str = "the daemon stopped while the job ran",
        exit_code: int | None = None,
    ) -> Job | None:
        """Mark ``job`` interrupted and, while its chain of attempts is below
        ``max_attempts``, queue its retry, in one transaction; returns the retry."""
        attempt = self._attempt_number(job)
        with self.transaction():
            self.finish_job(
                job.id, "interrupted", reason=reason, error="interrupted", exit_code=exit_code
            )
            if attempt >= max_attempts:
                return None
            retry, _ = self.enqueue_job(
                job.profile,
                job.kind,
                mode=job.mode,
                args=job.args,
                reason=f"retry {attempt + 1} of {max_attempts} after interruption",
                retry_of=job.id,
            )
            return retry

    def _attempt_number(self, job: Job) -> int:
        n, current = 1, job
        while current.retry_of is not None:
            prev = self.job(current.retry_of)
            if prev is None:
                break
            n, current = n + 1, prev
        return n

    def last_succeeded(self, profile: str, kind: str | None = None) -> Job | None:
        sql = "SELECT * FROM jobs WHERE profile = ? AND state = 'succeeded'"
        params: list[Any] = [profile]
        if kind:
            sql += " AND kind = ?"
            params.append(kind)
        row = next(self.db.query(sql + " ORDER BY finished_at DESC LIMIT 1", params), None)
        return _job(row) if row else None

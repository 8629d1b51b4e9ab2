"""Running supervisor jobs in tests."""

from __future__ import annotations

import time

from daemon.supervisor import Supervisor
from services.ledger import Job, Ledger
from services.settings import Settings


class Harness:
    def __init__(self, settings: Settings, python: str | None) -> None:
        self.settings = settings
        self.supervisor = Supervisor(settings, python=python)
        self.ledger = Ledger(settings.ledger_path)

    def run(self, kind: str = "lora", timeout: float = 60, **args: object) -> Job:
        job, _ = self.ledger.enqueue_job("alice", kind, args=dict(args))
        self.supervisor.wake()
        return self.wait(job.id, timeout)

    def wait(self, job_id: int, timeout: float = 60, states: tuple[str, ...] = ()) -> Job:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.ledger.job(job_id)
            assert job is not None
            if (states and job.state in states) or (
                not states and job.state not in ("queued", "running")
            ):
                return job
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} still {job.state}")

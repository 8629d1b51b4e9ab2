"""Training children as Ray jobs (``training.backend = "ray"``), through Ray's job server.

:class:`RayJobs` submits the training child's command line as a job's entrypoint
(``ray.job_submission.JobSubmissionClient``: entrypoint, runtime_env, GPUs), asks for its
status, stops it and reads the tail of its logs. The job writes its progress into the run
directory as it always does (``progress.jsonl``), which the daemon follows: the run
directories, the base-model cache and the interpreter (``training.python``) must be at
the same paths on the cluster's nodes as on the daemon's machine (shared storage), which
:func:`check_shared_storage` checks with a small job at start-up.

ray is imported when a client is made, not when this module is imported.
"""

from __future__ import annotations

import os
import shlex
import time
import uuid
from pathlib import Path
from typing import Any

from services.errors import PersonadError

# Job states of Ray's job server that do not change any more.
FINAL = ("STOPPED", "SUCCEEDED", "FAILED")
# The daemon's environment passed on to the job (offline model hubs, thread counts).
PASSED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
CODE_ROOT = Path(__file__).resolve().parents[1]


class RayJobError(PersonadError):
    """The Ray cluster could not do what was asked; the message says what to do."""


class RayJobs:
    """The job server of the Ray cluster at ``address`` (``http://head:8265``)."""

    def __init__(self, address: str) -> None:
        try:
            from ray.job_submission import JobSubmissionClient
        except ImportError as exc:
            raise RayJobError(
                "training.backend 'ray' needs the 'ray' package: "
                f"pip install 'ray[default]' ({exc})"
            ) from exc
        self.address = address
        try:
            self._client = JobSubmissionClient(address)
        except Exception as exc:
            raise RayJobError(f"cannot reach the Ray job server at {address}: {exc}") from exc

    def submit(
        self,
        argv: list[str],
        *,
        submission_id: str,
        num_gpus: float = 0,
        num_cpus: float = 0,
        env: dict[str, str] | None = None,
    ) -> str:
        """Submit ``argv`` as a job's entrypoint; returns the submission id."""
        env_vars = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
        env_vars.update({"PYTHONPATH": str(CODE_ROOT), "PYTHONUNBUFFERED": "1", **(env or {})})
        try:
            return str(
                self._client.submit_job(
                    entrypoint=shlex.join(argv),
                    submission_id=submission_id,
                    runtime_env={"env_vars": env_vars},
                    entrypoint_num_gpus=num_gpus or None,
                    entrypoint_num_cpus=num_cpus or None,
                    metadata={"submitted_by": "personad"},
                )
            )
        except Exception as exc:
            raise RayJobError(f"{self.address}: cannot submit {submission_id}: {exc}") from exc

    def status(self, submission_id: str) -> str:
        """PENDING, RUNNING, STOPPED, SUCCEEDED or FAILED; UNKNOWN when the cluster no
        longer knows the job (a new head)."""
        try:
            return str(self._client.get_job_status(submission_id).value)
        except Exception as exc:
            if "does not exist" in str(exc) or "404" in str(exc):
                return "UNKNOWN"
            raise RayJobError(f"{self.address}: cannot read {submission_id}: {exc}") from exc

    def stop(self, submission_id: str) -> bool:
        try:
            return bool(self._client.stop_job(submission_id))
        except Exception as exc:
            raise RayJobError(f"{self.address}: cannot stop {submission_id}: {exc}") from exc

    def last_log_line(self, submission_id: str) -> str | None:
        try:
            logs = str(self._client.get_job_logs(submission_id))
        except Exception:
            return None
        lines = [ln.strip() for ln in logs.splitlines() if ln.strip()]
        return lines[-1][:500] if lines else None

    def info(self, submission_id: str) -> Any:
        return self._client.get_job_info(submission_id)


def check_shared_storage(
    jobs: RayJobs, state_dir: Path, python: str, timeout_s: float = 120.0
) -> None:
    """A small job on the cluster must find a file the daemon just wrote under
    ``state_dir/runs`` and run ``python`` with personad importable, and its answer must
    reach the daemon: else a :class:`RayJobError` that says what is not shared."""
    runs = state_dir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    probe = runs / f".ray-check-{token}"
    answer = runs / f".ray-check-{token}.answer"
    probe.write_text(token)
    code = (
        "import sys, pathlib, services; "
        f"p = pathlib.Path({str(probe)!r}); "
        f"pathlib.Path({str(answer)!r}).write_text(p.read_text())"
    )
    sid = f"personad-storage-check-{token[:12]}"
    try:
        jobs.submit([python, "-c", code], submission_id=sid)
        deadline = time.monotonic() + timeout_s
        status = "PENDING"
        while time.monotonic() < deadline:
            status = jobs.status(sid)
            if status in FINAL:
                break
            time.sleep(0.5)
        if status == "SUCCEEDED" and answer.is_file() and answer.read_text() == token:
            return
        detail = jobs.last_log_line(sid) or f"the check job ended {status}"
        if status not in FINAL:
            jobs.stop(sid)
            detail = f"the check job did not finish in {timeout_s:.0f}s"
        raise RayJobError(
            f"the Ray cluster at {jobs.address} does not share this daemon's storage: a job "
            f"there must read {runs} and run {python} with personad importable ({detail}); "
            "mount the state directory and the interpreter at the same paths on every node"
        )
    finally:
        probe.unlink(missing_ok=True)
        answer.unlink(missing_ok=True)

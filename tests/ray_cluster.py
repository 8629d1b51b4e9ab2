"""A real local Ray cluster for tests: `ray start --head --block` (its job server on a
free port), in a temp dir of its own; stop() ends every process it started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.chroma_server import free_port


class RayHead:
    def __init__(self, temp_dir: Path) -> None:
        self.temp_dir = temp_dir
        self.port = free_port()
        self.dashboard_port = free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = temp_dir.parent / "ray-head.log"

    def start(self, timeout: float = 180.0) -> RayHead:
        ray = Path(sys.executable).parent / "ray"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                str(ray),
                "start",
                "--head",
                "--block",
                "--port",
                str(self.port),
                "--dashboard-host",
                "127.0.0.1",
                "--dashboard-port",
                str(self.dashboard_port),
                "--num-cpus",
                "2",
                "--num-gpus",
                "0",
                "--include-dashboard",
                "true",
                "--disable-usage-stats",
                "--temp-dir",
                str(self.temp_dir),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
            start_new_session=True,
        )
        from ray.job_submission import JobSubmissionClient

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"ray start exited: {self.log_path.read_text()[-3000:]}")
            try:
                JobSubmissionClient(self.address).list_jobs()
                return self
            except Exception:
                time.sleep(0.5)
        raise AssertionError(f"the Ray job server did not answer in {timeout}s")

    def client(self):  # type: ignore[no-untyped-def]
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.address)

    def stop(self) -> None:
        """SIGTERM to `ray start --block` (it stops what it started), then SIGKILL to
        whatever of its session is left."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(60)
        for pid in _session(self.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()
        self.proc = None


def _session(sid: int) -> list[int]:
    """Processes of session ``sid`` (what `ray start` started without a new session)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) == sid:
                found.append(int(entry.name))
        except OSError:
            continue
    return found

"""Running the real daemon as a subprocess in tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from daemon.client import ClientError, ControlClient

REPO = Path(__file__).resolve().parents[1]


class DaemonProcess:
    """`personad run` in a private state dir, talking over a private socket."""

    def __init__(
        self,
        root: Path,
        *,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        config: Path | None = None,
    ) -> None:
        self.root = root
        self.state_dir = root / "state"
        self.profiles_dir = root / "profiles"
        self.socket = root / "run" / "personad.sock"
        self.log_path = root / "daemon.log"
        self.env = {
            **os.environ,
            "PERSONAD_STATE_DIR": str(self.state_dir),
            "PERSONAD_PROFILES_DIR": str(self.profiles_dir),
            "PERSONAD_SOCKET_PATH": str(self.socket),
            "PERSONAD_LOG__FORMAT": "json",
            # A free port each: daemons of parallel tests never meet on 8765.
            "PERSONAD_HTTP__LISTEN": "127.0.0.1:0",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.args = args or []
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "daemon.cli", *args]

    def start(self, wait: bool = True, timeout: float = 120.0) -> DaemonProcess:
        cmd = self.command("run", *self.args)
        if self.config is not None:
            cmd += ["--config", str(self.config)]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            try:
                self.call("ping", timeout=2)
                return
            except ClientError:
                time.sleep(0.1)
        raise AssertionError(f"daemon not ready in {timeout}s:\n{self.log()}")

    def call(self, cmd: str, args: dict[str, Any] | None = None, timeout: float = 60) -> Any:
        with ControlClient(self.socket, timeout=timeout) as client:
            return client.call(cmd, args)

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args),
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def cli_json(self, *args: str) -> Any:
        done = self.cli(*args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def wait_for(self, predicate: Any, timeout: float = 120.0, interval: float = 0.1) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(
            f"condition not met in {timeout}s (last: {last!r})\n{self.log()[-4000:]}"
        )

    def http_url(self) -> str:
        """The HTTP API's address (``http://127.0.0.1:PORT/``), once it listens (it starts
        just after the socket answers)."""
        return str(self.wait_for(lambda: self.call("status")["daemon"]["http"]["url"], 30))

    def http_token(self) -> str:
        return (self.state_dir / "http-token").read_text().strip()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

"""The shipped unit file passes systemd's own checks."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "personad.service"

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (Debian package 'systemd'; .ci/run installs it)",
)


@pytest.fixture
def installed_unit(tmp_path: Path) -> Path:
    # As `make install-systemd` does: ExecStart points at this checkout's personad.
    personad = Path(sys.executable).parent / "personad"
    text = UNIT.read_text().replace("/opt/personad/.venv/bin/personad", str(personad))
    unit = tmp_path / "personad.service"
    unit.write_text(text)
    return unit


def test_unit_verifies_without_warnings(installed_unit: Path) -> None:
    done = subprocess.run(
        ["systemd-analyze", "verify", str(installed_unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    unit_lines = [line for line in done.stderr.splitlines() if "personad.service" in line]
    assert unit_lines == []


def test_unit_security_exposure_at_most_2_5(installed_unit: Path) -> None:
    # systemd 252 takes the threshold in tenths (25 == 2.5); newer ones take 2.5.
    for threshold in ("2.5", "25"):
        done = subprocess.run(
            [
                "systemd-analyze",
                "security",
                "--offline=true",
                f"--threshold={threshold}",
                str(installed_unit),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if "Failed to parse threshold" not in done.stderr:
            break
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    level = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout)
    assert level is not None and float(level.group(1)) <= 2.5


def test_unit_declares_what_the_daemon_relies_on() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "StateDirectory=personad",
        "RuntimeDirectory=personad",
        "RuntimeDirectoryMode=0700",
        "UMask=0077",
    ):
        assert line in text

"""A full disk under the state directory (a small tmpfs; needs root to mount it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.backups import fake_python
from tests.reliability.diskfull import ingest_disk_full, small_fs_unavailable, training_disk_full

WHY = small_fs_unavailable()
pytestmark = pytest.mark.skipif(WHY is not None, reason=WHY or "")


def test_ingest_pauses_on_a_full_disk_and_resumes_by_itself(short_tmp: Path) -> None:
    found = ingest_disk_full(short_tmp)
    assert found["status_when_full"]["state"] == "disk-full", found
    assert "is full" in found["status_when_full"]["last_error"], found
    assert "resumes by itself" in found["status_when_full"]["last_error"], found
    assert "disk full: ingest paused" in found["said"], found
    assert found["while_full"]["half_written_files"] == [] == found["after"]["half_written_files"]
    assert found["while_full"]["memories"] < found["expected_memories"], found
    assert found["after"]["memories"] == found["expected_memories"], found
    assert found["after"]["files"] == found["files_written"], found


def test_a_training_job_on_a_full_disk_fails_as_disk_full_and_leaves_nothing(
    short_tmp: Path,
) -> None:
    found = training_disk_full(short_tmp / "d", fake_python(short_tmp))
    assert found["job"]["state"] == "failed", found
    assert found["job"]["reason"].startswith("disk full"), found
    assert found["partial_outputs_left"] == [], found
    assert found["free_space_back"] and found["active_version"] is None, found

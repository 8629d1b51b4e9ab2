"""A full disk under the state directory (a small tmpfs; needs root to mount it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.reliability.backups import fake_python
from tests.reliability.diskfull import (
    fill,
    ingest_disk_full,
    small_fs,
    small_fs_unavailable,
    training_disk_full,
)

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


def test_a_publish_on_a_full_disk_leaves_no_half_version_and_the_active_one_stays(
    short_tmp: Path,
) -> None:
    """The local registry on a small filesystem: v1 published and active, the disk filled,
    v2's publish fails with the reason and leaves nothing of itself; with space back, v2
    publishes."""
    from services.publish import PublishError
    from services.publish.local import LocalRegistry

    def adapter(where: Path, size: int) -> Path:
        where.mkdir(parents=True)
        (where / "adapter_config.json").write_text('{"peft_type": "LORA"}')
        (where / "adapter_model.safetensors").write_bytes(os.urandom(size))
        return where

    small = adapter(short_tmp / "v1-artifact", 64 * 1024)
    big = adapter(short_tmp / "v2-artifact", 512 * 1024)
    with small_fs(short_tmp / "models", 2048) as models:
        registry = LocalRegistry(models)
        registry.publish("alice", 1, small, kind="lora", base="embedded:smollm2")
        registry.activate("alice", 1)
        filler = fill(models)
        with pytest.raises(PublishError, match=r"cannot publish alice/v2: .*No space left"):
            registry.publish("alice", 2, big, kind="lora", base="embedded:smollm2")
        assert registry.versions("alice") == [1]
        assert registry.active("alice") == 1
        assert (
            registry.serving_model("alice", "embedded:smollm2")[1]
            == models / "alice" / "v1" / "adapter"
        )
        leftovers = [p.name for p in (models / "alice").iterdir() if p.name.startswith(".")]
        assert [n for n in leftovers if "v2" in n] == []  # no half of v2, hidden or not
        filler.unlink()
        registry.publish("alice", 2, big, kind="lora", base="embedded:smollm2")
        registry.activate("alice", 2)
        assert registry.versions("alice") == [1, 2] and registry.active("alice") == 2

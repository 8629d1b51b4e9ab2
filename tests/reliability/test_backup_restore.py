"""personad backup during a steady ingest, personad restore into a fresh state."""

from __future__ import annotations

from pathlib import Path

from tests.reliability.backups import backup_round_trip


def test_backup_restore_round_trip(short_tmp: Path) -> None:
    found = backup_round_trip(short_tmp, files=10)
    assert found["restore_refused_while_running"], found
    assert found["restore_refused_over_state"], found
    assert all(found["equal"].values()), found
    assert found["active_link"] == found["active_before"] == "v1", found
    assert found["registry_equal"], found
    # The snapshot was taken while files arrived: some came after it.
    assert found["manifest_counts"]["memories"] < 2 * found["files_written"], found
    assert found["after_restart"] == {
        "memories": 2 * found["files_written"],
        "indexed": 2 * found["files_written"],
        "active_version": "v1",
    }, found
    assert found["old_files_reread"] == 0 and found["duplicates"] == 0, found
    assert found["new_files_ingested"] > 0, found
    assert found["search_hits"] == 3

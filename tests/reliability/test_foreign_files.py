"""Files that are not the profile's: planted links are refused, profile names validated."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from daemon.client import CommandFailed
from daemon.watcher import classify
from services.memories import read_memory_file
from services.profile_names import is_valid_profile_name
from tests.daemon_process import DaemonProcess
from tests.reliability.foreign import run_planted_links
from tests.reliability.fuzz import fuzz_daemon

GOOD = b'{"prompt": "Where?", "completion": "By the sea.", "quality_score": 8}\n'


def test_planted_links_are_refused_and_nothing_of_theirs_is_searchable(tmp_path: Path) -> None:
    figures = run_planted_links(tmp_path)
    assert figures["refused"] == len(figures["planted_files"]), figures
    for reason in figures["reasons"].values():
        assert "copy the file in" in reason
    assert "/etc/passwd" in figures["reasons"]["to-etc.txt"]
    assert figures["leaked_texts"] == []
    assert figures["alice_memories"] == figures["alice_indexed"] == 2
    assert not figures["inside_link_rejected"]
    assert figures["hard_link_tested"] == (os.geteuid() == 0)


def test_reader_refuses_a_link_out_of_the_tree_and_keeps_one_inside(tmp_path: Path) -> None:
    tree, elsewhere = tmp_path / "alice" / "memory", tmp_path / "bob"
    tree.mkdir(parents=True)
    elsewhere.mkdir()
    (elsewhere / "x.jsonl").write_bytes(GOOD)
    (tree / "real.jsonl").write_bytes(GOOD)
    (tree / "out.jsonl").symlink_to(elsewhere / "x.jsonl")
    (tree / "in.jsonl").symlink_to("real.jsonl")
    result, sha = read_memory_file(tree / "out.jsonl", within=tree)
    assert result.memories == [] and sha is None
    assert "leads outside this profile's memory folder" in result.problems[0].reason
    assert len(read_memory_file(tree / "in.jsonl", within=tree)[0].memories) == 1
    # A memory folder that is itself a link (to where the owner keeps notes) is its tree.
    (tmp_path / "carol").mkdir()
    (tmp_path / "carol" / "memory").symlink_to(elsewhere, target_is_directory=True)
    carol = tmp_path / "carol" / "memory"
    assert len(read_memory_file(carol / "x.jsonl", within=carol)[0].memories) == 1


@pytest.mark.parametrize("name", ["../alice", "/etc", ".hidden", "a b", "", "x" * 65, "-x"])
def test_invalid_profile_names_everywhere(name: str, tmp_path: Path) -> None:
    assert not is_valid_profile_name(name)
    if name and "/" not in name:
        assert classify(tmp_path, tmp_path / name / "memory" / "a.jsonl") is None


@pytest.mark.parametrize("name", ["alice", "team_x-2", "ålice", "李雷", "a.b", "x" * 64])
def test_valid_profile_names(name: str, tmp_path: Path) -> None:
    assert is_valid_profile_name(name)
    assert classify(tmp_path, tmp_path / name / "memory" / "a.jsonl") == (
        name,
        tmp_path / name / "memory" / "a.jsonl",
    )


def test_socket_and_cli_say_invalid_profile_name() -> None:
    with tempfile.TemporaryDirectory(prefix="pdpn-") as root, fuzz_daemon(Path(root)) as d:
        assert isinstance(d, DaemonProcess)
        for name in ("../alice", "/etc"):
            for cmd in ("search", "ask", "versions", "train"):
                args = {"profile": name, "query": "x", "question": "x"}
                with pytest.raises(CommandFailed) as failed:
                    d.call(cmd, args)
                assert failed.value.code == "bad_args"
                assert "invalid profile name" in failed.value.message
                assert "/etc/memory" not in failed.value.message
            done = d.cli("search", name, "x")
            assert done.returncode == 2
            assert "invalid profile name" in done.stderr and "memory" not in done.stderr

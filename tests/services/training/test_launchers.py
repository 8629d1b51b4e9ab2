"""The launcher and backend settings: what command line a job gets, what start-up refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.settings import SettingsError, load_settings
from services.training.command import build_command, torchrun_processes


def test_torchrun_wraps_the_same_child() -> None:
    one = build_command(run_dir=Path("/r"), kind="lora", base="b", cache_dir=Path("/c"))
    two = build_command(
        run_dir=Path("/r"), kind="lora", base="b", cache_dir=Path("/c"), nproc_per_node=2
    )
    assert two[1:9] == [
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "--max-restarts",
        "0",
        "-m",
    ]
    assert two[0] == one[0] and two[8:] == one[1:]


def test_how_many_ranks() -> None:
    assert torchrun_processes("local", 4) is None
    assert torchrun_processes("torchrun", 3) == 3
    assert torchrun_processes("torchrun", None) == "gpu"  # torchrun counts the GPUs


def test_start_up_refuses_incomplete_launcher_and_backend_settings() -> None:
    with pytest.raises(SettingsError, match=r"needs training\.nproc_per_node"):
        load_settings(overrides={"training": {"launcher": "torchrun", "device": "cpu"}})
    with pytest.raises(SettingsError, match=r"needs training\.ray_address"):
        load_settings(overrides={"training": {"backend": "ray"}})
    s = load_settings(
        overrides={"training": {"launcher": "torchrun", "device": "cpu", "nproc_per_node": 2}}
    )
    assert (s.training.launcher, s.training.nproc_per_node, s.training.backend) == (
        "torchrun",
        2,
        "local",
    )

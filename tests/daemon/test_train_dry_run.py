"""`personad train PROFILE --dry-run`: the memory plan, without a daemon or any weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.daemon_process import REPO
from tests.services.training.test_memory_plan import LLAMA_8B


def _dry_run(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", "train", "--state-dir", str(state), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)},
    )


def _config_only(tmp_path: Path) -> Path:
    """A model not downloaded: its config.json alone."""
    model = tmp_path / "llama-8b"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(LLAMA_8B))
    return model


def test_a_full_fine_tune_of_8b_does_not_fit_24_gib_and_says_what_would(tmp_path: Path) -> None:
    model = _config_only(tmp_path)
    args = ("alice", "--dry-run", "--kind", "full", "--base-model", str(model))
    done = _dry_run(tmp_path / "state", *args, "--gpu-memory-gb", "24", "--json")
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    plan = result["plan"]
    assert plan["fits"] is False and plan["device_gib"] == 24
    assert plan["strategy"] == "full-8bit" and plan["peak_gib"] > 24
    assert "full fine-tune of 8.0B needs ~" in plan["reason"]
    assert result["model"]["params"] > 7.9e9
    assert not (tmp_path / "state" / "runs").exists()  # nothing queued, nothing prepared
    shown = _dry_run(tmp_path / "state", *args, "--gpu-memory-gb", "24")
    assert "does not fit" in shown.stdout and "qlora needs ~" in shown.stdout


def test_lora_of_8b_plans_qlora_on_16_gib_and_lora_on_80(tmp_path: Path) -> None:
    model = _config_only(tmp_path)
    args = ("alice", "--dry-run", "--base-model", str(model), "--json")
    small = json.loads(_dry_run(tmp_path / "state", *args, "--gpu-memory-gb", "16").stdout)
    big = json.loads(_dry_run(tmp_path / "state", *args, "--gpu-memory-gb", "80").stdout)
    assert (small["plan"]["strategy"], small["plan"]["fits"]) == ("qlora", True)
    assert small["plan"]["peak_gib"] <= 16 * 0.9 < big["plan"]["peak_gib"]
    assert (big["plan"]["strategy"], big["plan"]["fits"]) == ("lora", True)


def test_gpu_memory_without_dry_run_is_a_usage_error(tmp_path: Path) -> None:
    done = _dry_run(tmp_path / "state", "alice", "--gpu-memory-gb", "24")
    assert done.returncode == 2 and "--dry-run" in done.stderr


def test_a_base_model_naming_nothing_is_refused_before_the_daemon_is_asked(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "no-such-model"
    done = _dry_run(tmp_path / "state", "alice", "--base-model", str(missing))
    assert done.returncode == 2
    assert f"--base-model: base model '{missing}': no such file or directory" in done.stderr
    # A hub id is a job's base too: with no daemon running, that is what is said.
    done = _dry_run(tmp_path / "state", "alice", "--base-model", "acme/tiny")
    assert done.returncode == 3 and "not running" in done.stderr

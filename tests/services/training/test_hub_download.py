"""A hub base downloaded by ``python -m services.training.hub_download`` (a real process)
from a stand-in hub on loopback (tests/fakes/hf_hub.py): what is fetched, progress, a
connection lost midway, offline, unreachable, missing and gated repos."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.training.command import ExitCode
from services.training.hub_download import cached_snapshot, hub_cache
from services.training.hub_resume import CHUNK
from tests.fakes.hf_hub import FakeHub, Repo
from tests.paths import REPO


@pytest.fixture
def hub(tiny_model: Path) -> Iterator[FakeHub]:
    files = {p.name: p.read_bytes() for p in tiny_model.iterdir() if p.is_file()}
    # Copies training never needs: none of them may be fetched.
    extra = {"pytorch_model.bin": b"x" * 1000, "model.gguf": b"g" * 100, "onnx/model.onnx": b"o"}
    # A weights file above huggingface_hub's 10 MiB write chunk, so that a cut connection
    # leaves bytes on disk to resume from.
    big = os.urandom(24 * 1024 * 1024)
    config = (tiny_model / "config.json").read_bytes()
    fake = FakeHub(
        {
            "acme/tiny": Repo({**files, **extra}, "a" * 40),
            "acme/big": Repo({"config.json": config, "model.safetensors": big}, "b" * 40),
            "acme/gated": Repo(files, "c" * 40, gated=True),
        }
    ).start()
    yield fake
    fake.stop()


def _argv(repo: str, cache: Path, run_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "services.training.hub_download",
        "--repo",
        repo,
        "--cache-dir",
        str(cache),
        "--run-dir",
        str(run_dir),
        "--progress-fd",
        "1",
    ]


def _environ(**env: str) -> dict[str, str]:
    online = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT")
    environ = {k: v for k, v in os.environ.items() if k not in online}
    return {**environ, **env}


def _popen(url: str) -> dict[str, Any]:
    return {"cwd": REPO, "env": _environ(HF_ENDPOINT=url), "stdout": subprocess.DEVNULL}


def _fetch(
    repo: str, cache: Path, run_dir: Path, **env: str
) -> tuple[subprocess.CompletedProcess[str], list[dict]]:
    done = subprocess.run(
        _argv(repo, cache, run_dir),
        cwd=REPO,
        env=_environ(HF_HOME=str(cache.parent / "user-hf"), **env),  # an empty user cache
        capture_output=True,
        text=True,
        timeout=120,
    )
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return done, events


def test_a_missing_hub_base_is_downloaded_with_only_what_training_needs(
    hub: FakeHub, tiny_model: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "base-models"
    done, events = _fetch("acme/tiny", cache, tmp_path / "run", HF_ENDPOINT=hub.url)
    assert done.returncode == 0, done.stderr
    snapshot = Path(events[-1]["artifact"])
    assert events[-1]["event"] == "done"
    assert snapshot.is_relative_to(hub_cache(cache))
    wanted = sorted(p.name for p in tiny_model.iterdir() if p.is_file())
    assert sorted(p.name for p in snapshot.iterdir()) == wanted
    for name in wanted:
        assert (snapshot / name).read_bytes() == (tiny_model / name).read_bytes()
    fetched = {p.rsplit("/", 1)[-1] for m, p, _ in hub.requests if "/resolve/" in p}
    assert fetched == set(wanted)  # no .bin, .gguf or onnx/ requested
    progress = [e for e in events if e["event"] == "download"]
    total = sum((tiny_model / n).stat().st_size for n in wanted)
    assert progress and all(e["repo"] == "acme/tiny" for e in progress)
    assert {e["total_bytes"] for e in progress} == {total}
    assert progress[-1]["done_bytes"] == total
    assert (tmp_path / "run" / "download.jsonl").is_file()
    # Found there from now on, with nothing asked of the hub.
    assert cached_snapshot("acme/tiny", cache) == snapshot
    hub.requests.clear()
    again, events = _fetch("acme/tiny", cache, tmp_path / "run", HF_ENDPOINT=hub.url)
    assert again.returncode == 0 and Path(events[-1]["artifact"]) == snapshot
    assert hub.requests == []


def test_a_connection_cut_midway_is_resumed_from_the_partial_file(
    hub: FakeHub, tmp_path: Path
) -> None:
    hub.drop_once.add("model.safetensors")
    cache = tmp_path / "base-models"
    done, events = _fetch("acme/big", cache, tmp_path / "run", HF_ENDPOINT=hub.url)
    assert done.returncode == 0, done.stderr
    assert hub.dropped == ["model.safetensors"]
    ranges = hub.ranges("model.safetensors")
    assert len(ranges) == 1 and ranges[0].startswith("bytes=")
    resumed_at = int(ranges[0].removeprefix("bytes=").split("-")[0])
    assert 0 < resumed_at <= 12 * 1024 * 1024  # from what the first try wrote, not from 0
    weights = Path(events[-1]["artifact"]) / "model.safetensors"
    assert weights.read_bytes() == hub.repos["acme/big"].files["model.safetensors"]


def test_a_download_stopped_with_its_process_continues_in_the_next_one(
    hub: FakeHub, tmp_path: Path
) -> None:
    hub.stall_once.add("model.safetensors")
    cache = tmp_path / "base-models"
    weights = hub.repos["acme/big"].files["model.safetensors"]
    half = len(weights) // 2
    child = subprocess.Popen(_argv("acme/big", cache, tmp_path / "run"), **_popen(hub.url))
    blobs = hub_cache(cache) / "models--acme--big" / "blobs"
    deadline = time.monotonic() + 60
    while sum(p.stat().st_size for p in blobs.glob("*.partial")) < half - CHUNK:
        assert time.monotonic() < deadline and child.poll() is None
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)  # a cancel, or the daemon stopping
    assert child.wait(30) == ExitCode.CANCELLED
    kept = sum(p.stat().st_size for p in blobs.glob("*.partial"))
    assert half - CHUNK <= kept <= half
    done, events = _fetch("acme/big", cache, tmp_path / "run", HF_ENDPOINT=hub.url)
    assert done.returncode == 0, done.stderr
    assert hub.ranges("model.safetensors") == [f"bytes={kept}-"]  # from the partial file
    assert (Path(events[-1]["artifact"]) / "model.safetensors").read_bytes() == weights
    assert not list(blobs.glob("*.partial"))


def test_offline_is_a_clear_error_before_any_request(hub: FakeHub, tmp_path: Path) -> None:
    done, events = _fetch(
        "acme/tiny",
        tmp_path / "base-models",
        tmp_path / "run",
        HF_ENDPOINT=hub.url,
        HF_HUB_OFFLINE="1",
    )
    assert done.returncode == 3
    assert events[-1]["event"] == "error"
    assert events[-1]["message"] == (
        "acme/tiny is not in the local cache and HF_HUB_OFFLINE is set; download it with "
        "hf download acme/tiny (on a machine online), or unset HF_HUB_OFFLINE"
    )
    assert hub.requests == []


def test_an_unreachable_hub_is_a_clear_error_naming_it(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    done, events = _fetch("acme/tiny", tmp_path / "base-models", tmp_path / "run", HF_ENDPOINT=url)
    assert done.returncode == 1
    message = events[-1]["message"]
    assert message.startswith(f"cannot reach the Hugging Face hub at {url} to download acme/tiny")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("repo", "says"),
    [
        ("acme/nothing", "acme/nothing was not found on {url}"),
        ("acme/gated", "acme/gated is gated on {url}: accept its terms on {url}/acme/gated"),
    ],
)
def test_a_missing_or_gated_repo_is_a_clear_error(
    hub: FakeHub, tmp_path: Path, repo: str, says: str
) -> None:
    done, events = _fetch(repo, tmp_path / "base-models", tmp_path / "run", HF_ENDPOINT=hub.url)
    assert done.returncode == 3, done.stderr
    assert events[-1]["message"].startswith(says.format(url=hub.url))
    assert "Traceback" not in done.stderr
    assert not list((tmp_path / "base-models").rglob("*.safetensors"))


def test_planning_a_hub_base_fetches_its_config_alone_and_reads_the_download_later(
    hub: FakeHub, tmp_path: Path
) -> None:
    state = tmp_path / "state"

    def plan(**env: str) -> subprocess.CompletedProcess[str]:
        argv = ["train", "alice", "--dry-run", "--base-model", "acme/tiny", "--json"]
        return subprocess.run(
            [sys.executable, "-m", "daemon.cli", *argv, "--state-dir", str(state)],
            cwd=REPO,
            env=_environ(**{"HF_HOME": str(state / "user-hf"), **env}),
            capture_output=True,
            text=True,
            timeout=120,
        )

    done = plan(HF_ENDPOINT=hub.url)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["plan"]["fits"] is True
    fetched = {p.rsplit("/", 1)[-1] for _, p, _ in hub.requests if "/resolve/" in p}
    assert fetched == {"config.json"}
    # The config.json planning left in the user's cache is not taken for the model: the
    # job downloads the rest into the state dir; planning reads it there from then on.
    done, events = _fetch("acme/tiny", state / "base-models", tmp_path / "run", HF_ENDPOINT=hub.url)
    assert done.returncode == 0, done.stderr
    snapshot = Path(events[-1]["artifact"])
    assert snapshot.is_relative_to(state / "base-models" / "hub")
    assert (snapshot / "model.safetensors").is_file()
    hub.requests.clear()
    offline = plan(HF_HOME=str(tmp_path / "empty-hf"), HF_HUB_OFFLINE="1")
    assert offline.returncode == 0, offline.stderr
    assert hub.requests == []

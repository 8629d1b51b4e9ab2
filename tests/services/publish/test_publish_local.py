"""The local registry on a real filesystem: versions, the atomic ``active`` switch,
rollback, retention, and what an interrupted publish or activation leaves behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.publish import LocalRegistry, PublishError
from tests.services.publish.publish_helpers import write_adapter, write_full_model

REPO = Path(__file__).resolve().parents[3]


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _model(tmp_path: Path, label: str, seed: int = 0) -> Path:
    model = write_full_model(tmp_path / "runs" / label / "model", seed=seed)
    (model / "marker.txt").write_text(label)
    return model


@pytest.fixture
def registry(tmp_path: Path) -> LocalRegistry:
    return LocalRegistry(tmp_path / "models")


def test_publish_copies_the_model_and_records_the_version(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    model = _model(tmp_path, "run-a")
    path = registry.publish("alice", 1, model, kind="full", info={"run": "run-a", "loss": 1.25})

    assert path == tmp_path / "models" / "alice" / "v1"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "marker.txt"):
        assert (path / "model" / name).read_bytes() == (model / name).read_bytes()
    record = json.loads((path / "version.json").read_text())
    assert record["version"] == 1 and record["kind"] == "full" and record["profile"] == "alice"
    assert record["info"] == {"run": "run-a", "loss": 1.25}
    assert registry.info("alice", 1)["info"]["run"] == "run-a"
    assert registry.versions("alice") == [1]
    assert registry.active("alice") is None  # publishing does not activate
    # The copy stands alone: the run directory may go.
    (model / "marker.txt").unlink()
    assert (path / "model" / "marker.txt").read_text() == "run-a"


def test_an_adapter_is_published_with_its_base_model(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    adapter = write_adapter(tmp_path / "run" / "adapter")
    path = registry.publish("bob", 1, adapter, kind="lora", base="embedded:smollm2", info={})

    assert (path / "adapter" / "adapter_config.json").is_file()
    assert (path / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((path / "base.json").read_text()) == {"base": "embedded:smollm2"}
    assert not (path / "model").exists()
    with pytest.raises(PublishError, match="base model"):
        registry.publish("bob", 2, adapter, kind="lora", base=None, info={})
    with pytest.raises(PublishError, match="not a LoRA adapter"):
        registry.publish("bob", 2, _model(tmp_path, "x"), kind="lora", base="b", info={})
    assert registry.versions("bob") == [1]


def test_the_serving_model_is_the_active_version_else_the_base(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    assert registry.serving_model("alice", "org/base") == ("org/base", None)
    registry.publish("alice", 1, _model(tmp_path, "full"), kind="full", info={})
    adapter = write_adapter(tmp_path / "run" / "adapter")
    registry.publish("alice", 2, adapter, kind="lora", base="/runs/full/model", info={})
    assert registry.serving_model("alice", "org/base") == ("org/base", None)  # none active
    registry.activate("alice", 1)
    v1 = tmp_path / "models" / "alice" / "v1"
    assert registry.serving_model("alice", "org/base") == (str(v1 / "model"), None)
    registry.activate("alice", 2)
    v2 = tmp_path / "models" / "alice" / "v2"
    # A LoRA serves its adapter on the base it was trained on.
    assert registry.serving_model("alice", "org/base") == ("/runs/full/model", v2 / "adapter")


def test_version_files_are_sorted_json_and_unwritable_data_is_refused(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    path = registry.publish("alice", 1, _model(tmp_path, "a"), kind="full", info={"z": 1, "a": 2})
    text = (path / "version.json").read_text()
    assert text.endswith("\n") and list(json.loads(text)) == sorted(json.loads(text))
    assert list(json.loads(text)["info"]) == ["a", "z"]
    with pytest.raises(PublishError, match="cannot be written as JSON"):
        registry.publish("alice", 2, _model(tmp_path, "b"), kind="full", info={"x": object()})
    assert registry.versions("alice") == [1]
    assert sorted(p.name for p in (tmp_path / "models" / "alice").iterdir()) == [".lock", "v1"]


def test_activate_and_roll_back(registry: LocalRegistry, tmp_path: Path) -> None:
    for n in (1, 2, 3):
        registry.publish("alice", n, _model(tmp_path, f"run-{n}", seed=n), kind="full", info={})
    registry.activate("alice", 3)
    active = tmp_path / "models" / "alice" / "active"
    assert os.readlink(active) == "v3"  # relative: the models directory may move
    assert (active / "model" / "marker.txt").read_text() == "run-3"
    assert registry.active("alice") == 3
    assert registry.active_path("alice") == tmp_path / "models" / "alice" / "v3"

    assert registry.rollback("alice") == 2
    assert (active / "model" / "marker.txt").read_text() == "run-2"
    assert registry.rollback("alice", to=1) == 1
    assert (active / "model" / "marker.txt").read_text() == "run-1"
    with pytest.raises(PublishError, match="no version older"):
        registry.rollback("alice")
    with pytest.raises(PublishError, match="v7: not published; published: v1, v2, v3"):
        registry.activate("alice", 7)
    assert registry.active("alice") == 1


def test_a_version_is_never_replaced(registry: LocalRegistry, tmp_path: Path) -> None:
    registry.publish("alice", 1, _model(tmp_path, "first"), kind="full", info={})
    with pytest.raises(PublishError, match="already published"):
        registry.publish("alice", 1, _model(tmp_path, "second"), kind="full", info={})
    assert (registry.path("alice", 1) / "model" / "marker.txt").read_text() == "first"
    assert not [
        p.name
        for p in (tmp_path / "models" / "alice").iterdir()
        if p.name[0] == "." and p.name != ".lock"
    ]


def test_remove_refuses_the_active_version(registry: LocalRegistry, tmp_path: Path) -> None:
    registry.publish("alice", 1, _model(tmp_path, "a"), kind="full", info={})
    registry.publish("alice", 2, _model(tmp_path, "b"), kind="full", info={})
    registry.activate("alice", 2)
    with pytest.raises(PublishError, match="active version"):
        registry.remove("alice", 2)
    registry.remove("alice", 1)
    assert registry.versions("alice") == [2]
    assert not (tmp_path / "models" / "alice" / "v1").exists()
    with pytest.raises(PublishError, match="has no version v1"):
        registry.path("alice", 1)


def test_prune_keeps_the_newest_and_the_active(registry: LocalRegistry, tmp_path: Path) -> None:
    for n in range(1, 7):
        registry.publish("alice", n, _model(tmp_path, f"r{n}"), kind="full", info={})
    registry.activate("alice", 2)  # rolled back to an old one
    assert registry.prune("alice", keep=3) == [1, 3]
    assert registry.versions("alice") == [2, 4, 5, 6]
    assert (tmp_path / "models" / "alice" / "active" / "model" / "marker.txt").read_text() == "r2"


@pytest.mark.parametrize("profile", ["../evil", "a/b", ".hidden", "", ".."])
def test_profile_names_that_are_not_directory_names_are_refused(
    registry: LocalRegistry, tmp_path: Path, profile: str
) -> None:
    with pytest.raises(PublishError, match="profile name"):
        registry.publish(profile, 1, _model(tmp_path, "a"), kind="full", info={})
    assert not (tmp_path / "evil").exists()


def test_a_failure_inside_publish_leaves_nothing(registry: LocalRegistry, tmp_path: Path) -> None:
    registry.publish("alice", 1, _model(tmp_path, "a"), kind="full", info={})
    registry.activate("alice", 1)
    # version.json is written after the artifact is copied: this fails half-way.
    with pytest.raises(PublishError, match=r"version\.json"):
        registry.publish("alice", 2, _model(tmp_path, "b"), kind="full", info={"bad": object()})
    pdir = tmp_path / "models" / "alice"
    assert sorted(p.name for p in pdir.iterdir()) == [".lock", "active", "v1"]
    assert registry.active("alice") == 1
    registry.publish("alice", 2, _model(tmp_path, "b"), kind="full", info={})
    assert registry.versions("alice") == [1, 2]


_READER = r"""
import json, os, sys, time
pdir, seconds = sys.argv[1], float(sys.argv[2])
deadline = time.monotonic() + seconds
reads, errors, seen = 0, [], set()
while time.monotonic() < deadline:
    try:
        # A reader that resolves once and reads from the version it found...
        target = os.readlink(os.path.join(pdir, "active"))
        vdir = os.path.join(pdir, target)
        with open(os.path.join(vdir, "version.json")) as fh:
            record = json.load(fh)
        with open(os.path.join(vdir, "model", "marker.txt")) as fh:
            marker = fh.read()
        if record["version"] != int(target[1:]) or marker != target:
            errors.append(f"mixed version: {target} {record['version']} {marker}")
        # ...and one that opens through the link each time.
        with open(os.path.join(pdir, "active", "model", "marker.txt")) as fh:
            if fh.read() not in ("v1", "v2"):
                errors.append("unknown marker")
        seen.add(target)
        reads += 1
    except Exception as exc:
        errors.append(repr(exc))
print(json.dumps({"reads": reads, "errors": errors[:5], "n_errors": len(errors),
                  "seen": sorted(seen)}))
"""


def test_a_reader_always_finds_a_whole_active_version_while_it_flips(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    for n in (1, 2):
        model = write_full_model(tmp_path / f"run{n}" / "model", seed=n)
        (model / "marker.txt").write_text(f"v{n}")
        registry.publish("alice", n, model, kind="full", info={})
    registry.activate("alice", 1)

    reader = subprocess.Popen(
        [sys.executable, "-c", _READER, str(tmp_path / "models" / "alice"), "1.5"],
        stdout=subprocess.PIPE,
        text=True,
    )
    flips = 0
    while reader.poll() is None:
        registry.activate("alice", 2 if flips % 2 == 0 else 1)
        flips += 1
    out = json.loads(reader.stdout.read() if reader.stdout else "{}")

    assert out["n_errors"] == 0, out["errors"]
    assert out["reads"] > 50
    assert flips > 20
    assert out["seen"] == ["v1", "v2"]
    leftovers = [p.name for p in (tmp_path / "models" / "alice").iterdir()]
    assert sorted(leftovers) == [".lock", "active", "v1", "v2"]


_STALLED_PUBLISH = r"""
import sys, time
from pathlib import Path
from services.publish import local
models, artifact, ready = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
synced = local.fsync_tree
def stall(root):  # the copy is complete and on disk; the rename comes next
    synced(root)
    ready.write_text(str(root))
    time.sleep(120)
local.fsync_tree = stall
local.LocalRegistry(models).publish("alice", 2, artifact, kind="full", info={"run": "b"})
"""

_STALLED_ACTIVATE = r"""
import os, sys, time
from pathlib import Path
from services.publish.local import LocalRegistry
models, ready = Path(sys.argv[1]), Path(sys.argv[2])
def stall(src, dst):  # the new link exists, the old one is not yet replaced
    ready.write_text(str(src))
    time.sleep(120)
os.replace = stall
LocalRegistry(models).activate("alice", 2)
"""


def _wait_for(path: Path, proc: subprocess.Popen[bytes], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, "the child exited before reaching the crash point"
        assert time.monotonic() < deadline, "the child never reached the crash point"
        time.sleep(0.02)


def test_a_publisher_killed_before_the_rename_leaves_no_version(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    registry.publish("alice", 1, _model(tmp_path, "a"), kind="full", info={})
    registry.activate("alice", 1)
    ready = tmp_path / "ready"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _STALLED_PUBLISH,
            str(registry.models_dir),
            str(_model(tmp_path, "b")),
            str(ready),
        ],
        env=_child_env(),
    )
    try:
        _wait_for(ready, child)
        tmp_dir = Path(ready.read_text())
        assert (tmp_dir / "model" / "marker.txt").read_text() == "b"  # fully copied
        # While the publisher lives its temporary directory is left alone.
        assert registry.cleanup("alice") == []
        assert tmp_dir.is_dir()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()

    assert not (tmp_path / "models" / "alice" / "v2").exists()
    assert registry.versions("alice") == [1]
    assert registry.active("alice") == 1
    marker = tmp_path / "models" / "alice" / "active" / "model" / "marker.txt"
    assert marker.read_text() == "a"
    assert registry.cleanup("alice") == [tmp_dir.name]
    assert not tmp_dir.exists()
    registry.publish("alice", 2, _model(tmp_path, "b2"), kind="full", info={})
    assert registry.versions("alice") == [1, 2]


def test_an_activation_killed_half_way_keeps_the_old_active(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    registry.publish("alice", 1, _model(tmp_path, "a"), kind="full", info={})
    registry.publish("alice", 2, _model(tmp_path, "b"), kind="full", info={})
    registry.activate("alice", 1)
    ready = tmp_path / "ready"
    child = subprocess.Popen(
        [sys.executable, "-c", _STALLED_ACTIVATE, str(registry.models_dir), str(ready)],
        env=_child_env(),
    )
    try:
        _wait_for(ready, child)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    stray = Path(ready.read_text())
    assert os.readlink(stray) == "v2"  # the new link was made, never put in place
    assert registry.active("alice") == 1
    assert (tmp_path / "models" / "alice" / "active" / "model" / "marker.txt").read_text() == "a"
    assert registry.cleanup("alice") == [stray.name]
    registry.activate("alice", 2)
    assert registry.active("alice") == 2

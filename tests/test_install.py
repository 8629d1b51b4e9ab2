"""A non-editable install (a wheel built from a copy of the repository) works on its own.

The package is installed into a fresh virtual environment whose dependencies come from
the test's own environment (a ``.pth`` line, nothing downloaded); the checkout itself is
not importable there. From a directory outside the repository, ``personad dataset`` builds
a dataset from a small ledger (so the shipped ``etc/`` is found inside the installed
package), and ``personad demo`` runs the whole cycle on the tiny model up to an active v1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from services.curation import load_rules
from services.demo_persona import PROFILE
from services.ingest import Ingestor, make_curator
from services.ledger import Ledger
from tests.paths import REPO

# What a clone does not hold: build outputs, caches, virtual environments, state.
NOT_SOURCES = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
    "state",
    "demo",
    "*.gguf",
    "*.safetensors",
)
# A small demo run: the tests' usual settings for the tiny model.
FAST = {
    "max_steps": 6,
    "batch_size": 4,
    "gradient_accumulation_steps": 1,
    "learning_rate": 0.01,
    "max_seq_length": 256,
}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return {**env, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _run(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with personad installed from a copy of the repository (a wheel)."""
    root = tmp_path_factory.mktemp("install")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], root, 120)
    python = venv / "bin" / "python"
    purelib = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], root, 60
    ).stdout.strip()
    # This environment's packages (pip, setuptools and every dependency) as plain path
    # lines: the .pth files there, the editable install's among them, are not processed.
    ours = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (Path(purelib) / "personad-deps.pth").write_text("".join(f"{p}\n" for p in ours))
    source = root / "source"
    shutil.copytree(REPO, source, symlinks=True, ignore=NOT_SOURCES)
    _run(
        [
            str(python),
            *("-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"),
            *("--no-index", str(source)),
        ],
        root,
        300,
    )
    shutil.rmtree(source)  # the installed package must not lean on its source tree
    return venv


def test_the_installed_package_is_the_one_imported(installed: Path, tmp_path: Path) -> None:
    probe = (
        "import json, daemon, services\n"
        "from services.shipped import etc_dir\n"
        "print(json.dumps([daemon.__file__, services.__file__, str(etc_dir())]))\n"
    )
    done = _run([str(installed / "bin" / "python"), "-c", probe], tmp_path, 120)
    daemon_file, services_file, etc = map(Path, json.loads(done.stdout))
    for path in (daemon_file, services_file, etc):
        assert path.is_relative_to(installed), path
        assert not path.is_relative_to(REPO), path
    assert etc == Path(services_file).parent / "etc"
    for name in (
        "curation.json",
        "fine-tune-config.json",
        "personad.toml",
        "eval/general.jsonl",
        "eval/calibration.jsonl",
        "schemas/smollm.json",
        "modes/dual-config.json",
    ):
        assert (etc / name).is_file(), name
    assert not etc.is_symlink()


def _small_profile(memory: Path) -> None:
    memory.mkdir(parents=True)
    (memory / "notes.jsonl").write_text(
        "\n".join(
            json.dumps(
                {
                    "prompt": f"How was the walk along canal {i}?",
                    "completion": f"Canal {i} was quiet in the morning fog, and the herons "
                    "stood still on the far bank while we drank our coffee.",
                    "quality_score": 8 + (i % 2),
                }
            )
            for i in range(12)
        )
    )


def test_the_installed_cli_builds_a_dataset(installed: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    memory = tmp_path / "profiles" / "alice" / "memory"
    _small_profile(memory)
    with Ledger(state / "ledger.sqlite3") as ledger:
        ingestor = Ingestor(ledger, None, max_file_bytes=10**7, curate=make_curator(load_rules()))
        for path in sorted(memory.iterdir()):
            ingestor.ingest_file("alice", path)
    work = tmp_path / "elsewhere"
    work.mkdir()
    personad = str(installed / "bin" / "personad")
    done = _run([personad, "dataset", "--state-dir", str(state), "alice", "--json"], work, 300)
    assert json.loads(done.stdout)["status"] == "ok"
    [dataset] = state.glob("runs/alice/*/dataset-*/fine_tune_dataset.jsonl")
    lines = [json.loads(line) for line in dataset.read_text().splitlines()]
    assert len(lines) == 12
    assert {line["mode"] for line in lines} == {"emulation"}
    # SmolLM2's own template, from the schema shipped inside the installed package.
    assert all(line["prompt"].endswith("<|im_start|>assistant\n") for line in lines)
    for name in ("curated_memories.json", "schema_applied.json", "run-summary.json"):
        assert (dataset.parent / name).is_file(), name


@pytest.mark.timeout(900)  # the whole cycle, training included, on busy CPUs
def test_the_installed_demo_ends_with_an_active_v1(
    installed: Path, tmp_path: Path, tiny_model: Path
) -> None:
    work = tmp_path / "elsewhere"
    work.mkdir()
    done = _run(
        [
            str(installed / "bin" / "personad"),
            "demo",
            *("--base-model", str(tiny_model), "--family", "smollm"),
            *("--train-config", json.dumps(FAST), "--json"),
        ],
        work,
        900,
    )
    assert "demo complete" in done.stderr
    result = json.loads(done.stdout)
    assert result["job"]["state"] == "succeeded"
    assert result["active_version"] == "v1"
    assert (work / "demo" / "state" / "models" / PROFILE / "active").resolve().name == "v1"

"""Shared test set-up: nothing is downloaded, every test gets its own state."""

from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.paths import FIXTURES, REPO  # noqa: F401 (both re-exported for the tests)

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short temporary directory (Unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="pd-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_personad_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's own personad settings."""
    for key in list(os.environ):
        if key.startswith("PERSONAD_") or key in (
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            "STATE_DIRECTORY",
            "RUNTIME_DIRECTORY",
        ):
            monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny causal LM (chatml template), built locally once per test session."""
    from tests.services.training.training_helpers import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_model_64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model 64 wide: bitsandbytes' CPU kernels quantize its linear layers."""
    from tests.services.training.training_helpers import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model-64"), hidden=64)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


# ------------------------------------------------------------------ test tiers
# Markers (registered in pyproject.toml) are given here, by place and by measured time,
# so the test modules carry none of them:
#   reliability  everything under tests/reliability (real daemons killed, fuzzed, soaked)
#   daemon       everything under tests/daemon (the process, its socket, CLI and jobs)
#   training     a test on the tiny model (the tiny_model fixture, directly or through
#                another fixture) or one that runs the training child (run_child)
#   slow         a test that takes about 3 s or more on two shared CPU cores (measured
#                with --durations), listed below by module or node id (fnmatch; `*` spans folders)
# `make test-fast` runs -m "not slow and not training and not reliability"; `make test`
# runs everything.
TIERS = {"reliability": "tests/reliability/", "daemon": "tests/daemon/"}
TRAINING_FIXTURES = {"tiny_model", "tiny_model_64"}
SLOW = (
    "tests/test_install.py::*",
    # tests/daemon
    "*/test_demo.py::*",
    "*/test_jobs_e2e.py::*",
    "*/test_profile_commands.py::*",
    "*/test_supervisor.py::test_force_with_nothing_new_is_skipped_and_all_retrains_*",
    "*/test_chroma_server.py::*",
    "*/test_ray_backend.py::*",
    "*/test_oom_fallback.py::*",
    "*/test_ingest_e2e.py::*",  # one daemon; later tests build on the first one's profiles
    "*/test_http_api.py::*",  # one daemon for the module, two more for the start-up cases
    "*/test_dashboard_browser.py::*",
    "*/test_status_view.py::test_watch_survives_a_daemon_restart",
    "*/test_dataset_cli.py::test_dataset_of_a_mixed_profile",
    "*/test_dataset_cli.py::test_contaminated_dataset_fails_with_ids_and_tags",
    "*/test_process.py::test_runs_with_no_config_notifies_ready_*",
    "*/test_process.py::test_second_instance_is_refused",
    "*/test_supervisor.py::test_a_child_ignoring_sigterm_is_killed",
    "*/test_supervisor.py::test_a_hung_child_times_out_and_its_group_is_gone",
    "*/test_supervisor.py::test_real_lora_training_of_a_tiny_model",
    "*/test_job_base.py::test_a_job_trains_on_the_base_it_names_*",
    "*/test_job_base.py::test_a_hub_base_not_downloaded_*",
    # tests/reliability
    "*/test_foreign_files.py::test_planted_links_*",
    "*/test_foreign_files.py::test_socket_and_cli_*",
    "*/test_interruption.py::*",
    "*/test_damaged_stores.py::*",
    "*/test_backup_restore.py::*",
    "*/test_disk_full.py::*",
    # tests/services
    "*/test_eval_gate.py::*",
    "*/test_gate_judge.py::*",
    "*/test_training_child.py::*",
    "*/test_hub_download.py::test_a_connection_cut_midway_*",
    "*/test_hub_download.py::test_a_download_stopped_with_its_process_*",
    "*/test_hub_download.py::test_planning_a_hub_base_*",
    "*/test_torchrun.py::*",
    "*/test_torchrun_child.py::*",
    "*/test_training_quantized.py::*",
    "*/test_generation.py::test_the_cli_*",
    "*/test_generation.py::test_no_repeat_ngram_*",
    "*/test_training_light_imports.py::*",
    "*/test_training_base_model.py::test_smollm2_gguf_converts_*",
    "*/test_training_modelinfo.py::test_the_embedded_smollm2_gguf_is_tiny",
    "*/test_memories_properties.py::test_arbitrary_json_values",
    "*/test_memories_properties.py::test_arbitrary_json_lines",
    "*/test_schemas_models.py::test_embedded_smollm2_gguf",
    "*/test_ollama_base.py::test_the_gguf_is_converted_once_*",
    "*/test_ollama_base.py::test_an_installed_model_resolves_*",  # reads a GGUF header (3 s)
    "*/test_ollama_base.py::test_an_architecture_transformers_*",  # imports transformers
    "*/test_ollama_base_planning.py::*",  # GGUF headers read a few times
    "*/test_ollama_base_job.py::*",
    "*/test_ollama_base_training.py::*",
)


def _tiers(item: pytest.Item) -> set[str]:
    path = item.path.resolve().relative_to(REPO).as_posix()
    tiers = {tier for tier, folder in TIERS.items() if path.startswith(folder)}
    fixtures = set(getattr(item, "fixturenames", ()))
    if fixtures & TRAINING_FIXTURES or hasattr(getattr(item, "module", None), "run_child"):
        tiers.add("training")
    if any(fnmatch.fnmatchcase(item.nodeid, pattern) for pattern in SLOW):
        tiers.add("slow")
    return tiers


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for tier in sorted(_tiers(item)):
            item.add_marker(tier)

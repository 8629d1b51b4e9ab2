"""Training configuration: layer order, provenance, smart defaults, errors naming file and key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.training.config import SMALL_PROFILE_EPOCHS, ResolvedConfig, resolve_config
from services.training.config_model import TrainingConfig
from services.training.errors import TrainingConfigError
from services.training.modelinfo import CATEGORY_DEFAULTS
from tests.services.training.training_helpers import header_only_model

REPO = Path(__file__).resolve().parents[3]


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def tiny_base(tmp_path: Path) -> Path:
    return header_only_model(tmp_path / "tiny", 135_000_000)


def resolve(base: Path, etc: Path, **kw: Any) -> ResolvedConfig:
    args: dict[str, Any] = {
        "base_model": base,
        "kind": "lora",
        "n_samples": 1000,
        "mode": None,
        "preset": None,
        "job_args": {},
        "etc_dir": etc,
    }
    return resolve_config(**{**args, **kw})


def test_each_layer_overrides_the_one_below_and_provenance_is_recorded(
    tmp_path: Path, tiny_base: Path
) -> None:
    etc = tmp_path / "etc"
    write_json(
        etc / "fine-tune-config.json",
        {
            "$comment": "x",
            "training": {"max_seq_length": 512, "learning_rate": 1e-4, "num_epochs": 5},
        },
    )
    write_json(
        etc / "modes" / "dual-config.json",
        {"mode": "dual", "training": {"learning_rate": 3e-4, "num_epochs": 6}},
    )
    r = resolve(tiny_base, etc, mode="dual", preset="quick", job_args={"lora.r": 2})
    c = r.config
    tiny = CATEGORY_DEFAULTS["tiny"]
    assert (c.save_steps, r.sources["save_steps"]) == (TrainingConfig().save_steps, "default")
    assert (c.batch_size, r.sources["batch_size"]) == (tiny.batch_size, "smart")
    assert (c.max_seq_length, r.sources["max_seq_length"]) == (1024, "preset")
    assert (c.learning_rate, r.sources["learning_rate"]) == (3e-4, "mode")
    assert (c.num_epochs, r.sources["num_epochs"]) == (1, "preset")
    assert (c.lora.r, r.sources["lora.r"]) == (2, "job")
    assert (c.lora.alpha, r.sources["lora.alpha"]) == (16, "preset")
    assert r.files == {
        "global": str(etc / "fine-tune-config.json"),
        "mode": str(etc / "modes" / "dual-config.json"),
    }

    # Without the upper layers, the lower ones show through.
    r = resolve(tiny_base, etc)
    assert (r.config.learning_rate, r.sources["learning_rate"]) == (1e-4, "global")
    assert (r.config.max_seq_length, r.sources["max_seq_length"]) == (512, "global")
    assert (r.config.lora.r, r.sources["lora.r"]) == (tiny.lora_r, "smart")


def test_a_job_argument_beats_every_layer(tmp_path: Path, tiny_base: Path) -> None:
    etc = tmp_path / "etc"
    write_json(
        etc / "fine-tune-config.json",
        {
            "training": {"warmup_ratio": 0.1},
            "presets": {"quick": {"warmup_ratio": 0.2}},
        },
    )
    write_json(etc / "modes" / "agent-config.json", {"training": {"warmup_ratio": 0.3}})
    r = resolve(tiny_base, etc, mode="agent", preset="quick", job_args={"warmup_ratio": 0.4})
    assert (r.config.warmup_ratio, r.sources["warmup_ratio"]) == (0.4, "job")
    r = resolve(tiny_base, etc, mode="agent", preset="quick")
    assert (r.config.warmup_ratio, r.sources["warmup_ratio"]) == (0.2, "preset")


def test_full_runs_take_the_files_full_overrides(tmp_path: Path, tiny_base: Path) -> None:
    etc = tmp_path / "etc"
    write_json(
        etc / "modes" / "emulation-config.json",
        {"training": {"learning_rate": 2e-4, "full": {"learning_rate": 5e-6}}},
    )
    lora = resolve(tiny_base, etc, mode="emulation", kind="lora")
    full = resolve(tiny_base, etc, mode="emulation", kind="full")
    assert lora.config.learning_rate == 2e-4
    assert (full.config.learning_rate, full.sources["learning_rate"]) == (5e-6, "mode")


@pytest.mark.parametrize(
    ("n_samples", "epochs"),
    [
        (50, SMALL_PROFILE_EPOCHS + 2),
        (99, SMALL_PROFILE_EPOCHS + 2),
        (100, SMALL_PROFILE_EPOCHS),
        (299, SMALL_PROFILE_EPOCHS),
        (300, CATEGORY_DEFAULTS["tiny"].num_epochs),
        (5000, CATEGORY_DEFAULTS["tiny"].num_epochs),
        (5001, CATEGORY_DEFAULTS["tiny"].num_epochs - 1),
    ],
)
def test_smart_epochs_follow_the_dataset_size(
    tmp_path: Path, tiny_base: Path, n_samples: int, epochs: int
) -> None:
    r = resolve(tiny_base, tmp_path / "no-etc", n_samples=n_samples)
    assert r.config.num_epochs == epochs
    assert r.sources["num_epochs"] == "smart"
    full = resolve(tiny_base, tmp_path / "no-etc", n_samples=n_samples, kind="full")
    tiny = CATEGORY_DEFAULTS["tiny"]
    extra = 2 if n_samples < 100 else -1 if n_samples > 5000 else 0
    assert full.config.num_epochs == tiny.num_epochs + extra


def test_a_small_profiles_lora_steps_often_at_a_higher_rate(
    tmp_path: Path, tiny_base: Path
) -> None:
    tiny = CATEGORY_DEFAULTS["tiny"]
    small = resolve(tiny_base, tmp_path / "no-etc", n_samples=150)
    assert small.config.learning_rate == pytest.approx(tiny.lora_learning_rate * 10 / 3)
    assert (small.config.batch_size, small.config.gradient_accumulation_steps) == (8, 1)
    big = resolve(tiny_base, tmp_path / "no-etc", n_samples=300)
    assert big.config.learning_rate == tiny.lora_learning_rate
    assert big.config.gradient_accumulation_steps == tiny.gradient_accumulation_steps
    # A model of 2B parameters and more is not a small profile's whatever its data.
    medium = header_only_model(tmp_path / "medium", 3_000_000_000)
    m = resolve(medium, tmp_path / "no-etc", n_samples=150)
    assert m.config.learning_rate == CATEGORY_DEFAULTS["medium"].lora_learning_rate


def test_smart_defaults_follow_the_size_category(tmp_path: Path) -> None:
    large = header_only_model(tmp_path / "large", 10_000_000_000)
    lora = resolve(large, tmp_path / "no-etc")
    full = resolve(large, tmp_path / "no-etc", kind="full")
    d = CATEGORY_DEFAULTS["large"]
    assert lora.model.category == "large"
    assert (lora.config.learning_rate, lora.config.lora.r) == (d.lora_learning_rate, d.lora_r)
    assert lora.config.lora.alpha == 2 * d.lora_r
    assert full.config.learning_rate == d.full_learning_rate


def test_config_json_is_written_and_reads_back(tmp_path: Path, tiny_base: Path) -> None:
    r = resolve(tiny_base, REPO / "etc", mode="emulation", job_args={"seed": 3})
    path = r.write(tmp_path / "run")
    data = json.loads(path.read_text())
    assert path.name == "config.json"
    assert data["config"]["seed"] == 3
    assert data["sources"]["seed"] == "job"
    assert data["model"] == {"params": 135_000_000, "source": "safetensors", "category": "tiny"}
    back = ResolvedConfig.read(path)
    assert back.config == r.config
    assert back.sources == r.sources


@pytest.mark.parametrize("mode", ["dual", "emulation", "agent"])
@pytest.mark.parametrize("kind", ["lora", "full"])
def test_the_shipped_configs_resolve(tiny_base: Path, mode: str, kind: str) -> None:
    r = resolve(tiny_base, REPO / "etc", mode=mode, kind=kind)
    shipped = json.loads((REPO / "etc" / "modes" / f"{mode}-config.json").read_text())
    expected_lr = shipped["training"]["learning_rate"]
    if kind == "full":
        expected_lr = shipped["training"].get("full", {}).get("learning_rate", expected_lr)
    assert r.config.learning_rate == expected_lr
    assert r.sources["learning_rate"] == "mode"
    assert r.sources["lr_scheduler"] == "global"


def test_a_mode_file_may_hold_sections_of_other_components(tmp_path: Path, tiny_base: Path) -> None:
    etc = tmp_path / "etc"
    write_json(
        etc / "modes" / "dual-config.json",
        {
            "mode": "dual",
            "notes": ["x"],
            "curation": {"anything": 1},
            "dataset": {"min_samples": 300, "replay_share": 0.2},
            "training": {"num_epochs": 2},
        },
    )
    r = resolve(tiny_base, etc, mode="dual")
    assert (r.config.dataset.min_samples, r.sources["dataset.min_samples"]) == (300, "mode")


BAD_FILES = [
    ("fine-tune-config.json", {"training": {"learning_rat": 1e-4}}, "training.learning_rat"),
    ("fine-tune-config.json", {"training": {"num_epochs": "3"}}, "training.num_epochs"),
    ("fine-tune-config.json", {"training": {"bf16": "yes"}}, "training.bf16"),
    ("fine-tune-config.json", {"trainig": {}}, "trainig"),
    ("fine-tune-config.json", {"dataset": {"max_samples": 0}}, "dataset.max_samples"),
    (
        "fine-tune-config.json",
        {"presets": {"quick": {"num_epochs": 0}}},
        "presets.quick.num_epochs",
    ),
    ("modes/dual-config.json", {"training": {"lora": {"dropout": 1.5}}}, "training.lora.dropout"),
    ("modes/dual-config.json", {"training": {"full": {"lora": {"r": 4}}}}, "training.full.lora"),
    (
        "modes/dual-config.json",
        {"training": {"full": {"warmup_ratio": -1}}},
        "training.full.warmup_ratio",
    ),
    ("modes/dual-config.json", {"training": {"max_seq_length": 16}}, "training.max_seq_length"),
    (
        "modes/dual-config.json",
        {"training": {"lora": {"target_modules": []}}},
        "training.lora.target_modules",
    ),
]


@pytest.mark.parametrize(("name", "content", "key"), BAD_FILES)
def test_an_invalid_file_value_names_the_file_and_the_key(
    tmp_path: Path, tiny_base: Path, name: str, content: dict[str, Any], key: str
) -> None:
    etc = tmp_path / "etc"
    path = write_json(etc / name, content)
    with pytest.raises(TrainingConfigError) as err:
        resolve(tiny_base, etc, mode="dual" if "modes" in name else None, preset="quick")
    assert (err.value.source, err.value.key) == (str(path), key)
    assert str(path) in str(err.value) and key in str(err.value)


@pytest.mark.parametrize(
    ("job_args", "key"),
    [
        ({"warmup_ratio": 2}, "warmup_ratio"),
        ({"epochs": 3}, "epochs"),
        ({"lora.rank": 3}, "lora.rank"),
        ({"lora": {"r": 0}}, "lora.r"),
        ({"packing": "sometimes"}, "packing"),
    ],
)
def test_invalid_job_arguments_are_named(
    tmp_path: Path, tiny_base: Path, job_args: dict[str, Any], key: str
) -> None:
    with pytest.raises(TrainingConfigError) as err:
        resolve(tiny_base, tmp_path, job_args=job_args)
    assert (err.value.source, err.value.key) == ("job arguments", key)


def test_a_file_that_is_not_json_is_named(tmp_path: Path, tiny_base: Path) -> None:
    path = tmp_path / "etc" / "fine-tune-config.json"
    path.parent.mkdir()
    path.write_text("{ not json")
    with pytest.raises(TrainingConfigError, match="not valid JSON") as err:
        resolve(tiny_base, tmp_path / "etc")
    assert err.value.source == str(path)


def test_unknown_mode_and_preset_are_errors(tmp_path: Path, tiny_base: Path) -> None:
    with pytest.raises(TrainingConfigError, match="no config for mode 'poetry'"):
        resolve(tiny_base, REPO / "etc", mode="poetry")
    with pytest.raises(TrainingConfigError, match="unknown preset 'turbo'"):
        resolve(tiny_base, REPO / "etc", preset="turbo")
    with pytest.raises(TrainingConfigError, match="kind"):
        resolve(tiny_base, REPO / "etc", kind="qlora")

"""Training configuration: layer order, provenance, smart defaults, errors naming file and key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.training.config import (
    SMALL_PROFILE_ANCHOR,
    SMALL_PROFILE_MAX_EPOCHS,
    SMALL_PROFILE_MIN_EPOCHS,
    ResolvedConfig,
    resolve_config,
)
from services.training.config_model import TrainingConfig
from services.training.errors import TrainingConfigError
from services.training.modelinfo import CATEGORY_DEFAULTS
from tests.services.training.training_helpers import header_only_model

REPO = Path(__file__).resolve().parents[3]


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def mode_file(mode: str, training: dict[str, Any], **dataset: Any) -> dict[str, Any]:
    """A mode file (the one schema: services.curation.config.ModeConfig)."""
    return {
        "mode": mode,
        "dataset": {"min_samples": 300, "recommended_samples": 3000, **dataset},
        "training": training,
    }


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
        mode_file("dual", {"learning_rate_scale": 3, "warmup_steps": 7}),
    )
    r = resolve(tiny_base, etc, mode="dual", preset="quick", job_args={"lora.r": 2})
    c = r.config
    tiny = CATEGORY_DEFAULTS["tiny"]
    assert (c.save_steps, r.sources["save_steps"]) == (TrainingConfig().save_steps, "default")
    assert (c.batch_size, r.sources["batch_size"]) == (tiny.batch_size, "smart")
    assert (c.max_seq_length, r.sources["max_seq_length"]) == (1024, "preset")
    # The mode scales the rate resolved below it (the global file's 1e-4).
    assert (c.learning_rate, r.sources["learning_rate"]) == (pytest.approx(3e-4), "mode")
    assert (c.warmup_steps, r.sources["warmup_steps"]) == (7, "mode")
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
    write_json(etc / "modes" / "agent-config.json", mode_file("agent", {"warmup_ratio": 0.3}))
    r = resolve(tiny_base, etc, mode="agent", preset="quick", job_args={"warmup_ratio": 0.4})
    assert (r.config.warmup_ratio, r.sources["warmup_ratio"]) == (0.4, "job")
    r = resolve(tiny_base, etc, mode="agent", preset="quick")
    assert (r.config.warmup_ratio, r.sources["warmup_ratio"]) == (0.2, "preset")


def test_full_runs_take_the_files_full_overrides(tmp_path: Path, tiny_base: Path) -> None:
    etc = tmp_path / "etc"
    write_json(
        etc / "modes" / "emulation-config.json",
        mode_file(
            "emulation",
            {"learning_rate_scale": 0.5, "save_total_limit": 4, "full": {"learning_rate_scale": 2}},
            full={"min_samples": 5000, "recommended_samples": 12000},
        ),
    )
    lora = resolve(tiny_base, etc, mode="emulation", kind="lora")
    full = resolve(tiny_base, etc, mode="emulation", kind="full")
    tiny = CATEGORY_DEFAULTS["tiny"]
    assert lora.config.learning_rate == pytest.approx(tiny.lora_learning_rate * 0.5)
    assert (full.config.learning_rate, full.sources["learning_rate"]) == (
        pytest.approx(tiny.full_learning_rate * 2),
        "mode",
    )
    assert lora.config.save_total_limit == full.config.save_total_limit == 4
    # The full fine-tune thresholds apply to full runs, the LoRA ones to LoRA runs.
    assert (lora.config.dataset.min_samples, lora.config.dataset.recommended_samples) == (
        300,
        3000,
    )
    assert (full.config.dataset.min_samples, full.config.dataset.recommended_samples) == (
        5000,
        12000,
    )


@pytest.mark.parametrize(
    ("n_samples", "epochs"),
    [
        (50, SMALL_PROFILE_MAX_EPOCHS),  # 7 steps an epoch: 6 epochs (at most), 42 steps
        (65, SMALL_PROFILE_MAX_EPOCHS),  # 9 steps an epoch: 54 steps
        (99, 5),  # 13 steps an epoch: 65 steps (not 6 epochs here and 2 at 100)
        (100, 5),
        (142, 3),  # 18 steps an epoch: 54 steps
        (150, 3),
        (216, SMALL_PROFILE_MIN_EPOCHS),  # 27 steps an epoch: 54 steps
        (299, SMALL_PROFILE_MIN_EPOCHS),  # at least 2 epochs: 76 steps
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
    # As measured on SmolLM2-135M: a step every 8 samples at 3e-3, 54 steps, each step held
    # near the base on general text, then the share of the adapter within the budget kept.
    assert small.config.learning_rate == pytest.approx(3e-3)
    assert small.config.lora.scale == "auto" and small.sources["lora.scale"] == "smart"
    assert small.config.lora.anchor == SMALL_PROFILE_ANCHOR > 0
    assert (small.config.batch_size, small.config.gradient_accumulation_steps) == (8, 1)
    assert small.config.num_epochs == 3  # the fewest that make 54 steps of 8 samples
    # With the shipped files and an emulation filter it still is (the mode's scale is 1).
    shipped = resolve(tiny_base, REPO / "etc", n_samples=150, mode="emulation")
    assert shipped.config.learning_rate == pytest.approx(3e-3)
    assert (shipped.config.batch_size, shipped.config.gradient_accumulation_steps) == (8, 1)
    big = resolve(tiny_base, tmp_path / "no-etc", n_samples=300)
    assert big.config.learning_rate == tiny.lora_learning_rate
    assert big.config.lora.scale == 1.0  # the whole adapter
    assert big.config.lora.anchor == 0  # no drift penalty
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
    scale = shipped["training"]["learning_rate_scale"]
    if kind == "full":
        scale = shipped["training"].get("full", {}).get("learning_rate_scale", scale)
    d = CATEGORY_DEFAULTS["tiny"]
    category_lr = d.full_learning_rate if kind == "full" else d.lora_learning_rate
    assert r.config.learning_rate == pytest.approx(category_lr * scale)
    assert r.sources["learning_rate"] == "mode"
    assert r.sources["lr_scheduler"] == "global"
    assert r.config.warmup_steps == shipped["training"]["warmup_steps"]
    # Batch, accumulation and rank stay the size category's.
    for key in ("batch_size", "gradient_accumulation_steps", "lora.r", "num_epochs"):
        assert r.sources[key] == "smart", key


SIZES = [
    # (parameters, category)
    (500_000_000, "small"),
    (7_000_000_000, "medium"),
    (13_000_000_000, "large"),
    (34_000_000_000, "xlarge"),
    (70_000_000_000, "xlarge"),
]


@pytest.mark.parametrize(("params", "category"), SIZES)
@pytest.mark.parametrize("mode", [None, "dual", "emulation", "agent"])
def test_the_size_category_sets_batch_and_rank_for_every_mode(
    tmp_path: Path, params: int, category: str, mode: str | None
) -> None:
    base = header_only_model(tmp_path / f"m{params}", params)
    d = CATEGORY_DEFAULTS[category]  # type: ignore[index]
    r = resolve(base, REPO / "etc", mode=mode)
    c = r.config
    assert r.model.category == category
    assert (c.batch_size, c.gradient_accumulation_steps) == (
        d.batch_size,
        d.gradient_accumulation_steps,
    )
    assert (c.lora.r, c.lora.alpha) == (d.lora_r, 2 * d.lora_r)
    assert c.num_epochs == d.num_epochs
    scale = 1.0
    if mode is not None:
        shipped = json.loads((REPO / "etc" / "modes" / f"{mode}-config.json").read_text())
        scale = shipped["training"]["learning_rate_scale"]
    assert c.learning_rate == pytest.approx(d.lora_learning_rate * scale)
    # A user's explicit setting still wins (training.config or --set: the job layer).
    mine = resolve(base, REPO / "etc", mode=mode, job_args={"batch_size": 3, "lora.r": 4})
    assert (mine.config.batch_size, mine.config.lora.r) == (3, 4)
    assert mine.sources["batch_size"] == mine.sources["lora.r"] == "job"


def test_cortex_table_for_medium_and_xlarge(tmp_path: Path) -> None:
    medium = resolve(header_only_model(tmp_path / "m", 7_000_000_000), REPO / "etc")
    xlarge = resolve(header_only_model(tmp_path / "x", 70_000_000_000), REPO / "etc", mode="dual")
    assert (medium.config.learning_rate, medium.config.lora.r) == (1e-4, 16)
    assert (xlarge.config.learning_rate, xlarge.config.lora.r) == (pytest.approx(2e-5 * 0.75), 64)
    assert (xlarge.config.batch_size, xlarge.config.gradient_accumulation_steps) == (1, 32)


def test_a_mode_file_is_one_schema(tmp_path: Path, tiny_base: Path) -> None:
    etc = tmp_path / "etc"
    path = write_json(
        etc / "modes" / "dual-config.json",
        {**mode_file("dual", {"save_total_limit": 5}), "curation": {"anything": 1}},
    )
    # A section curation does not know is refused by the resolver too.
    with pytest.raises(TrainingConfigError) as err:
        resolve(tiny_base, etc, mode="dual")
    assert (err.value.source, err.value.key) == (str(path), "curation")
    write_json(path, mode_file("dual", {"save_total_limit": 5}))
    r = resolve(tiny_base, etc, mode="dual")
    assert (r.config.save_total_limit, r.sources["save_total_limit"]) == (5, "mode")
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
    ("fine-tune-config.json", {"dataset": {"full": {"min_sample": 1}}}, "dataset.full.min_sample"),
    ("modes/dual-config.json", mode_file("dual", {"lora": {"r": 4}}), "training.lora"),
    ("modes/dual-config.json", mode_file("dual", {"batch_size": 4}), "training.batch_size"),
    (
        "modes/dual-config.json",
        mode_file("dual", {"full": {"warmup_ratio": -1}}),
        "training.full.warmup_ratio",
    ),
    ("modes/dual-config.json", mode_file("dual", {"warmup_steps": -1}), "training.warmup_steps"),
    (
        "modes/dual-config.json",
        mode_file("dual", {"learning_rate_scale": 0}),
        "training.learning_rate_scale",
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

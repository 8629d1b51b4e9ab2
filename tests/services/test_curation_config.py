"""etc/curation.json and etc/modes/*-config.json: the shipped files validate, bad ones
are refused naming the file and the key."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from services.curation import (
    DEFAULT_ETC_DIR,
    MODES,
    CurationError,
    ModeConfig,
    load_mode_config,
    load_mode_configs,
    load_rules,
)

ETC = DEFAULT_ETC_DIR
SHIPPED_RULES = json.loads((ETC / "curation.json").read_text(encoding="utf-8"))


def test_etc_dir_is_the_repository_etc() -> None:
    assert Path(__file__).resolve().parents[2] / "etc" == ETC


def test_shipped_curation_rules_validate() -> None:
    rules = load_rules()
    assert rules.source == str(ETC / "curation.json")
    assert rules.tags("dual") == ("thought", "world")
    assert rules.tags("emulation") == ("user", "assistant")
    assert rules.tags("agent") == ("instruction", "action")
    assert rules.eval_share == 0.1
    assert rules.min_response_words == 5
    assert rules.quality.min_quality == 7.0
    assert [(t.min_quality, t.weight) for t in rules.quality.weights] == [
        (9.0, 2.0),
        (8.0, 1.5),
        (7.0, 1.0),
    ]
    assert rules.mode_for_type("task") == "agent"
    assert rules.mode_for_type("journal") == "emulation"
    assert rules.mode_for_type("nothing") is None
    assert "as an ai language model" in {p.lower() for p in rules.filler.phrases}
    assert "i hope this helps" in {p.lower() for p in rules.filler.sentences}
    assert rules.metrics.avg_assistant_words == (25.0, 40.0)


def test_load_rules_from_a_path(tmp_path: Path) -> None:
    p = tmp_path / "rules.json"
    p.write_text(json.dumps(SHIPPED_RULES), encoding="utf-8")
    assert load_rules(p).source == str(p)
    assert load_rules(str(p)).eval_share == 0.1


SPECIFIED = {
    # mode: (warmup_steps, full min_samples, full recommended_samples)
    "dual": (150, 3000, 8000),
    "emulation": (100, 5000, 12000),
    "agent": (120, 2000, 6000),
}


@pytest.mark.parametrize("mode", MODES)
def test_every_shipped_mode_config_validates(mode: str) -> None:
    cfg = load_mode_config(mode)
    assert cfg.mode == mode
    assert cfg.source == str(ETC / "modes" / f"{mode}-config.json")
    d = cfg.dataset
    assert 0 < d.min_samples <= d.recommended_samples <= (d.max_samples or d.recommended_samples)
    warmup, full_min, full_recommended = SPECIFIED[mode]
    # MetaHuman's full fine-tune thresholds, apart from the LoRA ones.
    assert cfg.thresholds("full") == (full_min, full_recommended)
    assert cfg.thresholds("lora") == (d.min_samples, d.recommended_samples)
    assert cfg.thresholds("lora")[0] < full_min
    lora = cfg.hyperparameters("lora")
    full = cfg.hyperparameters("full")
    assert lora["warmup_steps"] == warmup
    for key in ("learning_rate_scale", "weight_decay", "max_grad_norm", "save_total_limit"):
        assert key in lora and key in full
    # Only what is about the mode: the size category's keys are not there.
    for key in ("learning_rate", "batch_size", "gradient_accumulation_steps", "lora"):
        assert key not in lora and key not in full
    json.dumps(lora)


def test_every_etc_json_of_this_area_has_a_comment() -> None:
    for path in [ETC / "curation.json", *(ETC / "modes" / f"{m}-config.json" for m in MODES)]:
        data = json.loads(path.read_text(encoding="utf-8"))
        assert data["$comment"], path


def test_load_mode_configs_has_every_mode() -> None:
    configs = load_mode_configs()
    assert set(configs) == set(MODES)
    assert all(isinstance(c, ModeConfig) for c in configs.values())


def test_hyperparameters_rejects_an_unknown_kind() -> None:
    with pytest.raises(CurationError, match="unknown training kind"):
        load_mode_config("dual").hyperparameters("qlora")


def test_unknown_mode() -> None:
    with pytest.raises(CurationError, match="unknown mode 'operator'"):
        load_mode_config("operator")


# ---------------------------------------------------------------- invalid files


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *path, last = dotted.split(".")
    node: Any = data
    for part in path:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is _DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


_DELETE = object()


@pytest.mark.parametrize(
    ("change", "value", "key", "message"),
    [
        ("quality.weights.1.weight", -1, "quality.weights.1.weight", "greater than 0"),
        ("quality.weights.1.wieght", 1.0, "quality.weights.1.wieght", "unknown key"),
        ("quality", _DELETE, "quality", "missing"),
        ("eval_share", 1.5, "eval_share", "less than 1"),
        ("min_response_words", "5", "min_response_words", "valid integer"),
        ("min_response_words", True, "min_response_words", "valid integer"),
        ("default_mode", "operator", "default_mode", "'dual', 'emulation' or 'agent'"),
        ("modes.agent.types.0", "reflection", "modes.agent.types.0", "also listed under dual"),
        ("modes.agent.prompt_tag", "user", "modes.agent.prompt_tag", "already used"),
        ("modes.agent.prompt_tag", "<instr>", "modes.agent.prompt_tag", "pattern"),
        ("modes.agent", _DELETE, "modes", "missing ['agent']"),
        ("quality.weights.0.min_quality", 7.5, "quality.weights.1.min_quality", "highest"),
        ("quality.min_quality", 6.0, "quality.min_quality", "below the lowest weight tier"),
        (
            "quality.heuristic.good_length_words",
            [80, 8],
            "quality.heuristic.good_length_words",
            "range",
        ),
        ("continuation_prompt", "Go on: {name}", "continuation_prompt", "placeholders"),
        ("filler.phrases.0", " ", "filler.phrases.0", "empty"),
        ("no_response_prompts.observation", "", "no_response_prompts.observation", "empty"),
        ("metrics.min_short_share", 80, "metrics.min_short_share", "less than or equal to 1"),
    ],
)
def test_invalid_rules_name_the_file_and_the_key(
    tmp_path: Path, change: str, value: Any, key: str, message: str
) -> None:
    data = copy.deepcopy(SHIPPED_RULES)
    _set(data, change, value)
    path = tmp_path / "curation.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(CurationError) as info:
        load_rules(path)
    err = info.value
    assert err.path == str(path)
    assert err.key == key
    assert str(err).startswith(f"{path}: key '{key}': ")
    assert message in str(err)


def test_non_finite_numbers_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "curation.json"
    path.write_text(
        json.dumps(SHIPPED_RULES).replace('"eval_share": 0.1', '"eval_share": NaN'),
        encoding="utf-8",
    )
    with pytest.raises(CurationError, match="key 'eval_share'") as info:
        load_rules(path)
    assert info.value.key == "eval_share"


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(CurationError, match=f"{missing}: cannot read"):
        load_rules(missing)
    bad = tmp_path / "bad.json"
    bad.write_text('{"modes": ', encoding="utf-8")
    with pytest.raises(CurationError, match=r"bad.json: not valid JSON: .* \(line 1, column 11\)"):
        load_rules(bad)
    arr = tmp_path / "arr.json"
    arr.write_text("[]", encoding="utf-8")
    with pytest.raises(CurationError, match="must hold a JSON object"):
        load_rules(arr)


def test_comments_are_ignored_at_any_depth(tmp_path: Path) -> None:
    data = copy.deepcopy(SHIPPED_RULES)
    data["quality"]["$comment"] = "tiers"
    data["modes"]["dual"]["notes"] = ["inner voice"]
    path = tmp_path / "curation.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    assert load_rules(path).quality.min_quality == 7.0


def _mode_etc(tmp_path: Path, mode: str, change: str, value: Any) -> Path:
    data = json.loads((ETC / "modes" / f"{mode}-config.json").read_text(encoding="utf-8"))
    _set(data, change, value)
    (tmp_path / "modes").mkdir(exist_ok=True)
    (tmp_path / "modes" / f"{mode}-config.json").write_text(json.dumps(data), encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(
    ("change", "value", "key", "message"),
    [
        ("training.learning_rate_scale", 0, "training.learning_rate_scale", "greater than 0"),
        ("training.lerning_rate", 1e-4, "training.lerning_rate", "unknown key"),
        ("training.warmup_steps", 1.5, "training.warmup_steps", "valid integer"),
        ("training.full.max_grad_norm", -1, "training.full.max_grad_norm", "greater than 0"),
        ("training.save_total_limit", 0, "training.save_total_limit", "greater than or equal"),
        ("training.batch_size", 4, "training.batch_size", "size category"),
        ("training.lora", {"r": 8}, "training.lora", "size category"),
        ("training.full.learning_rate", 1e-5, "training.full.learning_rate", "learning_rate_scale"),
        ("dataset.full.recommended_samples", 1, "dataset.full.recommended_samples", "below"),
        ("dataset.min_samples", _DELETE, "dataset.min_samples", "missing"),
        ("mode", "agent", "mode", "the config of mode 'dual'"),
        ("dataset.recommended_samples", 10, "dataset.recommended_samples", "below min_samples"),
        ("dataset.max_samples", 100, "dataset.max_samples", "below recommended_samples"),
    ],
)
def test_invalid_mode_config_names_the_file_and_the_key(
    tmp_path: Path, change: str, value: Any, key: str, message: str
) -> None:
    etc = _mode_etc(tmp_path, "dual", change, value)
    path = etc / "modes" / "dual-config.json"
    with pytest.raises(CurationError) as info:
        load_mode_config("dual", etc)
    err = info.value
    assert (err.path, err.key) == (str(path), key)
    assert str(err).startswith(f"{path}: key '{key}': ")
    assert message in str(err)


def test_mode_config_max_samples_may_be_null(tmp_path: Path) -> None:
    etc = _mode_etc(tmp_path, "agent", "dataset.max_samples", None)
    assert load_mode_config("agent", etc).dataset.max_samples is None


def test_a_key_the_resolver_accepts_is_accepted_by_curation(tmp_path: Path) -> None:
    # One schema and one loader: save_total_limit (MetaHuman's mode configs document it)
    # is read by curation, the dataset build and the training configuration alike.
    etc = _mode_etc(tmp_path, "agent", "training.save_total_limit", 5)
    assert load_mode_config("agent", etc).hyperparameters("lora")["save_total_limit"] == 5

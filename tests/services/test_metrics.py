"""Dataset quality metrics on hand-computed sets."""

from __future__ import annotations

from services.curation import (
    MetricThresholds,
    ModeConfig,
    Sample,
    load_mode_configs,
    parse_mode_config,
)
from services.metrics import dataset_metrics


def _sample(i: int, mode: str, words: int, filler: bool = False) -> Sample:
    text = " ".join(["w"] * words)
    return Sample(
        memory_id=f"m{i:03d}",
        mode=mode,
        kind="chat",
        prompt="<user>q</user>",
        response=f"<assistant>{text}</assistant>",
        context=(),
        quality=8.0,
        weight=1.5,
        split="train",
        excluded=None,
        filler=filler,
        assistant_words=words,
    )


def _config(mode: str, min_samples: int, recommended: int) -> ModeConfig:
    cfg = load_mode_configs()[mode]
    data = cfg.model_dump(mode="json")
    data["dataset"] = {
        "min_samples": min_samples,
        "recommended_samples": recommended,
        "max_samples": None,
    }
    return parse_mode_config(data, mode, "test")


def test_a_bad_set() -> None:
    # words: 10 20 30 40 | 41 50 60 100 | 101 150 -> sum 602
    words = [10, 20, 30, 40, 41, 50, 60, 100, 101, 150]
    modes = ["emulation"] * 5 + ["dual"] * 4 + ["agent"]
    samples = [
        _sample(i, m, w, filler=(i == 0)) for i, (m, w) in enumerate(zip(modes, words, strict=True))
    ]
    m = dataset_metrics(samples, load_mode_configs())
    assert m["total"] == 10
    assert m["avg_assistant_words"] == 60.2
    assert m["short_share"] == 0.4  # 10, 20, 30, 40 (<= 40)
    assert m["long_share"] == 0.2  # 101, 150 (> 100; 100 is not long)
    assert m["filler_share"] == 0.1
    assert m["modes"] == {
        "dual": {"count": 4, "share": 0.4},
        "emulation": {"count": 5, "share": 0.5},
        "agent": {"count": 1, "share": 0.1},
    }
    ind = m["indicators"]
    assert ind["avg_assistant_words"] == {
        "value": 60.2,
        "target": "25-40 words",
        "bad": "> 60 words",
        "tier": "bad",
        "good": False,
    }
    assert ind["short_share"] == {
        "value": 0.4,
        "target": "> 0.8",
        "bad": "< 0.6",
        "tier": "bad",
        "good": False,
    }
    assert ind["filler_share"] == {
        "value": 0.1,
        "target": "< 0.02",
        "bad": "> 0.05",
        "tier": "bad",
        "good": False,
    }
    assert ind["long_share"] == {
        "value": 0.2,
        "target": "0.05-0.1",
        "bad": None,
        "tier": "fair",
        "good": False,
    }
    # agent at exactly 10% is not above 10% (not good), nor below 5% (not bad): fair.
    assert (ind["mode_balance"]["good"], ind["mode_balance"]["tier"]) == (False, "fair")
    assert ind["mode_balance"]["value"] == {"dual": 0.4, "emulation": 0.5, "agent": 0.1}
    w = m["warnings"]
    assert "dual: 4 samples, below min_samples 300 (recommended 3000)" in w
    assert "emulation: 5 samples, below min_samples 500 (recommended 5000)" in w
    assert "agent: 1 sample, below min_samples 200 (recommended 2000)" in w
    assert "average response length 60.2 words is outside 25-40" in w
    assert any(x.startswith("40.0% of responses are short") for x in w)
    assert any(x.startswith("10.0% of responses had filler") for x in w)
    assert any(x.startswith("agent: 10.0% of samples") for x in w)


def test_a_good_set() -> None:
    words = [25, 30, 30, 35, 35, 30, 30, 30, 28, 40]  # sum 313
    modes = ["dual"] * 4 + ["emulation"] * 3 + ["agent"] * 3
    samples = [_sample(i, m, w) for i, (m, w) in enumerate(zip(modes, words, strict=True))]
    configs = {
        "dual": _config("dual", 2, 4),
        "emulation": _config("emulation", 4, 8),
        "agent": _config("agent", 1, 3),
    }
    m = dataset_metrics(samples, configs)
    assert m["avg_assistant_words"] == 31.3
    assert (m["short_share"], m["long_share"], m["filler_share"]) == (1.0, 0.0, 0.0)
    tiers = {k: v["tier"] for k, v in m["indicators"].items()}
    # No long answers at all: the long share (5-10% is good) is only fair.
    assert tiers == {
        "avg_assistant_words": "good",
        "short_share": "good",
        "filler_share": "good",
        "long_share": "fair",
        "mode_balance": "good",
    }
    # dual 4 >= recommended 4: nothing; emulation 3 < min 4; agent 3 >= recommended 3.
    assert m["warnings"] == ["emulation: 3 samples, below min_samples 4 (recommended 8)"]


def test_recommended_warning_and_absent_modes() -> None:
    samples = [_sample(i, "dual", 30) for i in range(3)]
    m = dataset_metrics(samples, {"dual": _config("dual", 2, 5), "agent": _config("agent", 1, 3)})
    # agent is absent: no warning about it, and it does not count against the balance.
    assert m["warnings"] == ["dual: 3 samples, below recommended_samples 5"]
    assert m["modes"]["agent"] == {"count": 0, "share": 0.0}
    assert m["indicators"]["mode_balance"] == {
        "value": {"dual": 1.0},
        "target": "every present mode > 0.1",
        "bad": "any present mode < 0.05",
        "tier": "good",
        "good": True,
    }


def test_fair_and_bad_tiers_between_the_limits() -> None:
    # 50 words: above the good 25-40, not above the bad 60; 1 agent in 25 is 4%: bad.
    samples = [_sample(i, "emulation", 50) for i in range(24)] + [_sample(99, "agent", 50)]
    ind = dataset_metrics(samples, None)["indicators"]
    assert ind["avg_assistant_words"]["tier"] == "fair"
    assert ind["short_share"]["tier"] == "bad"  # no answer of 40 words or fewer
    assert ind["mode_balance"]["tier"] == "bad"
    assert ind["filler_share"]["tier"] == "good"


def test_empty_set() -> None:
    m = dataset_metrics([], None)
    assert m["total"] == 0
    assert m["avg_assistant_words"] == 0.0
    assert all(v["good"] is None and v["tier"] is None for v in m["indicators"].values())
    assert m["warnings"] == ["the dataset is empty: no sample is eligible"]


def test_thresholds_are_configurable() -> None:
    samples = [_sample(i, "emulation", 50) for i in range(4)]
    t = MetricThresholds(
        short_words=60, long_words=40, avg_assistant_words=(45, 55), min_short_share=0.5
    )
    m = dataset_metrics(samples, None, t)
    assert (m["short_share"], m["long_share"]) == (1.0, 1.0)
    assert m["indicators"]["avg_assistant_words"]["good"] is True
    assert m["warnings"] == []

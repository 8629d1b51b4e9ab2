"""Dataset quality metrics, written to every run summary (docs/ARCHITECTURE.md, "Cognitive
modes and samples"); ``status`` does not carry them.

``dataset_metrics`` measures a list of samples (normally those a dataset holds):

- ``total``; ``avg_assistant_words`` (mean words of the untagged response);
- ``short_share`` (<= ``short_words`` words, 40), ``long_share`` (> ``long_words``, 100),
  ``filler_share`` (filler was found and removed);
- ``modes``: per mode, ``count`` and ``share`` (every mode listed, 0 when absent);
- ``indicators``: each measure against the tiers of ``etc/curation.json`` ``metrics``
  (MetaHuman's: average 25-40 words good, > 60 bad; short share > 80% good, < 60% bad;
  filler < 2% good, > 5% bad; long share 5-10% good; every present mode > 10% good, any
  < 5% bad; fair in between), as ``{"value", "target", "bad", "tier", "good"}``; ``tier``
  and ``good`` are None for an empty dataset;
- ``warnings``: for each present mode, its count against the mode config's
  ``min_samples`` (below: not enough to train that mode well) and
  ``recommended_samples``; plus one per bad indicator.

Shares are fractions (0..1) rounded to 4 places; the average to 2.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from services.curation.config import MODES, MetricThresholds
from services.curation.mode_config import ModeConfig
from services.curation.sample import Sample


def _count(n: int) -> str:
    return f"{n} sample{'' if n == 1 else 's'}"


def _share(n: int, total: int) -> float:
    return round(n / total, 4) if total else 0.0


@dataclass(frozen=True)
class _Measures:
    """What is measured of the samples, before it is judged."""

    total: int
    avg: float
    short: float
    long_: float
    filler: float
    counts: dict[str, int]  # per mode, every mode listed

    def modes(self) -> dict[str, dict[str, Any]]:
        return {m: {"count": n, "share": _share(n, self.total)} for m, n in self.counts.items()}

    def low_modes(self, t: MetricThresholds) -> list[str]:
        """The present modes whose share is at most ``min_mode_share``."""
        return sorted(
            m for m, n in self.counts.items() if n and _share(n, self.total) <= t.min_mode_share
        )


def _measure(items: list[Sample], t: MetricThresholds) -> _Measures:
    total = len(items)
    words = [s.assistant_words for s in items]
    counts = {m: 0 for m in MODES}
    for s in items:
        counts[s.mode] = counts.get(s.mode, 0) + 1
    return _Measures(
        total=total,
        avg=round(sum(words) / total, 2) if total else 0.0,
        short=_share(sum(1 for w in words if w <= t.short_words), total),
        long_=_share(sum(1 for w in words if w > t.long_words), total),
        filler=_share(sum(1 for s in items if s.filler), total),
        counts=counts,
    )


Tier = str  # "good" | "fair" | "bad"


def _tier(good: bool, bad: bool) -> Tier:
    return "good" if good else "bad" if bad else "fair"


def _tiers(m: _Measures, t: MetricThresholds) -> dict[str, Tier]:
    """Each indicator's tier (MetaHuman's good and bad limits; fair in between)."""
    lo, hi = t.avg_assistant_words
    long_lo, long_hi = t.long_share
    shares = [_share(n, m.total) for n in m.counts.values() if n]
    return {
        "avg_assistant_words": _tier(lo <= m.avg <= hi, m.avg > t.bad_avg_assistant_words),
        "short_share": _tier(m.short > t.min_short_share, m.short < t.bad_short_share),
        "filler_share": _tier(m.filler < t.max_filler_share, m.filler > t.bad_filler_share),
        "long_share": _tier(long_lo <= m.long_ <= long_hi, False),
        "mode_balance": _tier(
            all(x > t.min_mode_share for x in shares), any(x < t.bad_mode_share for x in shares)
        ),
    }


def _judge(m: _Measures, t: MetricThresholds) -> dict[str, bool]:
    """Each indicator: whether it is good."""
    return {key: tier == "good" for key, tier in _tiers(m, t).items()}


def _indicators(m: _Measures, t: MetricThresholds) -> dict[str, dict[str, Any]]:
    lo, hi = t.avg_assistant_words
    long_lo, long_hi = t.long_share
    values: dict[str, tuple[Any, str, str | None]] = {
        "avg_assistant_words": (
            m.avg,
            f"{lo:g}-{hi:g} words",
            f"> {t.bad_avg_assistant_words:g} words",
        ),
        "short_share": (m.short, f"> {t.min_short_share:g}", f"< {t.bad_short_share:g}"),
        "filler_share": (m.filler, f"< {t.max_filler_share:g}", f"> {t.bad_filler_share:g}"),
        "long_share": (m.long_, f"{long_lo:g}-{long_hi:g}", None),
        "mode_balance": (
            {mode: v["share"] for mode, v in m.modes().items() if v["count"]},
            f"every present mode > {t.min_mode_share:g}",
            f"any present mode < {t.bad_mode_share:g}",
        ),
    }
    tiers = _tiers(m, t)
    empty = m.total == 0
    return {
        key: {
            "value": value,
            "target": target,
            "bad": bad,
            "tier": None if empty else tiers[key],
            "good": None if empty else tiers[key] == "good",
        }
        for key, (value, target, bad) in values.items()
    }


def _count_warnings(
    counts: Mapping[str, int], mode_rules: Mapping[str, ModeConfig] | None
) -> list[str]:
    """Each present mode's count against its ``min_samples`` and ``recommended_samples``."""
    warnings = []
    for mode, n in counts.items():
        cfg = (mode_rules or {}).get(mode)
        if not n or cfg is None:
            continue
        req = cfg.dataset
        if n < req.min_samples:
            warnings.append(
                f"{mode}: {_count(n)}, below min_samples {req.min_samples} "
                f"(recommended {req.recommended_samples})"
            )
        elif n < req.recommended_samples:
            warnings.append(
                f"{mode}: {_count(n)}, below recommended_samples {req.recommended_samples}"
            )
    return warnings


def _indicator_warnings(m: _Measures, t: MetricThresholds) -> list[str]:
    """One warning per bad indicator of a dataset that is not empty."""
    lo, hi = t.avg_assistant_words
    good = _judge(m, t)
    good.pop("long_share")  # a tier only: most conversational datasets hold no long answers
    warnings = []
    if not good["avg_assistant_words"]:
        warnings.append(f"average response length {m.avg:g} words is outside {lo:g}-{hi:g}")
    if not good["short_share"]:
        warnings.append(
            f"{m.short:.1%} of responses are short (<= {t.short_words} words); "
            f"more than {t.min_short_share:.0%} is better"
        )
    if not good["filler_share"]:
        warnings.append(
            f"{m.filler:.1%} of responses had filler; below {t.max_filler_share:.0%} is better"
        )
    for mode in m.low_modes(t):
        warnings.append(
            f"{mode}: {_share(m.counts[mode], m.total):.1%} of samples; every present mode "
            f"should be above {t.min_mode_share:.0%}"
        )
    return warnings


def dataset_metrics(
    samples: Iterable[Sample],
    mode_rules: Mapping[str, ModeConfig] | None,
    thresholds: MetricThresholds | None = None,
) -> dict[str, Any]:
    """The metrics of a dataset; ``mode_rules`` (mode -> config) gives the sample-count
    warnings, ``thresholds`` the good/bad limits (the seed values when None)."""
    t = thresholds or MetricThresholds()
    m = _measure(list(samples), t)
    warnings: list[str] = []
    if m.total == 0:
        warnings.append("the dataset is empty: no sample is eligible")
    warnings += _count_warnings(m.counts, mode_rules)
    if m.total:
        warnings += _indicator_warnings(m, t)
    return {
        "total": m.total,
        "avg_assistant_words": m.avg,
        "short_share": m.short,
        "long_share": m.long_,
        "filler_share": m.filler,
        "modes": m.modes(),
        "indicators": _indicators(m, t),
        "warnings": warnings,
    }

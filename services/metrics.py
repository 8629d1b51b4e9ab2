"""Dataset quality metrics (DESIGN.md): reported in every run summary and in ``status``.

``dataset_metrics`` measures a list of samples (normally those a dataset holds):

- ``total``; ``avg_assistant_words`` (mean words of the untagged response);
- ``short_share`` (<= ``short_words`` words, 40), ``long_share`` (> ``long_words``, 100),
  ``filler_share`` (filler was found and removed);
- ``modes``: per mode, ``count`` and ``share`` (every mode listed, 0 when absent);
- ``indicators``: each measure against the seed thresholds of ``etc/curation.json``
  ``metrics`` (average 25-40 words, short share > 80%, filler < 2%, every present mode
  > 10%), as ``{"value", "target", "good"}``; ``good`` is None for an empty dataset;
- ``warnings``: for each present mode, its count against the mode config's
  ``min_samples`` (below: not enough to train that mode well) and
  ``recommended_samples``; plus one per bad indicator.

Shares are fractions (0..1) rounded to 4 places; the average to 2.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from services.curation.config import MODES, MetricThresholds, ModeConfig
from services.curation.sample import Sample


def _count(n: int) -> str:
    return f"{n} sample{'' if n == 1 else 's'}"


def _share(n: int, total: int) -> float:
    return round(n / total, 4) if total else 0.0


def dataset_metrics(
    samples: Iterable[Sample],
    mode_rules: Mapping[str, ModeConfig] | None,
    thresholds: MetricThresholds | None = None,
) -> dict[str, Any]:
    """The metrics of a dataset; ``mode_rules`` (mode -> config) gives the sample-count
    warnings, ``thresholds`` the good/bad limits (the seed values when None)."""
    t = thresholds or MetricThresholds()
    items = list(samples)
    total = len(items)
    words = [s.assistant_words for s in items]
    avg = round(sum(words) / total, 2) if total else 0.0
    short = _share(sum(1 for w in words if w <= t.short_words), total)
    long_ = _share(sum(1 for w in words if w > t.long_words), total)
    filler = _share(sum(1 for s in items if s.filler), total)
    counts = {m: 0 for m in MODES}
    for s in items:
        counts[s.mode] = counts.get(s.mode, 0) + 1
    modes = {m: {"count": n, "share": _share(n, total)} for m, n in counts.items()}

    lo, hi = t.avg_assistant_words
    low_modes = sorted(m for m, v in modes.items() if v["count"] and v["share"] <= t.min_mode_share)
    empty = total == 0
    avg_good = lo <= avg <= hi
    short_good = short > t.min_short_share
    filler_good = filler < t.max_filler_share

    def indicator(value: Any, target: str, good: bool) -> dict[str, Any]:
        return {"value": value, "target": target, "good": None if empty else good}

    indicators = {
        "avg_assistant_words": indicator(avg, f"{lo:g}-{hi:g} words", avg_good),
        "short_share": indicator(short, f"> {t.min_short_share:g}", short_good),
        "filler_share": indicator(filler, f"< {t.max_filler_share:g}", filler_good),
        "mode_balance": indicator(
            {m: v["share"] for m, v in modes.items() if v["count"]},
            f"every present mode > {t.min_mode_share:g}",
            not low_modes,
        ),
    }

    warnings: list[str] = []
    if empty:
        warnings.append("the dataset is empty: no sample is eligible")
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
    if not empty:
        if not avg_good:
            warnings.append(f"average response length {avg:g} words is outside {lo:g}-{hi:g}")
        if not short_good:
            warnings.append(
                f"{short:.1%} of responses are short (<= {t.short_words} words); "
                f"more than {t.min_short_share:.0%} is better"
            )
        if not filler_good:
            warnings.append(
                f"{filler:.1%} of responses had filler; below {t.max_filler_share:.0%} is better"
            )
        for m in low_modes:
            warnings.append(
                f"{m}: {modes[m]['share']:.1%} of samples; every present mode should be "
                f"above {t.min_mode_share:.0%}"
            )

    return {
        "total": total,
        "avg_assistant_words": avg,
        "short_share": short,
        "long_share": long_,
        "filler_share": filler,
        "modes": modes,
        "indicators": indicators,
        "warnings": warnings,
    }

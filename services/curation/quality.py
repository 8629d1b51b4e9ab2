"""Quality scores (0..10) and the heuristic used when a memory carries none."""

from __future__ import annotations

import math
import re

from services.curation.cleanup import count_words
from services.curation.config import Heuristic

_TOKEN = re.compile(r"\w+(?:'\w+)?")


def clamp(value: float, lo: float = 0.0, hi: float = 10.0) -> float:
    return max(lo, min(hi, value))


def lexical_variety(text: str, window: int) -> float:
    """Distinct words / words over the first ``window`` words (1.0 for no words)."""
    tokens = [t.lower() for t in _TOKEN.findall(text)][:window]
    return len(set(tokens)) / len(tokens) if tokens else 1.0


def heuristic_quality(
    prompt: str,
    response: str,
    *,
    filler: bool,
    synthetic_prompt: bool,
    params: Heuristic,
    continuation: bool = False,
) -> float:
    """The documented heuristic of ``etc/curation.json`` (``quality.heuristic``).

    A continuation (prose chunk) starts from ``continuation_base`` and is judged on
    lexical variety and filler only: its length and prompt are by design.
    """
    words = count_words(response)
    lo, hi = params.good_length_words
    if continuation:
        score = params.continuation_base
    else:
        score = params.base
        if lo <= words <= hi:
            score += params.good_length_bonus
        if words > params.long_words:
            score -= params.long_penalty
        if not synthetic_prompt and count_words(prompt) >= params.prompt_min_words:
            score += params.prompt_bonus
        if synthetic_prompt:
            score -= params.synthetic_prompt_penalty
    if words >= params.variety_min_words:
        variety = lexical_variety(response, params.variety_window)
        if variety >= params.variety_ratio:
            score += params.variety_bonus
        elif variety < params.repetitive_ratio:
            score -= params.repetitive_penalty
    if filler:
        score -= params.filler_penalty
    return round(clamp(score), 6)


def given_quality(
    quality_score: float | None, importance: float | None
) -> tuple[float, str, str | None] | None:
    """(quality, source, note) from the record's own score or importance, or None.

    ``source`` is "explicit" or "importance"; ``note`` says when a value was out of
    range and clamped. Non-numbers and NaN count as absent.
    """
    for value, source, scale, top in (
        (quality_score, "explicit", 1.0, 10.0),
        (importance, "importance", 10.0, 1.0),
    ):
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not math.isfinite(value):
            continue
        note = None
        if not 0 <= value <= top:
            name = "quality_score" if source == "explicit" else "importance"
            note = f"{name} {value} is outside 0..{top:g}; clamped"
        # Rounded so that 0.7 * 10 is 7.0, not 7.000000000000001.
        return round(clamp(value * scale), 6), source, note
    return None

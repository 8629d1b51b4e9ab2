"""Fact recall: does an answer carry the facts of the person's own answer?

A reference answer's **key terms** are its content words that are rare in general text
and absent from the question: names, places, dishes, instruments ("caldeirada",
"Gaivota", "cello"), the words that carry a fact. Rarity is a word's Zipf frequency in
general English (``wordfreq``: 7 is "the", 3 is once per million words); a word below
``max_zipf`` is rare. Words are compared case-folded, accents kept, a plural or
possessive ``s`` dropped, so "Sundays" in a reference matches "Sunday" in an answer.

The recall of one answer is the share of its reference's key terms it contains; a
reference without key terms (only common words) cannot be scored and is left out of the
mean, and reported as such.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from services.words import MIN_LENGTH, words

# Below this Zipf frequency a word is rare in general text: "estuary" 3.3, "cello" 3.3,
# "sailing" 4.0 are rare; "cook" 4.7, "fish" 4.9, "brother" 5.1 are not.
MAX_ZIPF = 4.2


@functools.lru_cache(maxsize=65536)
def zipf(word: str) -> float:
    """The word's Zipf frequency in general English (0.0 when unknown), the higher of the
    word and its plural (``normal`` drops plural s)."""
    from wordfreq import zipf_frequency

    return max(zipf_frequency(word, "en"), zipf_frequency(word + "s", "en"))


def key_terms(reference: str, question: str = "", *, max_zipf: float = MAX_ZIPF) -> list[str]:
    """The reference's rare content words not in the question, each once, in order."""
    asked = set(words(question))
    seen: set[str] = set()
    out: list[str] = []
    for w in words(reference):
        if len(w) < MIN_LENGTH or w in asked or w in seen:
            continue
        seen.add(w)
        if zipf(w) < max_zipf:
            out.append(w)
    return out


def recall(answer: str, terms: Sequence[str]) -> float | None:
    """The share of ``terms`` found among the answer's words; None without terms."""
    if not terms:
        return None
    said = set(words(answer))
    return sum(1 for t in terms if t in said) / len(terms)


@dataclass(frozen=True)
class RecallScore:
    """Mean recall over the answers that could be scored."""

    mean: float | None
    scored: int
    unscored: int  # references without key terms
    full: int  # answers holding every key term

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            "mean": self.mean,
            "scored": self.scored,
            "unscored": self.unscored,
            "full": self.full,
        }


def mean_recall(values: Sequence[float | None]) -> RecallScore:
    """The mean of the recalls that could be scored (see :func:`recall`)."""
    scored = [v for v in values if v is not None]
    return RecallScore(
        sum(scored) / len(scored) if scored else None,
        len(scored),
        len(values) - len(scored),
        sum(1 for v in scored if v >= 1.0),
    )

"""Words of a text as fact recall and memory neighbours compare them: case-folded, accents
kept, a plural or possessive ``s`` dropped (so "Sundays" matches "Sunday")."""

from __future__ import annotations

import re

MIN_LENGTH = 3  # shorter words are never key terms, and keep a final s
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")


def words(text: str) -> list[str]:
    """The words of ``text``, normalised (:func:`normal`), in order."""
    return [normal(w) for w in _WORD.findall(text)]


def normal(word: str) -> str:
    """Case-folded, without a possessive ('s) or a plural s (not "ss": "glass")."""
    w = word.casefold().replace("’", "'")
    if w.endswith("'s"):
        w = w[:-2]
    if len(w) > MIN_LENGTH and w.endswith("s") and not w.endswith("ss"):
        w = w[:-1]
    return w

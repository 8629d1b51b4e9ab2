"""Hygiene: does an answer stop where it should, in the mode's own tags, at a length like
the person's?

- **stopped**: generation ended at the mode's closing tag or the end-of-sequence token,
  not because it ran out of tokens (a model that does not stop runs on into invented
  turns);
- **stray tags**: any tag in the answer that is not one of its mode's two tags: another
  mode's (``<thought>`` in an emulation answer) or an invented one (``<assistant_2>``,
  ``</Assistant>``, ``<supporter>``). Tag-like text is ``<name>`` or ``</name>`` with a
  name of letters, digits, ``_`` or ``-``;
- **length ratio**: the answer's words over the person's typical answer length (the
  median words of their reference answers); 1.0 is the person's length.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

_TAGLIKE = re.compile(r"<\s*/?\s*([A-Za-z][\w-]*)\s*>")


def stray_tags(text: str, own: Sequence[str]) -> list[str]:
    """The tags in ``text`` other than ``own`` (exact, case-sensitive names), each once as
    written, in order of appearance."""
    allowed = set(own)
    out: list[str] = []
    for m in _TAGLIKE.finditer(text):
        if m.group(1) not in allowed and m.group(0) not in out:
            out.append(m.group(0))
    return out


def typical_length(references: Sequence[str]) -> float | None:
    """The median number of words of the person's reference answers."""
    counts = [len(r.split()) for r in references if r.strip()]
    return float(statistics.median(counts)) if counts else None


@dataclass(frozen=True)
class Hygiene:
    answers: int
    stopped: int
    with_stray_tags: int
    length_ratio: float | None  # median of answer words / typical length

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            "answers": self.answers,
            "stopped": self.stopped,
            "stopped_share": self.stopped / self.answers if self.answers else None,
            "with_stray_tags": self.with_stray_tags,
            "length_ratio": self.length_ratio,
        }


def hygiene(
    answers: Sequence[str],
    stopped: Sequence[bool],
    own_tags: Sequence[Sequence[str]],
    typical: float | None,
) -> Hygiene:
    """Hygiene of answers (the raw generated text), each with whether it stopped by itself
    and its mode's own tag names."""
    ratios = [len(a.split()) / typical for a in answers] if typical else []
    return Hygiene(
        len(answers),
        sum(1 for s in stopped if s),
        sum(1 for a, own in zip(answers, own_tags, strict=True) if stray_tags(a, own)),
        float(statistics.median(ratios)) if ratios else None,
    )

"""Cognitive modes: which mode a memory trains, and keeping modes apart (contamination)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache

from services.curation.config import MODES, CurationError, CurationRules
from services.curation.sample import Sample
from services.memories.model import Memory

# The default tags (docs/ARCHITECTURE.md), used when no rules are given.
DEFAULT_TAGS: dict[str, tuple[str, str]] = {
    "dual": ("thought", "world"),
    "emulation": ("user", "assistant"),
    "agent": ("instruction", "action"),
}


class ContaminationError(CurationError):
    """Samples carry tags of another mode; ``offenders`` maps sample id -> tags."""

    def __init__(self, offenders: Mapping[str, list[str]]):
        self.offenders = dict(offenders)
        listing = "; ".join(f"{sid}: {', '.join(tags)}" for sid, tags in self.offenders.items())
        super().__init__(
            f"{len(self.offenders)} sample(s) carry tags of another cognitive mode: {listing}"
        )


def assign_mode(memory: Memory, rules: CurationRules) -> tuple[str, list[str]]:
    """The mode of a memory, and notes on how it was chosen.

    Prose is always emulation (continuation). Otherwise ``metadata.cognitiveMode``
    wins when it names a mode; an invalid value is noted and the type mapping used;
    a type no mode lists gets ``default_mode``.
    """
    notes: list[str] = []
    raw = memory.metadata.get("cognitiveMode")
    override = raw.strip().lower() if isinstance(raw, str) else None
    if memory.format == "prose":
        if override and override != "emulation":
            notes.append(f"metadata.cognitiveMode {raw!r} ignored: prose trains emulation")
        return "emulation", notes
    if override in MODES:
        return override, notes
    if raw is not None:
        notes.append(
            f"metadata.cognitiveMode {raw!r} is not a mode ({', '.join(MODES)}); "
            "the type mapping was used"
        )
    mode = rules.mode_for_type(memory.type)
    if mode is None:
        notes.append(
            f"type {memory.type!r} is not mapped to a mode in etc/curation.json; "
            f"default mode {rules.default_mode} used"
        )
        mode = rules.default_mode
    return mode, notes


def mode_tags() -> dict[str, tuple[str, str]]:
    """Mode -> (prompt tag, response tag), from the shipped ``etc/curation.json`` (the
    default tags when that file cannot be read)."""
    from services.curation.config import CurationError, load_rules

    try:
        return _tag_table(load_rules())
    except CurationError:
        return dict(DEFAULT_TAGS)


def _tag_table(rules: CurationRules | None) -> dict[str, tuple[str, str]]:
    return {m: rules.tags(m) for m in MODES} if rules is not None else DEFAULT_TAGS


@lru_cache(maxsize=32)
def _tag_pattern(tags: tuple[str, ...]) -> re.Pattern[str]:
    alt = "|".join(re.escape(t) for t in tags)
    return re.compile(rf"<\s*/?\s*({alt})\s*>", re.IGNORECASE)


def find_contamination(sample: Sample, rules: CurationRules | None = None) -> list[str]:
    """The tags of other modes found in the sample's prompt, response or context.

    Each is reported once, as ``<tag>``, in mode order; an empty list means clean.
    """
    table = _tag_table(rules)
    foreign = tuple(t for mode in MODES if mode != sample.mode for t in table[mode])
    pattern = _tag_pattern(foreign)
    texts = [sample.prompt, sample.response, *(m.get("content", "") for m in sample.context)]
    found = {m.group(1).lower() for text in texts for m in pattern.finditer(text)}
    return [f"<{t}>" for t in foreign if t in found]


def contamination(
    samples: Iterable[Sample], rules: CurationRules | None = None
) -> dict[str, list[str]]:
    """Sample id -> the other modes' tags it carries, for every contaminated sample."""
    found = {s.memory_id: find_contamination(s, rules) for s in samples}
    return {sid: tags for sid, tags in found.items() if tags}


def validate_samples(samples: Iterable[Sample], rules: CurationRules | None = None) -> None:
    """Raise :class:`ContaminationError` naming every contaminated sample and its tags."""
    offenders = contamination(samples, rules)
    if offenders:
        raise ContaminationError(offenders)

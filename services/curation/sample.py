"""The training sample that curation makes of one memory."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Exclusion codes: the stable part of a reason, for counting (``excluded_code``).
EMPTY = "empty"
NO_RESPONSE = "no_response"
NO_PROMPT = "no_prompt"
ONLY_FILLER = "only_filler"
TOO_SHORT = "too_short"
LOW_QUALITY = "low_quality"

_WRAPPED = re.compile(r"\A<([A-Za-z][\w-]*)>(.*)</\1>\Z", re.DOTALL)


def wrap(tag: str, text: str) -> str:
    """``<tag>text</tag>``."""
    return f"<{tag}>{text}</{tag}>"


def unwrap(tagged: str) -> str:
    """The text inside one outer ``<tag>...</tag>``; the text itself when not wrapped."""
    m = _WRAPPED.match(tagged)
    return m.group(2) if m else tagged


@dataclass(frozen=True)
class Sample:
    """One memory as a training sample of one cognitive mode.

    ``prompt`` and ``response`` are wrapped in the mode's tags (``<user>...</user>``,
    ``<assistant>...</assistant>``); ``context`` holds earlier chat turns as messages,
    tagged the same way. ``weight`` is 0.0 and ``excluded`` says why (for a person)
    when the sample is not trained on; ``excluded_code`` is the stable kind of reason.
    ``notes`` records decisions worth knowing (an ignored cognitiveMode, a synthesised
    prompt, a clamped score).
    """

    memory_id: str
    mode: str  # dual | emulation | agent
    kind: str  # chat | continuation
    prompt: str
    response: str
    context: tuple[dict[str, str], ...]
    quality: float
    weight: float
    split: str  # train | eval
    excluded: str | None
    filler: bool
    assistant_words: int
    quality_source: str = "heuristic"  # explicit | importance | heuristic
    excluded_code: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def eligible(self) -> bool:
        return self.excluded is None

    @property
    def response_text(self) -> str:
        """The response without its mode tags (a prose chunk, for continuation)."""
        return unwrap(self.response)

    def messages(self) -> list[dict[str, str]]:
        """Context, then the prompt as the user turn and the response as the assistant's."""
        return [
            *(dict(m) for m in self.context),
            {"role": "user", "content": self.prompt},
            {"role": "assistant", "content": self.response},
        ]

    def to_record(self) -> dict[str, Any]:
        return {
            "memory_id": self.memory_id,
            "mode": self.mode,
            "kind": self.kind,
            "prompt": self.prompt,
            "response": self.response,
            "context": [dict(m) for m in self.context],
            "quality": self.quality,
            "quality_source": self.quality_source,
            "weight": self.weight,
            "split": self.split,
            "excluded": self.excluded,
            "excluded_code": self.excluded_code,
            "filler": self.filler,
            "assistant_words": self.assistant_words,
            "notes": list(self.notes),
        }

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> Sample:
        return cls(
            memory_id=d["memory_id"],
            mode=d["mode"],
            kind=d["kind"],
            prompt=d["prompt"],
            response=d["response"],
            context=tuple(dict(m) for m in d.get("context") or ()),
            quality=float(d["quality"]),
            weight=float(d["weight"]),
            split=d["split"],
            excluded=d.get("excluded"),
            filler=bool(d.get("filler", False)),
            assistant_words=int(d.get("assistant_words", 0)),
            quality_source=d.get("quality_source", "heuristic"),
            excluded_code=d.get("excluded_code"),
            notes=tuple(d.get("notes") or ()),
        )

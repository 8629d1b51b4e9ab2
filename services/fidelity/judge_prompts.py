"""What the fidelity judge is asked, and how its replies are read.

Two questions, each about one probe (the person, their memories, the question, their own
answer):

- **persona match**: how much one answer sounds like the person and knows what they
  know, ``{"score": 1..10}``;
- **pairwise**: which of two answers (A, B) is more like the person's own,
  ``{"better": "A" | "B" | "tie"}``.

Replies are read strictly: a JSON object (alone, in a code fence, or the first ``{...}``
in the text) with the expected key and a valid value, or a bare number for a score.
Anything else is unparsable (None), never guessed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from services.persona_prompt import clip

MAX_MEMORIES = 8  # memories shown to the judge per probe

SYSTEM = (
    "You are a careful judge of how well answers imitate one specific person. You are "
    "given what is known about the person, a question put to them and their own answer. "
    "Judge facts and voice (word choice, tone, length), not helpfulness. "
    "Reply with one JSON object and nothing else."
)

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)
_OBJECT = re.compile(r"\{[^{}]*\}", re.S)
_NUMBER = re.compile(r"^\s*(10|[1-9])(?:\s*/\s*10)?\s*\.?\s*$")


def persona(profile: str, memories: Sequence[str], question: str, reference: str) -> str:
    """The part both questions share: who the person is and how they answered."""
    shown = [f"- {clip(m)}" for m in list(memories)[:MAX_MEMORIES] if m.strip()]
    known = "\n".join(shown) if shown else "(no memories)"
    return (
        f"The person: {profile}\n"
        f"Some of their memories:\n{known}\n\n"
        f"The question put to them: {question}\n"
        f"Their own answer: {reference}\n"
    )


def match_prompt(context: str, answer: str) -> str:
    return (
        f"{context}\n"
        f"An answer to judge: {answer or '(empty)'}\n\n"
        "How well does this answer match the person, in what it says and in how it says "
        "it, compared with their own answer? Score from 1 (nothing like them) to 10 (it "
        'could be them). Reply as {"score": N}.'
    )


def pairwise_prompt(context: str, first: str, second: str) -> str:
    return (
        f"{context}\n"
        f"Answer A: {first or '(empty)'}\n"
        f"Answer B: {second or '(empty)'}\n\n"
        "Which answer is more like the person's own answer, in facts and in voice? "
        'Reply as {"better": "A"}, {"better": "B"} or {"better": "tie"}.'
    )


def _object(text: str) -> dict[str, Any] | None:
    """The JSON object of a reply, or None."""
    text = text.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    candidates = [text, *(m.group(0) for m in _OBJECT.finditer(text))]
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict):
            return value
    return None


def parse_score(text: str) -> int | None:
    """The score 1..10 of a persona-match reply; None when the reply holds none."""
    obj = _object(text)
    if obj is None:
        bare = _NUMBER.match(text)
        return int(bare.group(1)) if bare else None
    value = obj.get("score")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10:
        return None
    return value


def parse_preference(text: str) -> str | None:
    """``"A"``, ``"B"`` or ``"tie"`` of a pairwise reply; None when the reply holds none."""
    obj = _object(text)
    if obj is None:
        return None
    value = obj.get("better")
    if not isinstance(value, str):
        return None
    value = value.strip().strip(".").lower()
    if value in ("a", "answer a"):
        return "A"
    if value in ("b", "answer b"):
        return "B"
    if value in ("tie", "equal", "neither", "both"):
        return "tie"
    return None

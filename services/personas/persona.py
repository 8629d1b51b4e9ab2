"""A persona written from facts: memories in several formats and held-out probes.

Each fact becomes one emulation memory per question and phrasing (the person's voice: an
opener and a closer around the fact), plus reflections (dual) and errands run through a
tool (agent). Probes are paraphrased questions that appear in no memory, each with the
answer the person would give, in their voice (what style is compared with), and the
facts it holds (what fact recall looks for).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

PHRASINGS = (
    "{opener}{fact}{closer}",
    "{opener}since you ask: {fact_lc}{closer}",
    "{fact}. That is the short of it{closer}",
)


TELLINGS = 2  # each question is asked twice, answered in two phrasings
LEADS = ("Tell me again: ", "Quick question. ", "Out of curiosity, ", "For my notes: ")


@dataclass(frozen=True)
class Fact:
    topic: str
    questions: tuple[str, ...]
    answer: str  # one sentence, no final full stop


@dataclass(frozen=True)
class Probe:
    question: str
    reference: str  # the person's answer, in their voice
    facts: str = ""  # the words that carry the facts; "" = the whole reference

    def to_dict(self) -> dict[str, str]:
        out = {"question": self.question, "reference": self.reference}
        if self.facts:
            out["facts"] = self.facts
        return out


@dataclass(frozen=True)
class Persona:
    name: str
    facts: list[Fact]
    probes: list[Probe]
    opener: str
    closer: str
    thoughts: tuple[str, ...]
    errands: tuple[tuple[str, str], ...]


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[:1].isupper() and not text.startswith("I ") else text


def write_memories(persona: Persona, memory_dir: Path) -> int:
    """Write the persona's memory files under ``memory_dir``; returns the memory count."""
    memory_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, fact in enumerate(persona.facts):
        for j, question in enumerate(fact.questions):
            for k in range(TELLINGS):
                template = PHRASINGS[(i + j + k) % len(PHRASINGS)]
                answer = template.format(
                    opener=persona.opener,
                    closer=persona.closer,
                    fact=fact.answer,
                    fact_lc=_lower_first(fact.answer),
                )
                rows.append(
                    {
                        "prompt": question
                        if k == 0
                        else f"{LEADS[(i + j) % len(LEADS)]}{question}",
                        "completion": answer,
                        "quality_score": 9,
                        "metadata": {"topic": fact.topic},
                    }
                )
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    (memory_dir / "conversations.jsonl").write_text(text, encoding="utf-8")
    events = memory_dir / "episodic"
    events.mkdir(exist_ok=True)
    count = len(rows)
    for i, thought in enumerate(persona.thoughts * 3):
        _write_event(
            events,
            f"evt-{persona.name}-thought-{i:03d}",
            ("reflection", "inner_dialogue", "dream")[i % 3],
            f"{thought}.",
            f"{persona.opener}sleep on it and look again in daylight{persona.closer}",
        )
        count += 1
    for i, (item, day) in enumerate(persona.errands):
        _write_event(
            events,
            f"evt-{persona.name}-errand-{i:03d}",
            "tool_use",
            f"Add {item} to my shopping list for {day}",
            f"Added {item} for {day}.",
            metadata={
                "toolName": "shopping_list.add",
                "toolInputs": {"item": item, "day": day},
                "toolOutputs": {"ok": True},
            },
        )
        count += 1
    return count


def _write_event(
    folder: Path,
    event_id: str,
    kind: str,
    content: str,
    response: str,
    metadata: dict[str, object] | None = None,
) -> None:
    n = int(event_id.rsplit("-", 1)[1])
    event: dict[str, object] = {
        "id": event_id,
        "timestamp": f"2026-10-{n % 28 + 1:02d}T08:{n % 60:02d}:00Z",
        "type": kind,
        "content": content,
        "response": response,
        "importance": 0.85,
    }
    if metadata:
        event["metadata"] = metadata
    (folder / f"{event_id}.json").write_text(json.dumps(event, indent=2), encoding="utf-8")

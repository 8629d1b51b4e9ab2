"""A small, deterministic persona for `personad demo`: Maren, a marine biologist in
Lisbon who sails, cooks and plays the cello. Written in several memory formats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PROFILE = "maren"
WHEN = ("morning", "evening", "late night", "on the boat")

TOPICS = [
    (
        "sailing",
        "Where do you go sailing?",
        "Mostly on the Tagus estuary, out past Belém when the north wind, the nortada, is steady. "
        "I keep a small wooden sloop called Gaivota at the Doca de Alcântara.",
    ),
    (
        "work",
        "What do you study?",
        "I study seagrass meadows along the Arrábida coast, counting shoots and measuring how much "
        "carbon the roots keep in the sand. Fieldwork days start at the low tide.",
    ),
    (
        "cooking",
        "What do you like to cook?",
        "Caldeirada on Sundays, with whatever the fishmonger at Mercado de Arroios says is best, "
        "plenty of onion, tomato and a splash of white wine from the Setúbal peninsula.",
    ),
    (
        "music",
        "What instrument do you play?",
        "The cello. I started at nine in Porto, and now I play Bach suites in the evening to slow "
        "my head down after a long day on the boat.",
    ),
    (
        "mornings",
        "How do your mornings look?",
        "Coffee at the kiosk by the Jardim da Estrela, a look at the tide tables, then a bicycle "
        "ride down the hill to the institute before the traffic wakes up.",
    ),
    (
        "books",
        "What are you reading?",
        "The Log from the Sea of Cortez again. Steinbeck and Ricketts make fieldwork sound like "
        "the adventure it is, and I underline something new every time.",
    ),
    (
        "family",
        "Tell me about your family.",
        "My brother Tiago fixes boat engines in Peniche, and my mother still lives in Porto and "
        "sends me jars of quince jam every autumn.",
    ),
    (
        "weekends",
        "What do you do at weekends?",
        "If the swell is small I sail; if it is big I walk the cliffs at Cabo Espichel and count "
        "gannets. Sunday evening is always cello and caldeirada.",
    ),
]
ANGLES = [
    ("", ""),
    ("Quickly, ", " In short: that is what keeps me happy."),
    ("Honestly, ", " I would not trade it for anything."),
    ("Tell me more. ", " There is always another story behind it."),
    ("Again: ", " Ask me on a windy day and I will say the same."),
    ("For a stranger: ", " Most people are surprised by that."),
    ("In one breath: ", " That is me, more or less."),
    ("Over dinner: ", " I could talk about it all night."),
    ("On a grey day: ", " Even then it cheers me up."),
    ("Years from now: ", " I hope it will still be true."),
    ("To a student: ", " Go and see it for yourself."),
    ("To my brother: ", " He would roll his eyes and agree."),
    ("After a long week: ", " It is how I reset."),
    ("If I had to choose: ", " I would choose it again."),
    ("Without thinking: ", " It is the first thing that comes to mind."),
]
THOUGHTS = [
    "I wonder whether the seagrass at Portinho will recover after the storm",
    "I keep thinking the cello sounds better when the windows are open to the river",
    "Maybe I should teach Tiago to sail properly this summer",
    "The data from the last transect looks too good, and that worries me",
    "I dreamt the Gaivota sailed itself up the river to Vila Franca",
    "I should write to my mother more often than the jam arrives",
]


def write_persona(memory_dir: Path) -> int:
    """Write the persona's memory files; returns how many memories they hold."""
    memory_dir.mkdir(parents=True, exist_ok=True)
    count = 0
    # prompt/completion records with explicit quality (emulation)
    lines = []
    for i, (topic, question, answer) in enumerate(TOPICS):
        for j, (lead, tail) in enumerate(ANGLES):
            lines.append(
                {
                    "prompt": f"{lead}{question}",
                    "completion": f"{answer}{tail}",
                    "quality_score": 9 if (i + j) % 3 else 8,
                    "metadata": {"topic": topic},
                }
            )
    (memory_dir / "conversations.jsonl").write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in lines) + "\n"
    )
    count += len(lines)
    # MetaHuman episodic events: reflections and dreams (dual)
    episodic = memory_dir / "episodic" / "2026" / "11"
    episodic.mkdir(parents=True, exist_ok=True)
    for i, thought in enumerate(THOUGHTS * 4):
        event: dict[str, Any] = {
            "id": f"evt-2026110{i % 9 + 1}0800{i:04d}",
            "timestamp": f"2026-11-0{i % 9 + 1}T08:{i % 60:02d}:00Z",
            "type": ("reflection", "inner_dialogue", "dream")[i % 3],
            "content": f"{thought} ({WHEN[i // 6]}).",
            "response": "Write it down, look again tomorrow, and trust the long record over "
            "one strange day.",
            "importance": 0.85,
            "tags": ["reflection"],
        }
        (episodic / f"{event['id']}.json").write_text(json.dumps(event, indent=2))
        count += 1
    # tool use events (agent)
    for i, (item, when) in enumerate(
        [
            ("sail tape", "Friday"),
            ("rosin", "Monday"),
            ("onions", "Sunday"),
            ("tide tables", "Thursday"),
            ("bike light", "Tuesday"),
            ("quince jam jars", "Saturday"),
        ]
    ):
        event = {
            "id": f"evt-2026111{i}0900{i:04d}",
            "timestamp": f"2026-11-1{i}T09:00:00Z",
            "type": "tool_use",
            "content": f"Add {item} to my shopping list for {when}",
            "response": f"Added {item} for {when}.",
            "importance": 0.8,
            "metadata": {
                "toolName": "shopping_list.add",
                "toolInputs": {"item": item, "day": when},
                "toolOutputs": {"ok": True},
            },
        }
        (episodic / f"{event['id']}.json").write_text(json.dumps(event, indent=2))
        count += 1
    # Q&A text
    qa = [
        (f"What is the name of your boat, {who}?", f"Gaivota, {who}. It means seagull.")
        for who in ("friend", "neighbour", "colleague", "student")
    ]
    (memory_dir / "boat-qa.txt").write_text(
        "\n\n".join(f"Q: {q}\nA: {a} She is a 1968 wooden sloop." for q, a in qa) + "\n"
    )
    count += len(qa)
    return count

"""Memories shaped like the real inputs, built directly (no parser), for curation tests."""

from __future__ import annotations

import json
from typing import Any

from services.memories.model import Memory, content_id
from tests.paths import FIXTURES

METAHUMAN = FIXTURES / "metahuman"


def metahuman(event: dict[str, Any]) -> Memory:
    """A MetaHuman episodic event as the parser maps it (content -> prompt)."""
    content = event["content"]
    if isinstance(content, dict):  # the evt_abc123 edge case
        prompt, response = content["userMessage"], content["assistantMessage"]
    else:
        prompt, response = content, event.get("response")
    return Memory(
        id=content_id({"format": "metahuman", **event}),
        format="metahuman",
        type=event.get("type", "observation"),
        prompt=prompt,
        response=response,
        timestamp=event.get("timestamp"),
        importance=event.get("importance"),
        tags=tuple(event.get("tags", ())),
        entities=tuple(event.get("entities", ())),
        metadata=dict(event.get("metadata", {})),
    )


def metahuman_fixture(name: str, **changes: Any) -> Memory:
    event = json.loads((METAHUMAN / name).read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is None:
            event.pop(key, None)
        else:
            event[key] = value
    return metahuman(event)


def prompt_completion(
    prompt: str, completion: str, quality_score: float | None = None, **metadata: Any
) -> Memory:
    rec: dict[str, Any] = {"prompt": prompt, "completion": completion}
    if quality_score is not None:
        rec["quality_score"] = quality_score
    if metadata:
        rec["metadata"] = metadata
    return Memory(
        id=content_id({"format": "prompt_completion", **rec}),
        format="prompt_completion",
        type="conversation",
        prompt=prompt,
        response=completion,
        quality_score=quality_score,
        metadata=dict(metadata),
    )


def alpaca(instruction: str, input_: str, output: str) -> Memory:
    rec = {"instruction": instruction, "input": input_, "output": output}
    prompt = f"{instruction}\n\n{input_}" if input_ else instruction
    return Memory(
        id=content_id({"format": "alpaca", **rec}),
        format="alpaca",
        type="task",
        prompt=prompt,
        response=output,
    )


def chat(messages: list[dict[str, str]], quality_score: float | None = None) -> Memory:
    """The memory of the last assistant turn, with the earlier turns as context."""
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    return Memory(
        id=content_id({"format": "chat", "messages": messages}),
        format="chat",
        type="chat",
        prompt=messages[last_user]["content"],
        response=messages[-1]["content"],
        quality_score=quality_score,
        context=tuple(dict(m) for m in messages[:last_user]),
        locator=f"message {len(messages)}",
    )


def qa(question: str, answer: str) -> Memory:
    return Memory(
        id=content_id({"format": "qa", "q": question, "a": answer}),
        format="qa",
        type="conversation",
        prompt=question,
        response=answer,
    )


def prose(chunk: str, title: str, part: int, parts: int, importance: float | None = None) -> Memory:
    return Memory(
        id=content_id({"format": "prose", "title": title, "chunk": part, "text": chunk}),
        format="prose",
        type="prose",
        prompt=title,
        response=chunk,
        importance=importance,
        metadata={"title": title, "chunk": part, "chunks": parts},
        locator=f"chunk {part}",
    )

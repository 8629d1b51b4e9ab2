"""Chat conversations: ``{"messages": [{"role", "content"}, ...]}``.

One memory per assistant turn (format and type ``chat``): its prompt is the latest user
turn before it, and its context every message before that user turn (system included),
oldest first, so that context + prompt + response replays the conversation. A long
conversation's context is capped so that a file's memories grow linearly with its size:
a leading system message, then the latest messages, at most ``MAX_CONTEXT_MESSAGES`` and
``MAX_CONTEXT_CHARS`` characters in all (a system message over that budget is left out).
Assistant
turns with empty content (e.g. pure tool calls) are skipped. A message's content may be
a string, null, or a list of parts whose ``text`` items are joined.
"""

from __future__ import annotations

from typing import Any

from .errors import RecordError
from .fields import (
    describe,
    get_metadata,
    get_number,
    get_timestamp,
    normalise_text,
    record_memory,
)
from .model import Memory, Problem

MAX_CONTEXT_MESSAGES = 32
MAX_CONTEXT_CHARS = 16_000


def _context(messages: list[dict[str, str]], end: int) -> list[dict[str, str]]:
    """The context of a prompt at ``end``: the messages before it, within the caps."""
    lead = messages[:1] if end > 0 and messages[0]["role"] == "system" else []
    chars = sum(len(m["content"]) for m in lead)
    if chars > MAX_CONTEXT_CHARS:
        lead, chars = [], 0
    recent: list[dict[str, str]] = []
    for message in reversed(messages[len(lead) : end]):
        if len(lead) + len(recent) >= MAX_CONTEXT_MESSAGES:
            break
        chars += len(message["content"])
        if chars > MAX_CONTEXT_CHARS:
            break
        recent.append(message)
    return lead + recent[::-1]


def _content(message: dict[str, Any], number: int) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return normalise_text(content)
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif not (isinstance(part, dict) and isinstance(part.get("type"), str)):
                raise RecordError(
                    f"message {number}: a content part must be a string or an object with "
                    f"text, got {describe(part)}"
                )
        return normalise_text("".join(texts))
    raise RecordError(f"message {number}: content must be a string, got {describe(content)}")


def _messages(obj: dict[str, Any]) -> list[dict[str, str]]:
    raw = obj["messages"]
    if not isinstance(raw, list):
        raise RecordError(f"messages must be an array of {{role, content}}, got {describe(raw)}")
    messages = []
    for number, message in enumerate(raw, 1):
        if not isinstance(message, dict):
            raise RecordError(
                f"message {number} must be an object with role and content, got {describe(message)}"
            )
        role = message.get("role")
        if not isinstance(role, str) or not role.strip():
            raise RecordError(
                f"message {number}: role must be a string such as user or assistant, "
                f"got {describe(role)}"
            )
        messages.append({"role": role.strip().lower(), "content": _content(message, number)})
    return messages


def parse_chat(obj: dict[str, Any], locator: str) -> list[Memory | Problem]:
    """The memories of one conversation; problems of single turns come back beside them.

    Raises :class:`RecordError` when the conversation as a whole is malformed.
    """
    # Conversation-wide fields: one problem for the conversation, not one per turn.
    get_number(obj, "quality_score", 0, 10)
    get_metadata(obj)
    get_timestamp(obj)
    messages = _messages(obj)
    out: list[Memory | Problem] = []
    last_user: int | None = None
    assistant_turns = 0
    for index, message in enumerate(messages):
        if message["role"] == "user":
            last_user = index
            continue
        if message["role"] != "assistant":
            continue
        assistant_turns += 1
        if not message["content"].strip():
            continue
        where = f"message {index + 1}"
        turn_locator = f"{locator}, {where}" if locator else where
        if last_user is None:
            out.append(
                Problem(
                    f"{turn_locator}: assistant turn has no user turn before it; skipped",
                    turn_locator,
                )
            )
            continue
        try:
            out.append(
                record_memory(
                    format="chat",
                    type="chat",
                    prompt=messages[last_user]["content"],
                    response=message["content"],
                    obj=obj,
                    locator=turn_locator,
                    context=_context(messages, last_user),
                )
            )
        except RecordError as exc:
            out.append(Problem(f"{turn_locator}: {exc}", turn_locator))
    if assistant_turns == 0:
        raise RecordError("the conversation has no assistant turn; there is nothing to learn from")
    return out

"""``curate``: one memory -> one training sample (pure; no I/O)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from services.curation import sample as S
from services.curation.cleanup import count_words, remove_filler
from services.curation.config import CurationRules, normalize_type
from services.curation.modes import assign_mode
from services.curation.quality import given_quality, heuristic_quality
from services.curation.sample import Sample, wrap
from services.curation.split import assign_split
from services.memories.model import Memory

_CHUNK_LOCATOR = re.compile(r"\bchunk\s+(\d+)\b", re.IGNORECASE)


def _tool_action(memory: Memory) -> str | None:
    """The JSON action of a tool event: {"tool", "inputs", "outputs", "success"}."""
    md = memory.metadata
    name = md.get("toolName")
    if not isinstance(name, str) or not name.strip():
        return None
    action: dict[str, Any] = {"tool": name.strip()}
    for key, out in (("toolInputs", "inputs"), ("toolOutputs", "outputs"), ("success", "success")):
        if key in md:
            action[out] = md[key]
    return json.dumps(action, ensure_ascii=False, default=str)


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _continuation_prompt(memory: Memory, rules: CurationRules) -> str:
    """ "Continue writing in my voice: <title> (part i of n)", from the prose parser's
    ``metadata`` (title, chunk, chunks; the ``chunk N`` locator for the part)."""
    md = memory.metadata
    title = md.get("title")
    if not isinstance(title, str) or not title.strip():
        # With the chunk in ``response``, a short one-line ``prompt`` is the title.
        p = memory.prompt.strip()
        title = p if memory.response and p and "\n" not in p and len(p) <= 120 else "untitled"
    text = rules.continuation_prompt.format(title=title.strip())
    part = _positive_int(md.get("chunk"))
    if part is None:
        m = _CHUNK_LOCATOR.search(memory.locator)
        part = int(m.group(1)) if m else None
    parts = _positive_int(md.get("chunks"))
    if part is not None and parts is not None:
        text += rules.continuation_part.format(part=part, parts=parts)
    return text


def _context(memory: Memory, tags: tuple[str, str]) -> tuple[tuple[dict[str, str], ...], list[str]]:
    """Earlier chat turns as user/assistant messages in the mode's tags; other roles dropped."""
    out = []
    dropped: dict[str, int] = {}
    for m in memory.context:
        role = str(m.get("role", "")).strip().lower()
        content = str(m.get("content", "")).strip()
        if role == "user":
            out.append({"role": "user", "content": wrap(tags[0], content)})
        elif role == "assistant":
            out.append({"role": "assistant", "content": wrap(tags[1], content)})
        else:
            dropped[role or "<none>"] = dropped.get(role or "<none>", 0) + 1
    notes = [f"{n} context message(s) with role {r!r} dropped" for r, n in sorted(dropped.items())]
    return tuple(out), notes


# Why a sample is excluded: (code, reason for a person).
Exclusion = tuple[str, str]


@dataclass
class _Pair:
    """The untagged prompt, the raw response (None: none), the chat context, whether the
    prompt was made up for a response-only memory, and an exclusion found on the way."""

    prompt: str
    raw: str | None
    context: tuple[dict[str, str], ...] = ()
    synthetic: bool = False
    excluded: Exclusion | None = None


def _raw_response(memory: Memory) -> str | None:
    return memory.response if memory.response and memory.response.strip() else None


def _chat_pair(
    memory: Memory,
    rules: CurationRules,
    tags: tuple[str, str],
    tool: str | None,
    notes: list[str],
) -> _Pair:
    """The pair of a chat memory; a memory with only content becomes the response to its
    type's prompt (``no_response_prompts``) or is excluded."""
    pair = _Pair(prompt=(memory.prompt or "").strip(), raw=_raw_response(memory))
    pair.context, context_notes = _context(memory, tags)
    notes.extend(context_notes)
    mtype = normalize_type(memory.type or "")
    if pair.raw is None and tool is None:
        if not pair.prompt:
            pair.excluded = (S.EMPTY, "the memory has no content and no response")
        elif mtype in rules.no_response_prompts:
            # The person's own words (an observation, a journal entry) are what the
            # model should learn to write: they become the response to a prompt.
            pair.raw, pair.prompt = pair.prompt, rules.no_response_prompts[mtype]
            pair.synthetic = True
            notes.append(
                f"no response: the content is the response to the {mtype} prompt "
                "of etc/curation.json"
            )
        else:
            pair.excluded = (
                S.NO_RESPONSE,
                f"no response: a {memory.type or 'untyped'} memory with only content "
                "is not a training pair; add a response, or list its type under "
                "no_response_prompts in etc/curation.json",
            )
    elif not pair.prompt:
        pair.excluded = (S.NO_PROMPT, "the prompt is empty: the response answers nothing")
    return pair


def _response_text(raw: str | None, tool: str | None, rules: CurationRules) -> tuple[str, bool]:
    """The cleaned response (filler removed, a tool event's action appended) and whether
    filler was found."""
    text, filler = ("", False)
    if raw is not None:
        text, filler = remove_filler(raw, rules.filler.phrases, rules.filler.sentences)
    if tool is not None:
        text = f"{text}\n{tool}" if text else tool
    return text, filler


def _length_exclusion(
    text: str, filler: bool, words: int, rules: CurationRules
) -> Exclusion | None:
    if not text and filler:
        return (S.ONLY_FILLER, "the response is only filler; nothing is left to train on")
    if not text:
        return (S.EMPTY, "the memory has no content and no response")
    if words < rules.min_response_words:
        return (
            S.TOO_SHORT,
            f"response has {words} word{'s' if words != 1 else ''}; "
            f"at least {rules.min_response_words} needed",
        )
    return None


def _quality(
    memory: Memory,
    rules: CurationRules,
    pair: _Pair,
    text: str,
    filler: bool,
    notes: list[str],
) -> tuple[float, str]:
    """The quality and its source: the memory's own score, else the heuristic."""
    given = given_quality(memory.quality_score, memory.importance)
    if given is not None:
        quality, source, note = given
        if note:
            notes.append(note)
        return quality, source
    quality = heuristic_quality(
        pair.prompt,
        text,
        filler=filler,
        synthetic_prompt=pair.synthetic,
        params=rules.quality.heuristic,
        continuation=memory.format == "prose",
    )
    return quality, "heuristic"


def _low_quality(quality: float, source: str, rules: CurationRules) -> Exclusion:
    return (
        S.LOW_QUALITY,
        f"quality {quality:g} ({source}) is below the minimum "
        f"{rules.quality.min_quality:g}; raise the memory's quality_score or importance, "
        "or lower quality.min_quality in etc/curation.json",
    )


def curate(memory: Memory, rules: CurationRules) -> Sample:
    """The training sample of one memory: mode, tagged pair, cleaned response, quality,
    weight, split, and why it is excluded when it is (see the package docstring)."""
    mode, notes = assign_mode(memory, rules)
    tags = rules.tags(mode)
    prose = memory.format == "prose"
    tool = None if prose else _tool_action(memory)
    if prose:
        pair = _Pair(prompt=_continuation_prompt(memory, rules), raw=_raw_response(memory))
    else:
        pair = _chat_pair(memory, rules, tags, tool, notes)
    text, filler = _response_text(pair.raw, tool, rules)
    words = count_words(text)
    excluded = pair.excluded
    if excluded is None:
        excluded = _length_exclusion(text, filler, words, rules)
    quality, source = _quality(memory, rules, pair, text, filler, notes)
    weight = rules.weight_for(quality)
    if excluded is None and weight == 0.0:
        excluded = _low_quality(quality, source, rules)
    return Sample(
        memory_id=memory.id,
        mode=mode,
        kind="continuation" if prose else "chat",
        prompt=wrap(tags[0], pair.prompt),
        response=wrap(tags[1], text),
        context=pair.context,
        quality=quality,
        weight=0.0 if excluded else weight,
        split=assign_split(memory.id, rules.eval_share),
        excluded=excluded[1] if excluded else None,
        filler=filler,
        assistant_words=words,
        quality_source=source,
        excluded_code=excluded[0] if excluded else None,
        notes=tuple(notes),
    )

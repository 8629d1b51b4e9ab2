"""Plain text: Q&A blocks and prose.

Q&A (``.txt`` with ``Q:`` / ``A:`` lines): a line starting ``Q:`` opens a question, which
runs until a line starting ``A:``; the answer runs until the next ``Q:``. Each pair is one
memory (format ``qa``, type ``conversation``). Text before the first ``Q:`` (a title, an
introduction) is not part of any pair and is ignored.

Prose (``.md``, and ``.txt`` without Q/A blocks): cut into chunks for style
(continuation) training, each one memory (format and type ``prose``, empty prompt, the
chunk as response). Tokens are *estimated* as words * 4 / 3 (words split on whitespace:
English averages about 0.75 words per token), so 700-2000 tokens is 525-1500 words.
Chunks end on paragraph boundaries (blank lines); only a paragraph too long to fit is cut,
at sentence ends, then line ends, then between words. A text of up to ``GOAL_TOKENS`` is
one chunk. Every chunk is a verbatim slice of the text and the chunks follow each other,
so only the blank space between chunks is left out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePath

from .errors import RecordError
from .fields import record_memory
from .model import Memory, Problem

_Q = re.compile(r"^[ \t]*Q[ \t]*:[ \t]?(.*)$")
_A = re.compile(r"^[ \t]*A[ \t]*:[ \t]?(.*)$")


def is_qa(text: str) -> bool:
    """Whether the text has at least one ``Q:`` line followed later by an ``A:`` line."""
    seen_q = False
    for line in text.split("\n"):
        if _Q.match(line):
            seen_q = True
        elif seen_q and _A.match(line):
            return True
    return False


@dataclass
class _OpenPair:
    """The open pair: the line of its Q:, the question lines, the answer lines (None
    until its A:), and a problem that spoils it."""

    q_line: int
    question: list[str]
    answer: list[str] | None = None
    spoiled: str | None = None

    def take_answer(self, number: int, first: str) -> None:
        """An A: line: the pair's answer starts, or, for a second one, the pair is spoiled."""
        if self.answer is None:
            self.answer = [first]
        elif not self.spoiled:
            self.spoiled = (
                f"a second A: (line {number}) for the same question; merge the answers "
                "or add a Q: between them"
            )

    def take_line(self, line: str) -> None:
        """Any other line continues the answer, or the question before its A:."""
        if self.answer is not None:
            self.answer.append(line)
        else:
            self.question.append(line)

    def close(self) -> Memory | Problem:
        """The pair's memory, or the problem that keeps it out."""
        locator = f"line {self.q_line}"
        if self.spoiled:
            return Problem(f"{locator}: {self.spoiled}", locator)
        if self.answer is None:
            return Problem(
                f"{locator}: the question has no answer (no A: line after it); "
                "add an A: line or remove the question",
                locator,
            )
        prompt, response = "\n".join(self.question).strip(), "\n".join(self.answer).strip()
        if not prompt or not response:
            empty = "question" if not prompt else "answer"
            return Problem(
                f"{locator}: the {empty} is empty; fill it in or remove the pair", locator
            )
        try:
            return record_memory(
                format="qa",
                type="conversation",
                prompt=prompt,
                response=response,
                obj={},
                locator=locator,
            )
        except RecordError as exc:
            return Problem(f"{locator}: {exc}", locator)


def _answer_without_question(number: int) -> Problem:
    return Problem(
        f"line {number}: an A: answer without a Q: question before it; "
        "add the question or remove the answer",
        f"line {number}",
    )


def parse_qa(text: str) -> list[Memory | Problem]:
    out: list[Memory | Problem] = []
    pair: _OpenPair | None = None
    for number, line in enumerate(text.split("\n"), 1):
        if m := _Q.match(line):
            if pair is not None:
                out.append(pair.close())
            pair = _OpenPair(number, [m.group(1)])
        elif m := _A.match(line):
            if pair is None:
                out.append(_answer_without_question(number))
            else:
                pair.take_answer(number, m.group(1))
        elif pair is not None:
            pair.take_line(line)
    if pair is not None:
        out.append(pair.close())
    return out


# ---- prose ---------------------------------------------------------------------------

MIN_TOKENS = 700
MAX_TOKENS = 2000
# Texts up to this many tokens are one chunk; longer ones are cut into
# ceil(tokens / GOAL_TOKENS) chunks of about equal size.
GOAL_TOKENS = 1800
# Pieces the packer works with are at most this many tokens, so that a chunk lands within
# UNIT_TOKENS / 2 of its target: with GOAL 1800 and UNIT 400 every chunk of a long
# enough text is within 700..2000.
UNIT_TOKENS = 400

# The closing hashes are stripped in title_of, not matched here: a lazy group before
# them backtracks quadratically on a long line of blanks.
_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+(.+)$", re.MULTILINE)
_SEPARATORS = (
    re.compile(r"\n[ \t]*\n\s*"),  # paragraphs
    re.compile(r"(?<=[.!?])\s+"),  # sentences
    re.compile(r"\n\s*"),  # lines
)
_WORD = re.compile(r"\S+")


def estimate_tokens(text: str) -> float:
    """Estimated tokens: words (whitespace-separated) * 4 / 3."""
    return len(text.split()) * 4 / 3


@dataclass(frozen=True)
class _Unit:
    start: int
    end: int
    words: int


def _trimmed(text: str, start: int, end: int) -> Iterator[_Unit]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if start < end:
        yield _Unit(start, end, len(text[start:end].split()))


def _split(text: str, start: int, end: int, level: int) -> Iterator[_Unit]:
    """Pieces of ``text[start:end]`` at separator ``level`` and finer, each at most
    UNIT_TOKENS, neighbours merged while they fit."""
    if level == len(_SEPARATORS):
        pieces = [_Unit(m.start(), m.end(), 1) for m in _WORD.finditer(text, start, end)]
    else:
        pieces = []
        pos = start
        for m in _SEPARATORS[level].finditer(text, start, end):
            pieces.extend(_trimmed(text, pos, m.start()))
            pos = m.end()
        pieces.extend(_trimmed(text, pos, end))
    max_words = UNIT_TOKENS * 3 // 4
    merged: _Unit | None = None
    for piece in pieces:
        if piece.words > max_words:
            if merged:
                yield merged
                merged = None
            yield from _split(text, piece.start, piece.end, level + 1)
        elif merged and merged.words + piece.words <= max_words and level > 0:
            merged = _Unit(merged.start, piece.end, merged.words + piece.words)
        else:
            if merged:
                yield merged
            merged = piece
    if merged:
        yield merged


def chunk_spans(text: str) -> list[tuple[int, int]]:
    """The (start, end) offsets of the prose chunks of ``text``."""
    units = list(_split(text, 0, len(text), 0))
    spans = []
    i = 0
    remaining = sum(u.words for u in units) * 4 / 3
    while i < len(units):
        count = max(1, math.ceil(remaining / GOAL_TOKENS))
        if count == 1:
            spans.append((units[i].start, units[-1].end))
            break
        target = remaining / count
        tokens = 0.0
        j = i
        while j < len(units):
            unit_tokens = units[j].words * 4 / 3
            # Take the next unit while that brings the chunk nearer its target.
            if tokens and (tokens + unit_tokens / 2 > target or tokens + unit_tokens > MAX_TOKENS):
                break
            tokens += unit_tokens
            j += 1
        spans.append((units[i].start, units[j - 1].end))
        remaining -= tokens
        i = j
    return spans


def title_of(text: str, name: str) -> str:
    """The first Markdown heading, else the file's stem."""
    m = _HEADING.search(text)
    if m is None:
        return PurePath(name).stem
    rest = m.group(1)
    return (rest.rstrip(" \t#") or rest[0]).strip()


def parse_prose(text: str, name: str) -> list[Memory | Problem]:
    spans = chunk_spans(text)
    title = title_of(text, name)
    out: list[Memory | Problem] = []
    for number, (start, end) in enumerate(spans, 1):
        locator = f"chunk {number}"
        try:
            out.append(
                record_memory(
                    format="prose",
                    type="prose",
                    prompt="",
                    response=text[start:end],
                    obj={},
                    locator=locator,
                    extra_metadata={"title": title, "chunk": number, "chunks": len(spans)},
                )
            )
        except RecordError as exc:
            out.append(Problem(f"{locator}: {exc}", locator))
    return out

"""Prose chunking: bounds, paragraph boundaries, nothing lost."""

from __future__ import annotations

import itertools
import random

import pytest

from services.memories import estimate_tokens, parse_bytes
from services.memories.text import MAX_TOKENS, MIN_TOKENS, chunk_spans

SOURCE = (
    "the morning light came slowly over the hills and I walked down to the river where my "
    "grandfather used to fish every summer before the war changed everything"
)
WORDS = SOURCE.split()


def sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(5, 25))]
    return " ".join(words).capitalize() + rng.choice([".", ".", "!", "?"])


def paragraph(rng: random.Random, sentences: int) -> str:
    return " ".join(sentence(rng) for _ in range(sentences))


def long_text(seed: int, paragraphs: int = 60) -> str:
    rng = random.Random(seed)
    parts = ["# Letters from the river"]
    for i in range(paragraphs):
        if i == 17:
            parts.append(paragraph(rng, 160))  # one huge paragraph, ~2400 words
        elif i == 40:
            parts.append(" ".join(rng.choice(WORDS) for _ in range(2500)))  # no punctuation
        else:
            parts.append(paragraph(rng, rng.randint(1, 12)))
    return ("\n\n" + "\n" * rng.randint(0, 2)).join(parts) + "\n"


@pytest.mark.parametrize("seed", range(5))
def test_long_text_chunks_are_within_bounds_and_lose_nothing(seed):
    text = long_text(seed)
    result = parse_bytes("letters.md", text.encode())
    assert result.problems == []
    chunks = result.memories
    assert len(chunks) > 5
    for number, memory in enumerate(chunks, 1):
        tokens = estimate_tokens(memory.response or "")
        assert MIN_TOKENS <= tokens <= MAX_TOKENS, (number, tokens)
        assert memory.metadata == {
            "title": "Letters from the river",
            "chunk": number,
            "chunks": len(chunks),
        }
        assert memory.locator == f"chunk {number}"
        assert memory.prompt == ""
        assert (memory.format, memory.type) == ("prose", "prose")
    joined = " ".join(m.response or "" for m in chunks)
    assert joined.split() == text.split()


def test_chunks_are_verbatim_slices_in_order():
    text = long_text(7)
    spans = chunk_spans(text)
    assert all(a < b <= c for (a, b), (c, _) in itertools.pairwise(spans))
    assert all(not text[b:c].strip() for (_, b), (c, _) in itertools.pairwise(spans))
    assert not text[: spans[0][0]].strip() and not text[spans[-1][1] :].strip()


def test_chunks_end_on_paragraph_boundaries_when_paragraphs_are_small():
    rng = random.Random(3)
    paragraphs = [paragraph(rng, rng.randint(2, 6)) for _ in range(80)]
    text = "\n\n".join(paragraphs)
    for memory in parse_bytes("p.txt", text.encode()).memories:
        body = memory.response or ""
        assert all(p in paragraphs for p in body.split("\n\n"))


def test_short_text_is_one_chunk_and_just_over_the_goal_splits_evenly():
    short = " ".join(["word"] * 500)
    assert len(parse_bytes("s.txt", short.encode()).memories) == 1
    rng = random.Random(1)
    medium = "\n\n".join(paragraph(rng, 3) for _ in range(40))  # ~2200 tokens
    memories = parse_bytes("m.txt", medium.encode()).memories
    assert len(memories) == 2
    assert all(MIN_TOKENS <= estimate_tokens(m.response or "") <= MAX_TOKENS for m in memories)


def test_token_estimate_is_words_times_four_thirds():
    assert estimate_tokens("one two three") == 4
    assert estimate_tokens("  a\n\nb\tc  ") == 4
    assert estimate_tokens("") == 0


def test_prose_keeps_text_otherwise_unchanged():
    text = "Title line\n\n  indented   spacing  kept\n\n- a list\n- of items\n"
    (memory,) = parse_bytes("t.md", text.encode()).memories
    assert memory.response == text.strip()

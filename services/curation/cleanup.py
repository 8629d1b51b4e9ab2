"""Cleaning a response: filler removal and whitespace; counting words.

Only responses are cleaned. What the person said, asked or thought (the prompt and
the context) is kept as it was, stripped of surrounding whitespace only.
"""

from __future__ import annotations

import re
from functools import lru_cache

_WORD = re.compile(r"\S+")
# A sentence: from a non-space up to a terminator followed by a space or the end of
# the line (so "v2.5" and "e.g." inside a sentence do not end it), with its trailing
# spaces.
_SENTENCE = re.compile(r"\S.*?(?:[.!?…]+(?=\s|$)|$)\s*")
# What may follow a removed phrase and goes with it.
_AFTER_PHRASE = re.compile(r"[,;:.!?…—–-]*\s*")
_PUNCT = ",;:.!?…—–-"


def count_words(text: str) -> int:
    """Words as whitespace-separated runs: 'It's 5 p.m.' has 3."""
    return len(_WORD.findall(text))


def tidy(text: str) -> str:
    """Trailing spaces off every line, at most one blank line in a row, no outer space.

    Indentation and spaces inside a line are kept (code, tables, verse).
    """
    lines = [ln.rstrip() for ln in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _alternation(entries: tuple[str, ...]) -> str:
    # Longest first, so "As an AI language model" wins over "As an AI".
    parts = []
    for entry in sorted({e.strip() for e in entries if e.strip()}, key=lambda e: (-len(e), e)):
        p = re.escape(entry)
        if entry[0].isalnum():
            p = r"(?<!\w)" + p
        if entry[-1].isalnum():
            p += r"(?!\w)"
        parts.append(p)
    return "|".join(parts)


@lru_cache(maxsize=16)
def _patterns(
    phrases: tuple[str, ...], sentences: tuple[str, ...]
) -> tuple[re.Pattern[str] | None, re.Pattern[str] | None]:
    ph = _alternation(phrases)
    se = _alternation(sentences)
    return (
        re.compile(rf"(?:{ph})", re.IGNORECASE) if ph else None,
        re.compile(rf"(?:{se})", re.IGNORECASE) if se else None,
    )


def _strip_opening_phrases(sentence: str, phrase_re: re.Pattern[str]) -> tuple[str, bool]:
    """Remove filler phrases that open ``sentence`` (repeatedly); capitalise what is left."""
    found = False
    while True:
        m = phrase_re.match(sentence)
        if not m:
            break
        rest = sentence[m.end() :]
        # Only a phrase that stands on its own: it ends in punctuation, or punctuation
        # or the end of the sentence follows ("Great question about rain" stays).
        if not (m.group(0)[-1] in _PUNCT or not rest.strip() or rest.lstrip()[0] in _PUNCT):
            break
        sentence = rest[_AFTER_PHRASE.match(rest).end() :]  # type: ignore[union-attr]
        found = True
    if found and sentence[:1].islower():
        sentence = sentence[0].upper() + sentence[1:]
    return sentence, found


def remove_filler(
    text: str, phrases: tuple[str, ...], sentences: tuple[str, ...]
) -> tuple[str, bool]:
    """``text`` without filler, tidied; and whether any filler was found.

    A phrase is removed where it opens a sentence, with the punctuation and spaces
    after it; a sentence containing a filler sentence entry is removed whole. A line
    that held only filler is removed with its line break.
    """
    phrase_re, sentence_re = _patterns(tuple(phrases), tuple(sentences))
    found = False
    out_lines = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        indent = line[: len(line) - len(line.lstrip())]
        kept = []
        line_found = False
        for m in _SENTENCE.finditer(line):
            sentence = m.group(0)
            if sentence_re is not None and sentence_re.search(sentence):
                line_found = True
                continue
            if phrase_re is not None:
                sentence, hit = _strip_opening_phrases(sentence, phrase_re)
                line_found = line_found or hit
            if sentence:
                kept.append(sentence)
        if line_found:
            found = True
            new_line = (indent + "".join(kept)).rstrip()
            if new_line.strip():
                out_lines.append(new_line)
        else:
            out_lines.append(line)
    return tidy("\n".join(out_lines)), found

"""Questions in other words, written by rule from the person's own answers.

A profile's memories ask each thing the way it was asked once ("Tell me about your
family."), and a fine-tuned small model learns to map those words to the answer: asked
"What does your brother do for work?", it answers about its own work ("I work on
boatloads in the north..."), although it learned "My brother Tiago fixes boat engines in
Peniche" word for word. So before training, each distinct emulation answer (its copies,
told with other first and last words, are one answer: :func:`distinct_answers`) gets the
questions its own words ask in the second person (:func:`questions`):

- each thing it calls "my X" (a word of :data:`MIN_THING` letters or more, not one of
  :data:`NOT_THINGS`; with the adjective before it, one of :data:`ADJECTIVES`, as in "my
  old car"): "Tell me about your X." and "What about your X?";
- each thing it says it does, "I V" (V of :data:`MIN_VERB` letters or more, not an
  auxiliary, an adverb (:data:`NOT_VERBS`) or a past tense (:data:`PAST`, or ending in
  "ed")): "Where do you V?" and "When do you V?".

Each question trains the answer once more, under the question, given to one of the
answer's copies in turn (:func:`asked`); the dataset build renders it twice, without
memories and among memories (:mod:`services.dataset_build`). Rules, not a model: they
cost nothing, write the same questions every time, and cover every part of an answer
that tells two things ("my brother ..., and my mother ..."), which questions that a small
model writes did not (bench/FIDELITY.md). English only: an answer in another language
gets no questions. A profile with more than :data:`UP_TO` emulation training answers gets
none either: its people asked it in many words already, and grouping copies is quadratic.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from services.words import words

UP_TO = 300  # emulation training answers above which no questions are written
NEAR_COPY = 0.5  # answers sharing this share of their words (Jaccard) tell the same thing
MIN_THING = 3
MIN_VERB = 3
_MY = re.compile(r"\b[Mm]y ([a-z]+)(?: ([a-z]+))?")
_I = re.compile(r"\bI ([a-z]+)\b")
# "my way", "my head": no thing to ask about.
NOT_THINGS = frozenset(
    [
        "way",
        "head",
        "life",
        "mind",
        "time",
        "best",
        "favourite",
        "favorite",
        "hands",
        "eyes",
        "word",
        "goodness",
    ]
)
# Before the thing: "my old car" asks about "your old car".
ADJECTIVES = frozenset(
    [
        "own",
        "new",
        "old",
        "first",
        "last",
        "little",
        "big",
        "younger",
        "older",
        "elder",
        "late",
        "whole",
        "dear",
    ]
)
# After "I": auxiliaries, modals, adverbs and verbs of thinking, which ask nothing.
NOT_VERBS = frozenset(
    [
        "am",
        "was",
        "were",
        "have",
        "had",
        "has",
        "do",
        "did",
        "does",
        "would",
        "will",
        "can",
        "could",
        "should",
        "must",
        "might",
        "may",
        "shall",
        "think",
        "mean",
        "know",
        "wonder",
        "guess",
        "believe",
        "suppose",
        "feel",
        "keep",
        "always",
        "still",
        "never",
        "often",
        "just",
        "also",
        "really",
        "usually",
        "sometimes",
        "only",
        "even",
        "once",
        "hope",
        "want",
        "need",
        "like",
        "love",
        "remember",
        "forget",
    ]
)
# Past tenses that do not end in "ed": "Where do you grew?" asks nothing.
PAST = frozenset(
    [
        "grew",
        "went",
        "came",
        "took",
        "made",
        "saw",
        "got",
        "gave",
        "found",
        "told",
        "thought",
        "began",
        "left",
        "brought",
        "bought",
        "ran",
        "wrote",
        "met",
        "sat",
        "stood",
        "spent",
        "taught",
        "knew",
        "felt",
        "heard",
        "lost",
        "won",
        "fell",
        "drew",
        "drove",
        "rode",
        "swam",
        "sang",
        "ate",
    ]
)

_NOT_NOUNS = NOT_THINGS | ADJECTIVES  # "my own" alone asks about nothing
_NOT_ASKED = NOT_VERBS | PAST


def questions(answer: str) -> list[str]:
    """The questions ``answer``'s words ask in the second person (see the module
    docstring), in the order of the words, each once."""
    out: list[str] = []
    for first, then in _MY.findall(answer):
        thing, noun = (f"{first} {then}", then) if first in ADJECTIVES and then else (first, first)
        if len(noun) >= MIN_THING and noun not in _NOT_NOUNS:
            out += [f"Tell me about your {thing}.", f"What about your {thing}?"]
    for verb in _I.findall(answer):
        if len(verb) >= MIN_VERB and verb not in _NOT_ASKED and not verb.endswith("ed"):
            out += [f"Where do you {verb}?", f"When do you {verb}?"]
    return list(dict.fromkeys(out))


def near_copy(a: frozenset[str], b: frozenset[str]) -> bool:
    """Whether two word sets share :data:`NEAR_COPY` of their words or more."""
    union = len(a | b)
    return union > 0 and len(a & b) / union >= NEAR_COPY


def distinct_answers(answers: Sequence[tuple[str, str]]) -> list[list[str]]:
    """``(id, answer)`` grouped into distinct answers: each answer joins the first group
    whose first answer it nearly copies (:func:`near_copy` of their words), in the order
    given, or starts one. Returns the groups' ids."""
    firsts: list[frozenset[str]] = []
    groups: list[list[str]] = []
    for sample_id, answer in answers:
        mine = frozenset(words(answer))
        for first, group in zip(firsts, groups, strict=True):
            if near_copy(first, mine):
                group.append(sample_id)
                break
        else:
            firsts.append(mine)
            groups.append([sample_id])
    return groups


def asked(answers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """``(id, question)`` for the questions in other words of ``answers`` (``(id, answer)``,
    best first): each distinct answer's questions, written from its first copy, given to
    its copies in turn. None when there are more than :data:`UP_TO` answers."""
    if len(answers) > UP_TO:
        return []
    text = dict(answers)
    out: list[tuple[str, str]] = []
    for group in distinct_answers(answers):
        for n, question in enumerate(questions(text[group[0]])):
            out.append((group[n % len(group)], question))
    return out

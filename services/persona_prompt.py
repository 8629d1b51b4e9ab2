"""The prompt policy: one system message for training, for ``ask`` and for Ollama.

What a model is served must be what it was trained on. Every training sample of a
profile starts with the persona's system message (:func:`system_message`), which opens
with the profile's head (its style, :mod:`services.persona_style`, fixed with the
dataset); ``ask`` sends the same message with the memories it retrieved; a published
Ollama model carries it (without memories) as its ``SYSTEM``.

Retrieval-augmented fine-tuning: a share of the training samples (:data:`CONTEXT_SHARE`)
carry memories in their system message, the way ``ask`` shows retrieved memories, so
that the model learns to use them when they are there and to answer from what it learned
when they are not. Of those, most hold the sample's own memory (the "oracle", as a good
retrieval would find it) among others of the profile; the rest hold only others (as a
retrieval that missed). The others are the memories nearest to the sample's own, as
``ask``'s retrieval finds a question's neighbours (:class:`Neighbours`: shared words,
rare ones weighing more): a person's notes say one thing several ways, so the model sees
the fact it must give under another question than its own, as it does when ``ask``
shows what was retrieved for a question put in new words; and one of them
(:data:`DISTRACTORS`) is drawn from the farther half, something else, as such a
retrieval also brings, so that the model learns to answer from the memory that answers.
Which samples carry memories, and which others are drawn, is decided by hashing the
sample's id (equally near ones are taken in the order of their ids): the same dataset
every time. Choosing a sample's memories takes time that grows with the memories near its
own, not with all of the profile's.

A question in other words (:mod:`services.persona_questions`) is shown memories chosen
another way (:func:`question_context`): those nearest the question, none a near copy of
the sample's own, so that the answer is one memory among others that share its words.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

from services.persona_questions import near_copy
from services.words import words

MAX_MEMORY_CHARS = 400  # each memory shown, clipped with "..."
CONTEXT_SHARE = 0.3  # training samples that carry memories
ORACLE_SHARE = 0.8  # of those, the ones whose own memory is among them
DISTRACTORS = 1  # of a sample's other memories, the ones that are not near its own
CONTEXT_MEMORIES = 3  # memories per sample that carries them (ask retrieves 4 by default)
COMMON_IDF = math.log(2)  # words in half the memories or more do not make two memories near
# Greedy answers of small models loop on one sentence; no trigram of an answer is said twice.
NO_REPEAT_NGRAM = 3


def emulation_tags() -> tuple[str, str]:
    """The emulation mode's (prompt, response) tag names (``etc/curation.json``)."""
    from services.curation.modes import mode_tags

    return mode_tags()["emulation"]


def answer_stops() -> list[str]:
    """Where an answer ends besides the model's own stops: the emulation mode's closing tag,
    as the person's turns end in the training samples; its opening (``</assistant``), so
    that a malformed closer ("</assistant" and a newline) ends the answer too."""
    return [closing_stop(emulation_tags()[1])]


def closing_stop(tag: str) -> str:
    """The stop string of a mode's closing tag: ``</tag``, whatever follows it."""
    return f"</{tag}"


def clip(text: str, limit: int = MAX_MEMORY_CHARS) -> str:
    """``text`` on one line, at most ``limit`` characters (cut ones end in "...")."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def default_head(profile: str) -> str:
    """The opening of the system message of a profile with nothing known of its style."""
    return f"You are {profile}. Answer as {profile}, in your own words."


def system_message(profile: str, memories: Sequence[str] = (), head: str | None = None) -> str:
    """The persona's system message, with ``memories`` (texts) listed when given. It opens
    with ``head`` (the profile's style, :mod:`services.persona_style`) when given."""
    head = head or default_head(profile)
    if not memories:
        return head
    listed = "\n".join(f"- {clip(m)}" for m in memories)
    return f"{head}\nWhat you remember:\n{listed}"


def with_system(
    profile: str,
    messages: Sequence[Mapping[str, str]],
    memories: Sequence[str] = (),
    head: str | None = None,
) -> list[dict[str, str]]:
    """``messages`` with the persona's system message first; a system message they already
    hold (a chat's own) follows the persona's in the same turn."""
    system = system_message(profile, memories, head)
    rest = [dict(m) for m in messages]
    if rest and rest[0].get("role") == "system":
        own = rest.pop(0)["content"]
        system = f"{system}\n\n{own}" if own.strip() else system
    return [{"role": "system", "content": system}, *rest]


def ask_messages(
    profile: str, question: str, memories: Sequence[str], head: str | None = None
) -> list[dict[str, str]]:
    """What ``ask`` sends: the system message with the retrieved memories, and the question
    as an emulation-mode user turn."""
    user = [{"role": "user", "content": f"<user>{question}</user>"}]
    return with_system(profile, user, memories, head)


def _draw(seed: str, sample_id: str, what: str) -> float:
    digest = hashlib.sha256(f"{seed}:{what}:{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class Neighbours:
    """The memories of a profile nearest to a text by the words they share, each word
    weighing its inverse document frequency among them (a word in every memory weighs
    nothing; a name in two weighs much): a lexical stand-in, at dataset build, for the
    retrieval ``ask`` runs on the index. The memories are held in the order of their ids,
    whatever the order given."""

    def __init__(self, memories: Sequence[tuple[str, str]]) -> None:
        ordered = sorted(memories)
        self.ids = [mid for mid, _ in ordered]
        self.texts = [text for _, text in ordered]
        self._postings: dict[str, list[int]] = defaultdict(list)
        self._by_text: dict[str, list[int]] = defaultdict(list)
        for i, text in enumerate(self.texts):
            self._by_text[text].append(i)
            for w in set(words(text)):
                self._postings[w].append(i)
        n = len(self.texts)
        self._idf = {w: math.log((n + 1) / len(at)) for w, at in self._postings.items()}

    def scores(self, text: str) -> dict[int, float]:
        """Memory index -> nearness to ``text`` (absent: no word in common but those in
        half the memories or more, which tell nothing apart)."""
        out: dict[int, float] = defaultdict(float)
        for w in set(words(text)):
            idf = self._idf.get(w, 0.0)
            if idf > COMMON_IDF:
                for i in self._postings[w]:
                    out[i] += idf
        return out

    def own(self, sample_id: str, own_text: str | None) -> set[int]:
        """The indexes of a sample's own memory and of every copy of its text."""
        mine: set[int] = set()
        at = bisect.bisect_left(self.ids, sample_id)
        while at < len(self.ids) and self.ids[at] == sample_id:
            mine.add(at)
            at += 1
        if own_text is not None:
            mine.update(self._by_text.get(own_text, ()))
        return mine


def _nth_outside(n: int, taken: Sequence[int]) -> int:
    """The ``n``-th (from 0) index that is not in ``taken`` (sorted, distinct)."""
    for t in taken:
        if t > n:
            break
        n += 1
    return n


def _draw_ranks(seed: str, sample_id: str, what: str, count: int, size: int) -> list[int]:
    """``count`` distinct ranks below ``size`` (all of them when fewer), drawn per sample."""
    count = min(count, size)
    ranks: list[int] = []
    tries = 0
    while len(ranks) < count and tries < 8 * count + 16:
        r = int(_draw(seed, sample_id, f"{what}:{tries}") * size)
        if r not in ranks:
            ranks.append(r)
        tries += 1
    ranks += [r for r in range(size) if r not in ranks][: count - len(ranks)]
    return ranks


def _rank_others(nearness: Mapping[int, float], mine: set[int]) -> tuple[list[int], list[int]]:
    """(ranked, apart): the memories near a text that are not the sample's own (``mine``),
    nearest first and then by index; and, sorted, every near one and its own. Those outside
    ``apart``, the ones that share no telling word with the text, rank last, in id order."""
    ranked = [i for _, i in sorted((-s, i) for i, s in nearness.items() if i not in mine)]
    return ranked, sorted(set(nearness) | mine)


def training_context(
    sample_id: str,
    own_text: str | None,
    others: Sequence[tuple[str, str]],
    *,
    seed: str = "context",
    share: float = CONTEXT_SHARE,
    oracle_share: float = ORACLE_SHARE,
    k: int = CONTEXT_MEMORIES,
    near: Neighbours | None = None,
) -> list[str]:
    """The memory texts a training sample carries in its system message ([] for most
    samples; see the module docstring). ``others`` are ``(id, text)`` of the profile's
    other memories, in any order (the choice does not depend on it); ``near`` their
    :class:`Neighbours`, built once for many samples (else here).

    The others, ranked by nearness to the sample's own memory and then by id: the first
    ones are taken; a distractor is drawn from the farther half of the rest; when too few
    share a telling word, the rest are drawn from those that share none. The time it
    takes grows with the memories near the sample's own, not with all of them."""
    if k < 1 or _draw(seed, sample_id, "share") >= share:
        return []
    near = near if near is not None else Neighbours(others)
    want = k - 1 if own_text is not None and _draw(seed, sample_id, "oracle") < oracle_share else k
    nearness = near.scores(own_text) if own_text is not None else {}
    mine = near.own(sample_id, own_text)
    ranked, apart = _rank_others(nearness, mine)
    unrelated = len(near.ids) - len(apart)

    far = min(DISTRACTORS, want - 1) if nearness else 0
    picked = ranked[: want - far]
    rest = ranked[len(picked) :]

    def other(r: int) -> int:  # the r-th other not picked: near ones by rank, then unrelated
        return rest[r] if r < len(rest) else _nth_outside(r - len(rest), apart)

    if far:  # memories of something else, as a retrieval for a question in new words holds:
        # drawn from the farther half of the others
        half = (len(rest) + unrelated) // 2
        for r in _draw_ranks(seed, sample_id, "far", far, len(rest) + unrelated - half):
            picked.append(other(half + r))
    if len(picked) < want:  # too few share a telling word: the rest drawn per sample
        for r in _draw_ranks(seed, sample_id, "rest", want - len(picked) + far, unrelated):
            i = other(len(rest) + r)
            if i not in picked and len(picked) < want:
                picked.append(i)
    chosen = [near.texts[i] for i in picked]
    if want < k and own_text is not None:
        at = int(_draw(seed, sample_id, "place") * (len(chosen) + 1))
        chosen.insert(at, own_text)
    return chosen


def question_context(
    sample_id: str,
    own_text: str | None,
    question: str,
    near: Neighbours,
    *,
    seed: str = "question",
    k: int = CONTEXT_MEMORIES + 1,
) -> list[str]:
    """The memory texts a sample shows under a question in other words
    (:mod:`services.persona_questions`): those nearest the question (by :class:`Neighbours`,
    then by id) that are no near copy of the sample's own memory, one drawn from the farther
    half of the others, and its own memory once, at a drawn place: ``k`` in all, as many as
    ``ask`` shows. So the model learns to find the memory that answers among others that
    share the question's words, not to repeat what most of them say. Fewer when the
    profile has too few memories that tell something else."""
    mine = near.own(sample_id, own_text)
    own_words = frozenset(words(own_text or ""))
    ranked, apart = _rank_others(near.scores(question), mine)
    size = len(ranked) + len(near.ids) - len(apart)  # every other memory, ranked

    def other(r: int) -> int:  # the r-th other: near ones by rank, then unrelated by id
        return ranked[r] if r < len(ranked) else _nth_outside(r - len(ranked), apart)

    def telling(i: int) -> bool:
        return not near_copy(own_words, frozenset(words(near.texts[i])))

    want = max(0, k - 1 if own_text is not None else k)
    far = min(DISTRACTORS, want - 1) if want > 1 else 0
    picked: list[int] = []
    r = 0
    while len(picked) < want - far and r < size:
        if telling(other(r)):
            picked.append(other(r))
        r += 1
    if far and r < size:  # something else: drawn from the farther half of the rest
        half = r + (size - r) // 2
        for d in _draw_ranks(seed, f"{sample_id}:{question}", "far", 8, size - half):
            i = other(half + d)
            if telling(i) and i not in picked:
                picked.append(i)
                break
    chosen = [near.texts[i] for i in picked]
    if own_text is not None:
        at = int(_draw(seed, f"{sample_id}:{question}", "place") * (len(chosen) + 1))
        chosen.insert(at, own_text)
    return chosen

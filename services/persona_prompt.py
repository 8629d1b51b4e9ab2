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
Which samples carry memories, and the order of equally near ones, is decided by hashing
the sample's id: the same dataset every time.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

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
    retrieval ``ask`` runs on the index."""

    def __init__(self, memories: Sequence[tuple[str, str]]) -> None:
        self.ids = [mid for mid, _ in memories]
        self.texts = [text for _, text in memories]
        self._postings: dict[str, list[int]] = defaultdict(list)
        for i, text in enumerate(self.texts):
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
    :class:`Neighbours`, built once for many samples (else here)."""
    if k < 1 or _draw(seed, sample_id, "share") >= share:
        return []
    near = near if near is not None else Neighbours(others)
    want = k - 1 if own_text is not None and _draw(seed, sample_id, "oracle") < oracle_share else k
    nearness = near.scores(own_text) if own_text is not None else {}

    def usable(i: int) -> bool:
        return near.ids[i] != sample_id and near.texts[i] != own_text

    far = min(DISTRACTORS, want - 1) if nearness else 0
    nearest = heapq.nsmallest(
        want - far, ((-score, near.ids[i], i) for i, score in nearness.items() if usable(i))
    )
    picked = [i for _, _, i in nearest]
    if far:  # memories of something else, as a retrieval for a question in new words holds:
        # drawn from the farther half of the others
        others_by_nearness = sorted(
            (i for i in range(len(near.ids)) if usable(i) and i not in picked),
            key=lambda i: (-nearness.get(i, 0.0), near.ids[i]),
        )
        farther = others_by_nearness[len(others_by_nearness) // 2 :]
        picked += heapq.nsmallest(far, farther, key=lambda i: _draw(seed, sample_id, near.ids[i]))
    if len(picked) < want:  # too few share a telling word: the rest in an order drawn per sample
        rest = (i for i in range(len(near.ids)) if usable(i) and i not in nearness)
        drawn = sorted(rest, key=lambda i: _draw(seed, sample_id, near.ids[i]))
        picked += drawn[: want - len(picked)]
    chosen = [near.texts[i] for i in picked]
    if want < k and own_text is not None:
        at = int(_draw(seed, sample_id, "place") * (len(chosen) + 1))
        chosen.insert(at, own_text)
    return chosen

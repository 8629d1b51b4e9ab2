"""Style: is an answer written the way the person writes?

The measure is the cosine similarity of character n-gram profiles (n = 1..4 by default,
words padded with spaces, case kept): cheap on a CPU, blind to topic words' meaning but
sensitive to what a person's voice is made of on the page — their function words, verbal
tics ("honestly,", "you know"), punctuation, contractions, capitalisation and word
lengths. Sentence-embedding similarity (MiniLM) would instead reward saying the same
thing, which fact recall already measures.

The **transfer score** of a model is the share of probes where its answer is closer to
the person's own reference answer than the base model's answer to the same prompt is
(ties count half): 0.5 means no change from the base, above 0.5 the model moved towards
the person.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

NGRAMS = (1, 2, 3, 4)


def profile(text: str, ngrams: Sequence[int] = NGRAMS) -> Counter[str]:
    """Character n-gram counts of ``text`` with its white space folded."""
    padded = f" {' '.join(text.split())} "
    counts: Counter[str] = Counter()
    for n in ngrams:
        counts.update(padded[i : i + n] for i in range(len(padded) - n + 1))
    return counts


def similarity(a: str, b: str) -> float:
    """Cosine similarity of the two texts' n-gram profiles, 0..1 (0 when either is empty)."""
    pa, pb = profile(a), profile(b)
    if not a.strip() or not b.strip():
        return 0.0
    dot = sum(v * pb.get(k, 0) for k, v in pa.items())
    norm = math.sqrt(sum(v * v for v in pa.values())) * math.sqrt(sum(v * v for v in pb.values()))
    return dot / norm if norm else 0.0


def transfer_score(
    references: Sequence[str], candidates: Sequence[str], bases: Sequence[str]
) -> float | None:
    """The share of probes whose candidate answer is closer to the reference than the base
    answer is (ties half); None without probes."""
    if not (len(references) == len(candidates) == len(bases)):
        raise ValueError("references, candidates and bases must be of one length")
    if not references:
        return None
    wins = 0.0
    for ref, cand, base in zip(references, candidates, bases, strict=True):
        c, b = similarity(cand, ref), similarity(base, ref)
        wins += 1.0 if c > b else 0.5 if c == b else 0.0
    return wins / len(references)

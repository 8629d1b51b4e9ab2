"""The person's style in their system message: what they talk about, how long they answer
and the turns of phrase they open and close with, derived from their own samples.

The system message of the prompt policy (:mod:`services.persona_prompt`) opens with a
*head*: by default "You are alice. Answer as alice, in your own words.". A profile's head
adds what its data say of the person (:func:`derive_head`):

- the topics they talk about most (``metadata.topic``, ``genre`` and tags of their
  memories; the :data:`TOPICS` most frequent),
- their typical answer length (the median word count of their emulation answers),
- the words they open or close their answers with, when at least :data:`PHRASE_SHARE`
  of their answers do ("Well," ... "voilà.").

``<profiles_dir>/<profile>/system.txt`` replaces the derived head with the person's own
words. The head is fixed when a dataset is built (``persona.json`` in the run directory)
and kept with the version it trains, so ``ask``, the gate and the Ollama model's
``SYSTEM`` serve the head the version was trained with.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.jsonl import read_object
from services.persona_prompt import default_head

if TYPE_CHECKING:
    from services.curation import Sample
    from services.ledger import Ledger
    from services.memories import Memory

SYSTEM_FILE = "system.txt"  # <profiles_dir>/<profile>/system.txt: the person's own head
PERSONA_FILE = "persona.json"  # in a run directory: the head its dataset was built with
TOPICS = 3  # topics named in the head
PHRASE_SHARE = 0.25  # answers that must open (or close) with the same word to name it
MIN_ANSWERS = 4  # fewer emulation answers than this: no length, no phrases
MAX_SYSTEM_CHARS = 2000  # a system.txt longer than this is refused

_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Style:
    """What the samples say of the person's style."""

    topics: tuple[str, ...]
    words: int | None  # median words per answer
    openers: tuple[str, ...]
    closers: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "topics": list(self.topics),
            "words": self.words,
            "openers": list(self.openers),
            "closers": list(self.closers),
        }


def _common_edges(answers: Sequence[list[str]], at: int) -> tuple[str, ...]:
    counts = Counter(words[at] for words in answers if words)
    need = max(2, PHRASE_SHARE * len(answers))
    return tuple(w for w, n in sorted(counts.items(), key=lambda c: (-c[1], c[0])) if n >= need)


def _topics(metadata: Iterable[tuple[Mapping[str, Any], Sequence[str]]]) -> tuple[str, ...]:
    counts: Counter[str] = Counter()
    for meta, tags in metadata:
        named = [meta.get("topic"), meta.get("genre"), *tags]
        for value in {str(v).strip().lower() for v in named if isinstance(v, str) and v.strip()}:
            counts[value] += 1
    ranked = sorted(counts.items(), key=lambda c: (-c[1], c[0]))
    return tuple(name for name, n in ranked[:TOPICS] if n >= 2)


def measure_style(
    answers: Sequence[str], metadata: Iterable[tuple[Mapping[str, Any], Sequence[str]]]
) -> Style:
    """The style of the person's emulation ``answers`` and their memories' ``metadata``
    (``(metadata, tags)`` per memory)."""
    split = [_WORD.findall(a) for a in answers if a.strip()]
    enough = len(split) >= MIN_ANSWERS
    return Style(
        topics=_topics(metadata),
        words=round(statistics.median(len(w) for w in split)) if enough else None,
        openers=_common_edges(split, 0)[:2] if enough else (),
        closers=_common_edges(split, -1)[:2] if enough else (),
    )


def _listing(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def derive_head(profile: str, style: Style) -> str:
    """The head for ``profile`` with its ``style`` said in plain words."""
    parts = [default_head(profile)]
    if style.topics:
        parts.append(f"You often talk about {_listing(style.topics)}.")
    if style.words:
        parts.append(f"Your answers are usually about {style.words} words long.")
    if style.openers:
        openers = [f'"{w}"' for w in style.openers]
        parts.append(f"You often begin with {_listing(openers)}.")
    if style.closers:
        closers = [f'"{w.rstrip(".!?") or w}"' for w in style.closers]
        parts.append(f"You often end with {_listing(closers)}.")
    return " ".join(parts)


def read_system_file(path: Path) -> str | None:
    """The person's own head from ``system.txt``; None without the file. ValueError when
    it is empty, not UTF-8 or longer than :data:`MAX_SYSTEM_CHARS`."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot be read as UTF-8 text ({exc})") from exc
    if not text:
        raise ValueError(f"{path} is empty: write the system prompt in it, or remove it")
    if len(text) > MAX_SYSTEM_CHARS:
        raise ValueError(f"{path} has {len(text)} characters; at most {MAX_SYSTEM_CHARS}")
    return text


def run_head(run_dir: Path) -> str | None:
    """The head a run's dataset was built with (its ``persona.json``); None when the run has
    none (a dataset built before the person's style was kept) or it cannot be read."""
    value = read_object(run_dir / PERSONA_FILE).get("system")
    return value if isinstance(value, str) and value.strip() else None


def persona_head(
    profile: str,
    answers: Sequence[str],
    metadata: Iterable[tuple[Mapping[str, Any], Sequence[str]]],
    system_file: Path | None = None,
) -> dict[str, Any]:
    """``persona.json``'s content: ``{"system": head, "source": "system.txt" | "derived",
    "style": {...}}``."""
    style = measure_style(answers, metadata)
    own = read_system_file(system_file) if system_file is not None else None
    if own is not None:
        return {"system": own, "source": SYSTEM_FILE, "style": style.to_dict()}
    return {"system": derive_head(profile, style), "source": "derived", "style": style.to_dict()}


def profile_persona(
    profile: str, samples: Sequence[Sample], memories: Sequence[Memory], system_file: Path | None
) -> dict[str, Any]:
    """``persona.json`` of a profile: the head of its system message, from its eligible
    emulation ``samples`` and its ``memories``' topics, or its own ``system_file``.
    :class:`~services.curation.CurationError` when that file cannot be used."""
    from services.curation import CurationError

    answers = [s.response_text for s in samples if s.eligible and s.mode == "emulation"]
    metadata = [(m.metadata, m.tags) for m in memories]
    try:
        return persona_head(profile, answers, metadata, system_file)
    except ValueError as exc:
        raise CurationError(str(exc)) from exc


def serving_head(
    ledger: Ledger, profile: str, version_info: Mapping[str, Any] | None, system_file: Path | None
) -> str | None:
    """The head ``ask`` opens the system message with: the active version's (what it was
    trained with; ``version_info`` is its ``version.json``), or, with no version active,
    the profile's own now. None: the default head (a version trained before heads were
    kept)."""
    if version_info is not None:
        value = (version_info.get("info") or {}).get("system")
        return value if isinstance(value, str) and value.strip() else None
    from services.curation import Sample

    samples = [Sample.from_record(r) for r in ledger.sample_records(profile)]
    return str(profile_persona(profile, samples, ledger.memories(profile), system_file)["system"])

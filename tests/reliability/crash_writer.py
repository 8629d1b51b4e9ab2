"""The crash harness's writer: memory files of every format dropped into profiles,
with every memory id known in advance (the project's own parser on the final bytes).

A file counts as complete once its last byte is written and it is closed (plain
write) or renamed into place (temp + rename); only complete files are expected in the
ledger.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from services.memories import parse_bytes

WORDS = tuple(
    " ".join(
        (
            "river stone lantern morning quiet harbour letter garden winter orchard bicycle",
            "kettle violin meadow pencil window ladder blanket compass thunder candle market",
            "island feather mirror engine ribbon saddle tunnel valley whistle anchor basket",
            "cellar dragon glacier hammock jigsaw marble nectar pepper quarry sunset tablet",
            "umbrella velvet walnut yogurt zipper canyon ember forest galaxy horizon",
        )
    ).split()
)
EVENT_TYPES = ("conversation", "observation", "journal", "reflection", "inner_dialogue")
FORMATS = ("jsonl", "json_array", "metahuman", "chat", "qa")


@dataclass
class WrittenFile:
    """One file the writer dropped: its final bytes and the memory ids they hold."""

    profile: str
    path: Path
    sha256: str
    ids: frozenset[str]
    format: str
    method: str  # "rename" or "plain"
    complete_at: float = 0.0  # monotonic time the write finished


@dataclass
class WriterStats:
    files: int = 0
    records: int = 0
    big_batches: int = 0
    by_format: dict[str, int] = field(default_factory=dict)
    by_method: dict[str, int] = field(default_factory=dict)


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def render(fmt: str, rng: random.Random, tag: str, records: int) -> tuple[str, bytes]:
    """(file suffix, bytes) of one file of ``fmt`` holding ``records`` distinct records
    (one for a MetaHuman event); ``tag`` makes every record unique."""
    if fmt == "jsonl":
        lines = [
            json.dumps(
                {
                    "prompt": f"{tag} question {k}: {_sentence(rng, 6)}?",
                    "response": f"{_sentence(rng, 10)}, said {tag} answer {k}.",
                    "quality_score": 9,
                }
            )
            for k in range(records)
        ]
        return ".jsonl", ("\n".join(lines) + "\n").encode()
    if fmt == "json_array":
        items = [
            {
                "prompt": f"{tag} asks {k}: {_sentence(rng, 5)}?",
                "completion": f"{_sentence(rng, 9)}, replied {tag} {k}.",
                "quality_score": 8,
            }
            for k in range(records)
        ]
        return ".json", json.dumps(items, indent=1).encode()
    if fmt == "metahuman":
        kind = rng.choice(EVENT_TYPES)
        event: dict[str, object] = {
            "id": f"evt-{tag}",
            "timestamp": f"2025-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T10:00:00Z",
            "type": kind,
            "content": f"{tag}: {_sentence(rng, 12)}.",
            "importance": 0.9,
            "tags": [rng.choice(WORDS), rng.choice(WORDS)],
        }
        if kind == "conversation":
            event["response"] = f"{_sentence(rng, 10)} ({tag})."
        return ".json", json.dumps(event).encode()
    if fmt == "chat":
        messages = [{"role": "system", "content": f"You are {tag}."}]
        for k in range(records):
            messages.append({"role": "user", "content": f"{tag} turn {k}: {_sentence(rng, 6)}?"})
            messages.append({"role": "assistant", "content": f"{_sentence(rng, 9)} ({tag} {k})."})
        return ".json", json.dumps({"messages": messages}).encode()
    if fmt == "qa":
        blocks = [f"Notes {tag}\n"]
        for k in range(records):
            question = f"Q: {tag} wonders {k}: {_sentence(rng, 6)}?"
            blocks.append(f"{question}\nA: {_sentence(rng, 10)} ({tag} {k}).\n")
        return ".txt", "\n".join(blocks).encode()
    raise ValueError(f"unknown format {fmt!r}")


class Writer(threading.Thread):
    """Drops memory files continuously while resumed; ``pause`` returns once the file in
    hand is complete, so that every file on disk is then complete."""

    def __init__(
        self,
        profiles_dir: Path,
        profiles: tuple[str, ...],
        seed: int,
        *,
        interval_s: tuple[float, float] = (0.02, 0.12),
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        super().__init__(name="crash-writer", daemon=True)
        self.profiles_dir = profiles_dir
        self.profiles = profiles
        self.rng = random.Random(seed)
        self.interval_s = interval_s
        self.on_error = on_error
        self.files: list[WrittenFile] = []
        self.expected: dict[str, set[str]] = {p: set() for p in profiles}
        self.stats = WriterStats()
        self._n = 0
        self._write_lock = threading.Lock()  # held while a file is being written
        self._resumed = threading.Event()
        self._halt = threading.Event()
        self.error: BaseException | None = None
        for profile in profiles:
            (profiles_dir / profile / "memory").mkdir(parents=True, exist_ok=True)

    # -- control --------------------------------------------------------------------
    def resume(self) -> None:
        self._resumed.set()

    def pause(self) -> None:
        self._resumed.clear()
        with self._write_lock:
            pass  # the file in hand, if any, is complete now

    def stop(self) -> None:
        self._halt.set()
        self._resumed.set()
        self.join(10)

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                self._resumed.wait()
                if self._halt.is_set():
                    return
                with self._write_lock:
                    if self._resumed.is_set():
                        self.write_one()
                time.sleep(self.rng.uniform(*self.interval_s))
        except BaseException as exc:  # reported, never silent
            self.error = exc
            if self.on_error is not None:
                self.on_error(exc)

    # -- writing --------------------------------------------------------------------
    def write_one(self, profile: str | None = None) -> WrittenFile:
        rng = self.rng
        fmt = rng.choice(FORMATS)
        records = {"jsonl": rng.randint(1, 8), "json_array": rng.randint(1, 5)}.get(
            fmt, rng.randint(1, 3)
        )
        return self._write(profile or rng.choice(self.profiles), fmt, records, rng.random() < 0.5)

    def write_big(self, profile: str, records: int) -> WrittenFile:
        """One large JSON-lines file at once (renamed into place): a big index write."""
        with self._write_lock:
            self.stats.big_batches += 1
            return self._write(profile, "jsonl", records, True)

    def _write(self, profile: str, fmt: str, records: int, rename: bool) -> WrittenFile:
        rng = self.rng
        self._n += 1
        tag = f"{profile}-f{self._n}-{rng.getrandbits(32):08x}"
        suffix, data = render(fmt, rng, tag, records)
        folder = self.profiles_dir / profile / "memory"
        if rng.random() < 0.08:
            folder = folder / f"sub{rng.randint(1, 6)}"  # sometimes a directory appears
        folder.mkdir(parents=True, exist_ok=True)
        name = f"m{self._n:06d}-{fmt}{suffix}"
        result = parse_bytes(name, data)
        if result.problems or not result.memories:
            raise AssertionError(f"the writer made a bad file {name}: {result.problems}")
        final = folder / name
        if rename:
            tmp = folder / f".{name}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.rename(tmp, final)
        else:
            cuts = sorted(rng.sample(range(1, len(data)), k=min(2, len(data) - 1)))
            pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
            with open(final, "wb") as f:
                for i, piece in enumerate(pieces):
                    if i:
                        f.flush()
                        time.sleep(rng.uniform(0, 0.03))
                    f.write(piece)
        written = WrittenFile(
            profile=profile,
            path=final,
            sha256=hashlib.sha256(data).hexdigest(),
            ids=frozenset(m.id for m in result.memories),
            format=fmt,
            method="rename" if rename else "plain",
            complete_at=time.monotonic(),
        )
        self.files.append(written)
        self.expected[profile].update(written.ids)
        s = self.stats
        s.files += 1
        s.records += len(written.ids)
        s.by_format[fmt] = s.by_format.get(fmt, 0) + 1
        s.by_method[written.method] = s.by_method.get(written.method, 0) + 1
        return written

"""Ingestion as a Hypothesis state machine against the real daemon.

Also the daemon set-up that the event-loss and soak harnesses share: the real
``personad run`` (:class:`DaemonProcess`) embedding through the fake Ollama server's
hash embeddings (start-up in about a second, where the local MiniLM takes several),
fast debounce/settle/reconcile settings, training switched off, and a read-only view
of the ledger file.

The contract checked (docs/ARCHITECTURE.md, "The data walk"; ``MemoryStore.record_file``):
a memory is stored once however often it is delivered, and memories stay in the
ledger when their file is modified or deleted ("memories the file no longer holds
stay"). So the ledger must hold the memories of every complete file version the
daemon has had the chance to see, each once, and nothing else: no memory of a
half-written file.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, ClassVar

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from services.memories import parse_bytes
from tests.daemon_process import DaemonProcess
from tests.fakes.ollama_server import FakeOllama
from tests.reliability.crash_checks import ro_connect

EMBED_MODEL = "nomic-embed-text"

# Fast ingest for tests; training never starts on its own.
FAST_INGEST = {
    "PERSONAD_INGEST__DEBOUNCE_MS": "50",
    "PERSONAD_INGEST__SETTLE_S": "1.0",
    "PERSONAD_INGEST__RECONCILE_INTERVAL_S": "5",
    "PERSONAD_TRIGGERS__LORA_THRESHOLD": "1000000",
    "PERSONAD_TRIGGERS__LORA_SCHEDULE": "",
    "PERSONAD_TRIGGERS__FULL_SCHEDULE": "",
}


def fake_ollama() -> FakeOllama:
    """A fake Ollama server holding the embedding model the daemon asks for."""
    return FakeOllama(models=[EMBED_MODEL])


def daemon_env(ollama_url: str, **overrides: str) -> dict[str, str]:
    """Environment for a daemon embedding through ``ollama_url``, with FAST_INGEST."""
    return {
        **FAST_INGEST,
        "PERSONAD_INDEX__EMBEDDING_PROVIDER": "ollama",
        "PERSONAD_INDEX__EMBEDDING_MODEL": EMBED_MODEL,
        "PERSONAD_OLLAMA__URL": ollama_url,
        **overrides,
    }


@contextmanager
def short_root(prefix: str = "pd-") -> Iterator[Path]:
    """A short temporary directory (Unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class LedgerView:
    """Read-only queries on a daemon's ledger file (a fresh connection per query)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def of(cls, daemon: DaemonProcess) -> LedgerView:
        return cls(daemon.state_dir / "ledger.sqlite3")

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if not self.path.exists():
            raise FileNotFoundError(f"no ledger at {self.path}")
        with closing(ro_connect(self.path)) as conn:
            return list(conn.execute(sql, params))

    def memory_ids(self, profile: str) -> list[str]:
        """Every stored memory id of the profile (a list: a duplicate would show twice)."""
        return [r[0] for r in self._rows("SELECT id FROM memories WHERE profile = ?", (profile,))]

    def file_hashes(self, profile: str) -> dict[str, str | None]:
        """path -> sha256 of the content last read (None: could not be read)."""
        rows = self._rows("SELECT path, sha256 FROM files WHERE profile = ?", (profile,))
        return {r[0]: r[1] for r in rows}

    def file_first_seen(self) -> dict[str, str]:
        """path -> when the ledger first recorded a read of it (ISO 8601, UTC)."""
        rows = self._rows("SELECT path, seen_at FROM files")
        return {r[0]: r[1] for r in rows}

    def rejects(self, profile: str) -> list[tuple[str, str]]:
        """(path, reason) of every reject of the profile."""
        rows = self._rows("SELECT path, reason FROM rejects WHERE profile = ?", (profile,))
        return [(r[0], r[1]) for r in rows]


def memory_ids_of(name: str, data: bytes) -> set[str]:
    """The ids the project's parser gives a complete file; it must parse cleanly."""
    result = parse_bytes(name, data)
    assert not result.problems, (name, result.problems)
    return {m.id for m in result.memories}


# ---- the state machine ----------------------------------------------------------------

PROFILE = "sm"
STEMS = ("alpha", "beta", "gamma", "delta", "omega", "sigma")
EXTENSIONS = (".jsonl", ".json", ".txt", ".md")
NAMES = tuple(f"{stem}{ext}" for stem in STEMS for ext in EXTENSIONS)
WORDS = (
    "river",
    "garden",
    "violin",
    "morning",
    "harbour",
    "letter",
    "winter",
    "bicycle",
    "lantern",
    "meadow",
    "orchard",
    "copper",
)
CHECK_TIMEOUT_S = 30.0
# Pauses of a chunked writer: longer than the debounce, shorter than the settle time.
CHUNK_PAUSE_S = 0.15

_phrase = st.lists(st.sampled_from(WORDS), min_size=2, max_size=5).map(" ".join)
RECORDS = st.lists(st.tuples(_phrase, _phrase), min_size=1, max_size=4)


def render(name: str, records: list[tuple[str, str]]) -> bytes:
    """A complete memory file of the name's format holding ``records``."""
    ext = Path(name).suffix
    if ext == ".jsonl":
        text = "".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in records)
    elif ext == ".json":
        text = json.dumps([{"prompt": p, "response": r} for p, r in records])
    elif ext == ".txt":
        text = "".join(f"Q: {p}?\nA: {r}.\n\n" for p, r in records)
    else:
        paragraphs = [f"{p.capitalize()}, then {r}." for p, r in records]
        text = f"# Notes on {records[0][0]}\n\n" + "\n\n".join(paragraphs) + "\n"
    return text.encode()


class IngestMachine(RuleBasedStateMachine):
    """Writers and restarts against one daemon per example.

    Model: ``files`` (name -> bytes now on disk); ``allowed`` (the ids of every complete
    version ever written: the ledger may hold these and nothing else); ``required`` (the
    ids of every version that was on disk at a check, when the daemon had time to see it:
    the ledger must hold these). At a check the daemon is quiet (queue 0) and the ledger
    holds ``required`` ⊆ its ids ⊆ ``allowed``, each id once, all indexed; every file on
    disk was last read as its complete bytes (its sha256) and has no reject. When every
    write is followed by a check the two sets are equal, i.e. the ledger holds exactly
    the memories of every complete file ever seen.
    """

    ollama_url = ""
    # Restarts cost a daemon start (~1.5 s) each: at most this many per example.
    max_restarts = 3
    stats: ClassVar[Counter[str]] = Counter()

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="pd-sm-"))
        self.daemon = DaemonProcess(self.root, env=daemon_env(self.ollama_url))
        self.memdir = self.daemon.profiles_dir / PROFILE / "memory"
        self.memdir.mkdir(parents=True)
        self.ledger = LedgerView.of(self.daemon)
        self.files: dict[str, bytes] = {}
        self.allowed: set[str] = set()
        self.required: set[str] = set()
        self.restarts = 0
        try:
            self.daemon.start()
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise
        self.stats["examples"] += 1

    # -- helpers --
    def _wrote(self, name: str, data: bytes) -> None:
        self.files[name] = data
        self.allowed |= memory_ids_of(name, data)

    def _free(self, data: st.DataObject) -> str:
        return data.draw(st.sampled_from([n for n in NAMES if n not in self.files]))

    def _existing(self, data: st.DataObject) -> str:
        return data.draw(st.sampled_from(sorted(self.files)))

    def _count(self, what: str) -> None:
        self.stats[what] += 1
        self.stats["steps"] += 1

    # -- writers --
    @rule(data=st.data(), records=RECORDS)
    def create(self, data: st.DataObject, records: list[tuple[str, str]]) -> None:
        name = self._free(data)
        payload = render(name, records)
        (self.memdir / name).write_bytes(payload)
        self._wrote(name, payload)
        self._count("create")

    @rule(data=st.data(), records=RECORDS, cuts=st.lists(st.floats(0.05, 0.95), max_size=3))
    def write_in_chunks(
        self, data: st.DataObject, records: list[tuple[str, str]], cuts: list[float]
    ) -> None:
        """A slow writer (new or existing name): parts with pauses, then the close."""
        name = data.draw(st.sampled_from(NAMES))
        payload = render(name, records)
        offsets = sorted({int(c * len(payload)) for c in cuts} | {0, len(payload)})
        with open(self.memdir / name, "wb") as f:
            for start, end in itertools.pairwise(offsets):
                f.write(payload[start:end])
                f.flush()
                if end < len(payload):
                    time.sleep(CHUNK_PAUSE_S)
        self._wrote(name, payload)
        self._count("write_in_chunks")

    @rule(data=st.data(), records=RECORDS)
    def rename_into_place(self, data: st.DataObject, records: list[tuple[str, str]]) -> None:
        """Written under a temp name, then renamed over a new or an existing name."""
        name = data.draw(st.sampled_from(NAMES))
        payload = render(name, records)
        tmp = self.memdir / f".{name}.tmp"
        tmp.write_bytes(payload)
        tmp.rename(self.memdir / name)
        self._wrote(name, payload)
        self._count("rename_into_place")

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def duplicate(self, data: st.DataObject) -> None:
        """An existing file's bytes again under a new name of the same format."""
        source = self._existing(data)
        same = [n for n in NAMES if n.endswith(Path(source).suffix) and n != source]
        free = [n for n in same if n not in self.files]
        name = data.draw(st.sampled_from(free or same))
        payload = self.files[source]
        (self.memdir / name).write_bytes(payload)
        self._wrote(name, payload)
        self._count("duplicate")

    @precondition(lambda self: self.files)
    @rule(data=st.data(), records=RECORDS)
    def modify(self, data: st.DataObject, records: list[tuple[str, str]]) -> None:
        """An existing file rewritten in place (truncated, written, closed)."""
        name = self._existing(data)
        payload = render(name, records)
        (self.memdir / name).write_bytes(payload)
        self._wrote(name, payload)
        self._count("modify")

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        name = self._existing(data)
        (self.memdir / name).unlink()
        del self.files[name]
        self._count("delete")

    # -- the daemon --
    @precondition(lambda self: self.restarts < self.max_restarts)
    @rule(hard=st.booleans())
    def restart(self, hard: bool) -> None:
        """SIGKILL (hard) or SIGTERM, then a fresh start; a SIGTERM stop exits 0."""
        self.restarts += 1
        if hard:
            self.daemon.kill()
        else:
            assert self.daemon.stop(timeout=15) == 0, self.daemon.log()[-3000:]
        self.daemon.start()
        self._count("restart_kill" if hard else "restart_term")

    @rule()
    def check(self) -> None:
        self._check()
        self._count("check")

    @invariant()
    def daemon_alive(self) -> None:
        proc = self.daemon.proc
        assert proc is not None and proc.poll() is None, self.daemon.log()[-3000:]

    def teardown(self) -> None:
        try:
            if self.daemon.proc is not None and self.daemon.proc.poll() is None:
                self._check()
                self.stats["final_checks"] += 1
                assert self.daemon.stop(timeout=15) == 0, self.daemon.log()[-3000:]
        finally:
            if self.daemon.proc is not None and self.daemon.proc.poll() is None:
                self.daemon.kill()
            shutil.rmtree(self.root, ignore_errors=True)

    # -- the invariant, when quiet --
    def _check(self) -> None:
        for name, payload in self.files.items():
            self.required |= memory_ids_of(name, payload)
        want_hashes = {
            str(self.memdir / n): hashlib.sha256(p).hexdigest() for n, p in self.files.items()
        }

        def observe() -> dict[str, Any]:
            status = self.daemon.call("status", timeout=10)
            prof = status["profiles"].get(PROFILE, {})
            hashes = self.ledger.file_hashes(PROFILE)
            return {
                "queue": status["daemon"]["ingest"]["queue"],
                "ids": self.ledger.memory_ids(PROFILE),
                "indexed": prof.get("indexed", 0),
                "stale": sorted(p for p, h in want_hashes.items() if hashes.get(p) != h),
                "rejects": sorted(
                    (p, r) for p, r in self.ledger.rejects(PROFILE) if p in want_hashes
                ),
            }

        deadline = time.monotonic() + CHECK_TIMEOUT_S
        while True:
            seen = observe()
            ids = set(seen["ids"])
            quiet = (
                seen["queue"] == 0
                and self.required <= ids
                and seen["indexed"] == len(seen["ids"])
                and not seen["stale"]
            )
            if quiet or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        tail = self.daemon.log()[-3000:]
        assert seen["queue"] == 0, f"daemon not quiet in {CHECK_TIMEOUT_S}s\n{tail}"
        missing = self.required - ids
        assert not missing, f"{len(missing)} memories of complete files missing\n{tail}"
        extra = ids - self.allowed
        assert not extra, f"{len(extra)} memories of no complete file (half-written?)\n{tail}"
        dupes = [i for i, n in Counter(seen["ids"]).items() if n > 1]
        assert not dupes, f"memories stored more than once: {dupes}"
        assert seen["indexed"] == len(seen["ids"]), "index count differs from the ledger's"
        assert not seen["stale"], f"files not read as their complete bytes: {seen['stale']}"
        assert not seen["rejects"], f"rejects of complete files: {seen['rejects']}"
        self.stats["max_memories"] = max(self.stats["max_memories"], len(ids))


def run_stateful(
    max_examples: int = 5,
    steps: int = 15,
    *,
    derandomize: bool = True,
    shrink: bool = False,
) -> dict[str, Any]:
    """Run the ingest state machine; full size for the bench: max_examples=25, steps=30,
    derandomize=False.

    Up to ``steps // 5`` (at least 3) restarts per example. A failure raises with the
    failing steps; ``shrink`` minimises them first (slow: every attempt starts a daemon)."""
    started = time.monotonic()
    with fake_ollama() as fake:
        url = fake.url

        class Run(IngestMachine):
            ollama_url = url
            max_restarts = max(3, steps // 5)
            stats: ClassVar[Counter[str]] = Counter()

        run_state_machine_as_test(
            Run,
            settings=settings(
                max_examples=max_examples,
                stateful_step_count=steps,
                deadline=None,
                derandomize=derandomize,
                database=None,
                phases=[Phase.explicit, Phase.generate, *([Phase.shrink] if shrink else [])],
                suppress_health_check=[HealthCheck.too_slow],
                report_multiple_bugs=False,
            ),
        )
        stats = Run.stats
    return {
        "max_examples": max_examples,
        "steps_per_example": steps,
        "derandomize": derandomize,
        "embeddings": "fake-ollama hash embeddings",
        **dict(sorted(stats.items())),
        "seconds": round(time.monotonic() - started, 1),
    }

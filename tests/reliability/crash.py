"""Crash consistency: SIGKILL the real daemon at random moments and check its state.

A writer drops memory files continuously into one or two profiles; the daemon's
process group is killed at seeded random moments (files arriving, a big batch being
indexed, start-up repair, a training job starting, training, its evaluation gate, and
its publish), restarted, and once quiet checked against what the writer knows:
every complete file's memories are in the ledger exactly once, the Chroma index
holds exactly the ledger's ids, both SQLite files pass ``integrity_check``, no job
stays ``running``, and each profile's active model is the ledger's (old or new) and
loads.
"""

from __future__ import annotations

import contextlib
import json
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.client import ClientError
from tests.daemon_process import DaemonProcess
from tests.fakes.ollama_server import FakeOllama
from tests.reliability.crash_checks import (
    check_active_model,
    duplicates_in,
    memory_texts,
    read_index,
    read_ledger,
)
from tests.reliability.crash_writer import Writer

EMBED_MODEL = "nomic-embed-text"
# A training job of a few seconds on the tiny model, whose gate always passes (but runs its
# losses): no tag probe and no fidelity probes, whose verdicts on a random model's answers
# (stray tags in one answer more than the base's) would be chance.
TRAIN_CONFIG: dict[str, Any] = {
    "max_steps": 100,
    "num_epochs": 1,
    "batch_size": 2,
    "gradient_accumulation_steps": 1,
    "max_seq_length": 128,
    "gate": {
        "min_improvement": -0.99,
        "max_regression": 10,
        "probe_tokens": 0,
        "fidelity_probes": 0,
    },
}
JOB_PHASES = ("starting", "training", "gate", "publish")
# First guesses of each phase's length (seconds), short enough for a fast machine.
PHASE_S = {"starting": 2.0, "training": 1.0, "gate": 0.6, "publish": 2.0}
ROUND_KINDS = ("ingest", "index", "startup")
FINAL_STATES = ("succeeded", "failed", "cancelled", "interrupted", "skipped", "rejected")


@dataclass
class _Tally:
    """What the rounds found; sets so that one fault seen in many rounds counts once."""

    kills_by_phase: Counter[str] = field(default_factory=Counter)
    kills_by_target: Counter[str] = field(default_factory=Counter)
    missed_targets: Counter[str] = field(default_factory=Counter)
    lost: set[tuple[str, str]] = field(default_factory=set)
    unexpected: set[tuple[str, str]] = field(default_factory=set)
    duplicates: set[tuple[str, str]] = field(default_factory=set)
    uncurated: set[tuple[str, str]] = field(default_factory=set)
    index_mismatches: int = 0
    integrity_failures: int = 0
    stuck_jobs: set[int] = field(default_factory=set)
    unretried_jobs: set[int] = field(default_factory=set)
    active_model_failures: int = 0
    active_checks: int = 0
    active_checks_deferred: int = 0
    searches: int = 0
    search_misses: set[tuple[str, str]] = field(default_factory=set)
    stale_files: set[str] = field(default_factory=set)
    stale_rejects: set[str] = field(default_factory=set)
    job_outcomes: Counter[str] = field(default_factory=Counter)
    job_failures: list[str] = field(default_factory=list)
    published: list[str] = field(default_factory=list)
    ready_s: list[float] = field(default_factory=list)
    recover_s: list[float] = field(default_factory=list)
    round_s: list[float] = field(default_factory=list)
    cycle_s: list[float] = field(default_factory=list)
    setup_s: float = 0.0
    rounds: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        if len(self.problems) < 200:
            self.problems.append(text)


def _spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {
        "n": len(values),
        "mean": round(statistics.fmean(values), 3),
        "p50": round(ordered[len(ordered) // 2], 3),
        "max": round(ordered[-1], 3),
    }


def job_phase(job: dict[str, Any]) -> str:
    """Where a job is, from its state and live progress."""
    if job["state"] != "running":
        return str(job["state"])
    p = job.get("progress") or {}
    phase = p.get("phase")
    if phase in (None, "starting"):
        return "starting"
    if phase == "training":
        total = p.get("total_steps")
        return "gate" if total and (p.get("step") or 0) >= total else "training"
    if phase == "done":
        return "post-training"
    if phase == "publishing":
        return "publish"
    return str(phase)


class CrashHarness:
    """One run of kill rounds; see :func:`run_crash_rounds`."""

    def __init__(
        self,
        root: Path,
        seed: int,
        *,
        profiles: tuple[str, ...],
        train_phases: tuple[str, ...],
        embedder: str,
        tiny_model: Path,
        big_batch: tuple[int, int],
        writer_interval_s: tuple[float, float],
        quiet_timeout_s: float,
        job_timeout_s: float,
        progress: Callable[[str], None] | None,
    ) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.profiles = profiles
        self.train_phases = train_phases
        self.big_batch = big_batch
        self.quiet_timeout_s = quiet_timeout_s
        self.job_timeout_s = job_timeout_s
        self.progress = progress
        self.t = _Tally()
        # How long each job phase lasts, learnt from the jobs that run to their end; a
        # kill aims at a random point in the first 60% of the phase.
        self.phase_s = dict(PHASE_S)
        self.last_active: dict[str, int] = {}
        self.fake: FakeOllama | None = None
        env = {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1",  # steady training speed on a busy machine
            "ANONYMIZED_TELEMETRY": "False",
            "PERSONAD_LOG__LEVEL": "info",
            "PERSONAD_INGEST__DEBOUNCE_MS": "20",
            "PERSONAD_INGEST__SETTLE_S": "1.0",
            # Only the start-up scan may find what events missed: a loss shows.
            "PERSONAD_INGEST__RECONCILE_INTERVAL_S": "86400",
            "PERSONAD_TRIGGERS__LORA_THRESHOLD": "1000000",
            "PERSONAD_TRIGGERS__LORA_SCHEDULE": "",
            "PERSONAD_TRIGGERS__FULL_SCHEDULE": "",
            "PERSONAD_TRIGGERS__LORA_MIN_SAMPLES": "4",
            "PERSONAD_TRAINING__BASE_MODEL": str(tiny_model),
            "PERSONAD_TRAINING__FAMILY": "smollm",
            "PERSONAD_TRAINING__DEVICE": "cpu",
            "PERSONAD_TRAINING__MAX_SAMPLES": "32",
            "PERSONAD_TRAINING__STOP_GRACE_S": "1",
            "PERSONAD_TRAINING__MAX_ATTEMPTS": str(len(train_phases) + 1),
            "PERSONAD_TRAINING__CONFIG": json.dumps(TRAIN_CONFIG),
            "PERSONAD_OLLAMA__KEEP_VERSIONS": "2",
        }
        if embedder == "fake":
            self.fake = FakeOllama(
                models={EMBED_MODEL: {"capabilities": ["embedding"], "embedding_length": 32}}
            ).start()
            env["PERSONAD_INDEX__EMBEDDING_PROVIDER"] = "ollama"
            env["PERSONAD_INDEX__EMBEDDING_MODEL"] = EMBED_MODEL
            env["PERSONAD_OLLAMA__URL"] = self.fake.url
        elif embedder != "local":
            raise ValueError(f"embedder must be 'fake' or 'local', got {embedder!r}")
        self.d = DaemonProcess(root, env=env)
        if len(str(self.d.socket)) > 100:
            raise ValueError(f"{root} is too long a path for a Unix socket; use a short one")
        self.writer = Writer(self.d.profiles_dir, profiles, seed, interval_s=writer_interval_s)
        self.models_dir = self.d.state_dir / "models"

    # -- the daemon -----------------------------------------------------------------
    def _status(self) -> dict[str, Any] | None:
        try:
            return dict(self.d.call("status", timeout=5))
        except (ClientError, OSError):
            return None

    def _jobs(self) -> list[dict[str, Any]]:
        return list(self.d.call("jobs", {"limit": 50}, timeout=10)["jobs"])

    def observe(self) -> str:
        """The phase the daemon is in right now (what a kill would hit)."""
        st = self._status()
        if st is None:
            return "startup"
        for job in st["jobs"]:
            if job["state"] == "running":
                return job_phase(job)
        profiles = st["profiles"]
        if any(p["memories"] > p["indexed"] for p in profiles.values()):
            return "index"
        if st["daemon"]["ingest"]["state"] == "starting":
            return "startup"
        counted = sum(p["memories"] for p in profiles.values())
        expected = sum(len(ids) for ids in self.writer.expected.values())
        if st["daemon"]["ingest"]["queue"] or counted < expected:
            return "ingest"
        return "idle"

    def kill(self, target: str, phase: str | None = None) -> str:
        hit = phase or self.observe()
        self.d.kill()
        self.t.kills_by_phase[hit] += 1
        self.t.kills_by_target[target] += 1
        return hit

    def restart(self) -> tuple[float, float]:
        """Start the daemon, let files arrive a little longer, wait until it is quiet;
        (seconds until it answered, seconds until quiet)."""
        started = time.monotonic()
        self.d.start(wait=True, timeout=120)
        ready = time.monotonic() - started
        time.sleep(self.rng.uniform(0, 0.5))
        self.writer.pause()
        self._check_writer()
        self.wait_quiet()
        return ready, time.monotonic() - started

    def _check_writer(self) -> None:
        if self.writer.error is not None:
            raise AssertionError(f"the writer failed: {self.writer.error!r}")

    def wait_quiet(self) -> bool:
        """Until the ledger holds what was written, all indexed and the queue empty; or,
        failing that, until nothing has changed for a few seconds."""
        expected = {p: len(ids) for p, ids in self.writer.expected.items()}
        deadline = time.monotonic() + self.quiet_timeout_s
        last: Any = None
        since = time.monotonic()
        while time.monotonic() < deadline:
            st = self._status()
            if st is not None:
                ps = st["profiles"]
                counts = {p: (ps.get(p) or {}).get("memories", 0) for p in self.profiles}
                indexed = {p: (ps.get(p) or {}).get("indexed", 0) for p in self.profiles}
                ingest = st["daemon"]["ingest"]
                if (
                    counts == expected
                    and indexed == counts
                    and not ingest["queue"]
                    and ingest["state"] == "running"
                ):
                    return True
                now = (counts, indexed, ingest["queue"], ingest["files_read"])
                if now != last:
                    last, since = now, time.monotonic()
                elif (
                    time.monotonic() - since > 4.0
                    and not ingest["queue"]
                    and ingest["state"] != "starting"  # e.g. still loading the embedder
                ):
                    return False
            time.sleep(0.05)
        return False

    # -- checks ---------------------------------------------------------------------
    def check(self, label: str) -> dict[str, Any]:
        """Every invariant, against the ledger and index files, read-only."""
        t = self.t
        lv = read_ledger(self.d.state_dir / "ledger.sqlite3")
        iv = read_index(self.d.state_dir / "index", self.profiles)
        found: dict[str, Any] = {}
        if lv.integrity != "ok" or iv.integrity != "ok":
            t.integrity_failures += 1
            t.problem(f"{label}: integrity ledger={lv.integrity!r} index={iv.integrity!r}")
        dups = set(lv.duplicates)
        for p in self.profiles:
            expected = self.writer.expected[p]
            got = lv.ids.get(p, set())
            lost = expected - got
            extra = got - expected
            if lost:
                t.problem(f"{label}: {p} lost {len(lost)} memories")
            if extra:
                t.problem(f"{label}: {p} holds {len(extra)} memories of no complete file")
            t.lost.update((p, i) for i in lost)
            t.unexpected.update((p, i) for i in extra)
            index_ids = iv.ids.get(p, [])
            dups.update((p, i) for i in duplicates_in(index_ids))
            if set(index_ids) != got or lv.unindexed.get(p, 0):
                t.index_mismatches += 1
                t.problem(
                    f"{label}: {p} index holds {len(set(index_ids))}, ledger {len(got)} "
                    f"({lv.unindexed.get(p, 0)} unindexed)"
                )
            uncurated = {k for k in lv.uncurated if k[0] == p}
            if uncurated:
                t.uncurated.update(uncurated)
                t.problem(f"{label}: {p} has {len(uncurated)} memories without a sample")
            found[p] = {"expected": len(expected), "ledger": len(got), "index": len(index_ids)}
        if dups:
            t.duplicates.update(dups)
            t.problem(f"{label}: {len(dups)} memories stored more than once")
        for f in self.writer.files:
            key = str(f.path)
            if lv.files.get(key) != f.sha256:
                t.stale_files.add(key)
            if key in lv.reject_paths:
                t.stale_rejects.add(key)
        self._check_jobs(label, lv)
        self._check_active(label, lv)
        self._check_search(label)
        return found

    def _check_search(self, label: str) -> None:
        """The newest memories and a random older one are found by searching their own
        text: the index's vectors, not only its ids, survived."""
        t = self.t
        for p in self.profiles:
            files = [f for f in self.writer.files if f.profile == p]
            if not files:
                continue
            picks = [*files[-2:], self.rng.choice(files)]
            ids = [sorted(f.ids)[0] for f in picks]
            texts = memory_texts(self.d.state_dir / "ledger.sqlite3", p, ids)
            for mid in ids:
                t.searches += 1
                if mid not in texts:
                    continue  # already counted as lost
                found = self.d.call("search", {"profile": p, "query": texts[mid], "k": 5})
                if mid not in [r["id"] for r in found["results"]]:
                    t.search_misses.add((p, mid))
                    t.problem(f"{label}: {p} search for memory {mid[:12]} does not find it")

    def _check_jobs(self, label: str, lv: Any) -> None:
        t = self.t
        retried = {j.retry_of for j in lv.jobs if j.retry_of is not None}
        by_id = {j.id: j for j in lv.jobs}

        def attempts(job: Any) -> int:
            n = 1
            while job.retry_of is not None and job.retry_of in by_id:
                n, job = n + 1, by_id[job.retry_of]
            return n

        for job in lv.jobs:
            if job.state == "running" and job.id in self.running_at_kill:
                t.stuck_jobs.add(job.id)
                t.problem(f"{label}: job {job.id} still running after the restart")
            if (
                job.state == "interrupted"
                and job.id not in retried
                and attempts(job) < len(self.train_phases) + 1
            ):
                t.unretried_jobs.add(job.id)
                t.problem(f"{label}: interrupted job {job.id} was not retried")

    def _check_active(self, label: str, lv: Any) -> None:
        t = self.t
        live = {j["profile"]: job_phase(j) for j in self._jobs() if j["state"] == "running"}
        for p in self.profiles:
            if live.get(p) in ("publish", "post-training"):
                t.active_checks_deferred += 1  # mid-publish: checked when the job ends
                continue
            self._check_one_active(label, p, lv.active.get(p))

    def _check_one_active(self, label: str, profile: str, active: Any) -> None:
        t = self.t
        t.active_checks += 1
        digest = None
        if self.fake is not None:
            try:
                digest = self.fake.model(f"personad-{profile}:latest").digest
            except KeyError:
                digest = None
        problems = check_active_model(self.models_dir, profile, active, digest)
        before = self.last_active.get(profile)
        if active is not None and before is not None and active[0] < before:
            problems.append(f"{profile}: active went back from v{before} to v{active[0]}")
        if active is None and before is not None:
            problems.append(f"{profile}: active v{before} was lost")
        if problems:
            t.active_model_failures += 1
            for text in problems:
                t.problem(f"{label}: {text}")
        elif active is not None:
            self.last_active[profile] = active[0]

    # -- rounds ---------------------------------------------------------------------
    def _round(self, n: int, kind: str, body: Callable[[], str]) -> None:
        started = time.monotonic()
        self.running_at_kill: set[int] = set()
        hit = body()
        ready, recover = self.restart()
        found = self.check(f"round {n} ({kind}, hit {hit})")
        self.t.ready_s.append(ready)
        self.t.recover_s.append(recover)
        self.t.round_s.append(time.monotonic() - started)
        record = {
            "round": n,
            "target": kind,
            "hit": hit,
            "ready_s": round(ready, 3),
            "recover_s": round(recover, 3),
            "round_s": round(time.monotonic() - started, 3),
            "profiles": found,
        }
        self.t.rounds.append(record)
        if self.progress is not None:
            self.progress(json.dumps(record))

    def _note_running(self) -> None:
        with contextlib.suppress(ClientError, OSError):
            self.running_at_kill = {j["id"] for j in self._jobs() if j["state"] == "running"}

    def ingest_round(self) -> str:
        self.writer.resume()
        time.sleep(self.rng.uniform(0.3, 1.5))
        self._note_running()
        hit = self.kill("ingest")
        time.sleep(self.rng.uniform(0, 0.3))  # files keep coming while it is down
        return hit

    def index_round(self) -> str:
        self.writer.resume()
        time.sleep(self.rng.uniform(0.1, 0.5))
        before = self._status()
        base = sum(p["memories"] for p in before["profiles"].values()) if before else 0
        profile = self.rng.choice(self.profiles)
        self.writer.write_big(profile, self.rng.randint(*self.big_batch))
        if self.rng.random() < 0.5:
            time.sleep(self.rng.uniform(0, 0.6))
        else:  # the ledger has the batch: the index write is next or under way
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                st = self._status()
                if st and sum(p["memories"] for p in st["profiles"].values()) > base + 50:
                    break
                time.sleep(0.01)
            time.sleep(self.rng.uniform(0, 0.15))
        self._note_running()
        hit = self.kill("index")
        time.sleep(self.rng.uniform(0, 0.2))
        return hit

    def startup_round(self) -> str:
        self.writer.resume()
        time.sleep(self.rng.uniform(0.2, 0.8))
        self._note_running()
        self.kill("ingest")
        self.d.start(wait=False)
        time.sleep(self.rng.uniform(0.2, 2.0))
        return self.kill("startup")

    def _job(self, job_id: int) -> dict[str, Any] | None:
        return next((j for j in self._jobs() if j["id"] == job_id), None)

    def _wait_phase(self, job_id: int, target: str) -> bool | None:
        """Wait until the job is in ``target`` phase, then a random part of that phase.
        True: still in it; False: it moved on (a kill then hits a later phase); None:
        the job ended first."""
        deadline = time.monotonic() + self.job_timeout_s
        kill_at: float | None = None
        while time.monotonic() < deadline:
            job = self._job(job_id)
            if job is None or job["state"] in FINAL_STATES:
                return None
            phase = job_phase(job)
            if kill_at is None and phase == target:
                kill_at = time.monotonic() + self.rng.uniform(0, 0.6 * self.phase_s[target])
            if kill_at is not None and time.monotonic() >= kill_at:
                return phase == target
            time.sleep(0.03)
        return None

    def training_cycle(self, first_round: int, profile: str) -> int:
        """One job chain killed once per training phase, then run to its end; returns
        the rounds used."""
        self.writer.resume()
        time.sleep(0.3)
        job_id = int(self.d.call("train", {"profile": profile})["job"]["id"])
        used = 0
        for target in self.train_phases:
            self.writer.resume()
            reached = self._wait_phase(job_id, target)
            if not reached:
                self.t.missed_targets[target] += 1
            if reached is None:
                break

            def body(target: str = target) -> str:
                self._note_running()
                return self.kill(target)

            self._round(first_round + used, target, body)
            used += 1
            lv = read_ledger(self.d.state_dir / "ledger.sqlite3")
            retry = next((j for j in lv.jobs if j.retry_of == job_id), None)
            if retry is None:
                break
            job_id = retry.id
        self._finish_chain(job_id, profile)
        return used

    def _learn_phases(self, seen: dict[str, float], ended: float) -> None:
        order = sorted(seen.items(), key=lambda kv: kv[1])
        if not order:  # the job had ended before the first look: nothing to learn
            return
        for (phase, at), (_, nxt) in zip(order, [*order[1:], ("end", ended)], strict=True):
            if phase in self.phase_s:
                self.phase_s[phase] = 0.5 * self.phase_s[phase] + 0.5 * (nxt - at)

    def _finish_chain(self, job_id: int, profile: str) -> None:
        t = self.t
        self.writer.pause()
        deadline = time.monotonic() + self.job_timeout_s
        seen: dict[str, float] = {}  # phase -> when first seen
        job: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            job = self._job(job_id)
            if job is None or job["state"] in FINAL_STATES:
                break
            seen.setdefault(job_phase(job), time.monotonic())
            time.sleep(0.03)
        if job is None or job["state"] not in FINAL_STATES:
            t.stuck_jobs.add(job_id)
            t.problem(f"job {job_id} did not end in {self.job_timeout_s:.0f}s")
            return
        self._learn_phases(seen, time.monotonic())
        t.job_outcomes[job["state"]] += 1
        if job["state"] == "succeeded":
            t.published.append(f"{profile} {job['reason']}")
        else:
            t.job_failures.append(f"job {job_id} ({profile}): {job['state']}: {job['reason']}")
            t.problem(f"job {job_id} ended {job['state']}: {job['reason']}")
        lv = read_ledger(self.d.state_dir / "ledger.sqlite3")
        self._check_one_active(f"after job {job_id}", profile, lv.active.get(profile))
        release = ((job.get("result") or {}).get("release") or {}).get("version")
        if release is not None and lv.active.get(profile, (None,))[0] != release:
            t.active_model_failures += 1
            t.problem(f"job {job_id} published v{release}, active is {lv.active.get(profile)}")

    # -- the run --------------------------------------------------------------------
    def run(self, rounds: int, train_every: int) -> dict[str, Any]:
        started = time.monotonic()
        t = self.t
        self.writer.start()
        self.writer.resume()
        time.sleep(0.5)
        self.d.start(wait=True, timeout=120)
        self.writer.pause()
        self.running_at_kill = set()
        self.wait_quiet()
        self.check("initial")
        t.setup_s = time.monotonic() - started
        n = cycles = 0
        kinds: list[str] = []
        try:
            while n < rounds:
                due = train_every > 0 and n % train_every == train_every - 1
                if due and rounds - n >= len(self.train_phases):
                    profile = self.profiles[cycles % len(self.profiles)]
                    cycles += 1
                    began = time.monotonic()
                    used = self.training_cycle(n, profile)
                    t.cycle_s.append(time.monotonic() - began)
                    n += used
                    if used:
                        continue
                if not kinds:  # each kind in turn, in a seeded order
                    kinds = list(ROUND_KINDS)
                    self.rng.shuffle(kinds)
                kind = kinds.pop()
                body = {
                    "ingest": self.ingest_round,
                    "index": self.index_round,
                    "startup": self.startup_round,
                }[kind]
                self._round(n, kind, body)
                n += 1
            self.writer.stop()
            self._check_writer()
            self.wait_quiet()
            self.running_at_kill = set()
            self.check("final")
            rc = self.d.stop(timeout=60)
            if rc != 0:
                t.problem(f"the daemon's final stop returned {rc}")
            final_index = self._final_index_counts()
        finally:
            self.writer.stop()
            if self.d.proc is not None and self.d.proc.poll() is None:
                self.d.kill()
            if self.fake is not None:
                self.fake.stop()
        return self._figures(rounds, started, rc, final_index)

    def _final_index_counts(self) -> dict[str, dict[str, int]]:
        """Chroma's own count of each collection (daemon stopped) against the ledger's."""
        import chromadb
        from chromadb.config import Settings

        from services.index import collection_name

        lv = read_ledger(self.d.state_dir / "ledger.sqlite3")
        client = chromadb.PersistentClient(
            path=str(self.d.state_dir / "index"), settings=Settings(anonymized_telemetry=False)
        )
        out = {}
        for p in self.profiles:
            count = client.get_collection(collection_name(p)).count()
            out[p] = {"index": count, "ledger": len(lv.ids.get(p, set()))}
            if count != out[p]["ledger"]:
                self.t.index_mismatches += 1
                self.t.problem(f"final: {p} Chroma counts {count}, ledger {out[p]['ledger']}")
        return out

    def _figures(
        self, rounds: int, started: float, rc: int, final_index: dict[str, Any]
    ) -> dict[str, Any]:
        t = self.t
        w = self.writer
        lv = read_ledger(self.d.state_dir / "ledger.sqlite3")
        jobs = Counter(j.state for j in lv.jobs)
        return {
            "rounds": len(t.rounds),
            "rounds_asked": rounds,
            "kills": sum(t.kills_by_phase.values()),
            "kills_by_phase": dict(sorted(t.kills_by_phase.items())),
            "kills_by_target": dict(sorted(t.kills_by_target.items())),
            "missed_targets": dict(t.missed_targets),
            "files_written": w.stats.files,
            "complete_files": len(w.files),
            "files_by_format": dict(sorted(w.stats.by_format.items())),
            "files_by_method": dict(sorted(w.stats.by_method.items())),
            "big_batches": w.stats.big_batches,
            "memories_expected": sum(len(v) for v in w.expected.values()),
            "memories_in_ledger": sum(len(v) for v in lv.ids.values()),
            "losses": len(t.lost),
            "unexpected_memories": len(t.unexpected),
            "duplicates": len(t.duplicates),
            "uncurated": len(t.uncurated),
            "stale_files": len(t.stale_files),
            "stale_rejects": len(t.stale_rejects),
            "index_mismatches": t.index_mismatches,
            "searches": t.searches,
            "search_misses": len(t.search_misses),
            "final_index": final_index,
            "integrity_failures": t.integrity_failures,
            "stuck_jobs": len(t.stuck_jobs),
            "unretried_jobs": len(t.unretried_jobs),
            "jobs_by_state": dict(sorted(jobs.items())),
            "job_chain_outcomes": dict(t.job_outcomes),
            "job_failures": t.job_failures,
            "published": t.published,
            "active_model_checks": t.active_checks,
            "active_model_checks_deferred": t.active_checks_deferred,
            "active_model_failures": t.active_model_failures,
            "final_stop_rc": rc,
            "ready_s": _spread(t.ready_s),
            "recover_s": _spread(t.recover_s),
            "round_s": _spread(t.round_s),
            "training_cycle_s": _spread(t.cycle_s),
            "setup_s": round(t.setup_s, 1),
            "phase_s_learnt": {k: round(v, 2) for k, v in self.phase_s.items()},
            "seconds": round(time.monotonic() - started, 1),
            "problems": t.problems,
            "round_log": t.rounds,
        }


def run_crash_rounds(
    root: Path,
    rounds: int,
    seed: int,
    *,
    profiles: tuple[str, ...] = ("alice", "bob"),
    train_every: int = 20,
    train_phases: tuple[str, ...] = JOB_PHASES,
    embedder: str = "fake",
    tiny_model: Path | None = None,
    big_batch: tuple[int, int] = (100, 400),
    writer_interval_s: tuple[float, float] = (0.04, 0.2),
    quiet_timeout_s: float = 30.0,
    job_timeout_s: float = 240.0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Kill rounds against the real daemon; full bench: rounds=200, seed=1, train_every=20.

    ``root`` must be a short path (it holds the Unix socket). Every ``train_every``-th
    round starts a training job chain that is killed once in each of ``train_phases``
    (``starting``, ``training``, ``gate``, ``publish``), one round each, then runs to
    its end; other rounds kill during ingest, a big index write or start-up.
    ``embedder``: ``fake`` (a fake Ollama's hash embeddings; published models then go
    to that fake Ollama too) or ``local`` (all-MiniLM-L6-v2; slower restarts).
    Returns JSON-serialisable figures; ``kills_by_phase`` names what each kill hit, as
    seen just before it: ``ingest``, ``index`` (memories recorded, not yet indexed),
    ``idle`` (caught up, between two files), ``startup``, or a job's ``starting``,
    ``training``, ``gate``, ``post-training``, ``publish``.
    """
    for phase in train_phases:
        if phase not in JOB_PHASES:
            raise ValueError(f"unknown training phase {phase!r}; use {JOB_PHASES}")
    root.mkdir(parents=True, exist_ok=True)
    if tiny_model is None:
        from tests.services.training.training_helpers import build_tiny_model

        tiny_model = build_tiny_model(root / "tiny-model")
    harness = CrashHarness(
        root,
        seed,
        profiles=profiles,
        train_phases=train_phases,
        embedder=embedder,
        tiny_model=tiny_model,
        big_batch=big_batch,
        writer_interval_s=writer_interval_s,
        quiet_timeout_s=quiet_timeout_s,
        job_timeout_s=job_timeout_s,
        progress=progress,
    )
    return harness.run(rounds, train_every)

"""Ingest throughput and drop-to-searchable latency of the real daemon.

One run measures:

1. bulk ingest: a real ``personad run`` in a temp dir (training triggers and schedules
   off); ``--memories`` deterministic prompt/response memories (20-120 words each, all
   distinct) in files of 100 records (JSONL prompt/response, JSONL prompt/completion, CSV,
   alpaca JSON) are dropped into one profile's memory dir at once (each written to a temp
   name, then renamed); timed from the first drop until ``status`` shows them all indexed;
2. raw embedding: the same texts (``Memory.text``, parsed by the daemon's own parser; every
   k-th one with ``--embed-sample``) through ``LocalEmbedder`` with the daemon's batch
   size, in this process, after a warm-up, while the daemon sits idle; half of them just
   before the bulk ingest and half just after, so that a change in other load on the
   machine weighs on both figures alike. CPU seconds per memory are reported beside the
   rates, as they depend less on that load;
3. drop-to-searchable latency: with the daemon warm, single-memory files dropped at one
   per second, alternately by temp + rename and by plain write + close; for each, the
   time from the rename (or close) until a ``search`` for its text returns its id first
   (search polled every ``--poll-ms``; the latency is taken when the answer arrives).

Targets: ingest rate >= 0.8 x raw embedding rate; latency p50 <= 300 ms, p99 <= 1 s.

    .venv/bin/python bench/ingest.py [--memories 5000] [--latency-files 60] [--json-out F]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from daemon.client import ClientError, ControlClient  # noqa: E402
from services.memories import Memory, parse_bytes  # noqa: E402
from tests.daemon_process import DaemonProcess  # noqa: E402

PROFILE = "bench"
PER_FILE = 100
TARGET_RATIO = 0.8
TARGET_P50_S = 0.300
TARGET_P99_S = 1.0
STATUS_POLL_S = 0.5

# -- deterministic memories ---------------------------------------------------------------

NAMES = ["Marta", "Jonas", "my sister", "Ines", "the landlord", "Tomas", "my father", "Aiko"]
PLACES = [
    "Porto",
    "the allotment",
    "the night train",
    "Lisbon",
    "the lake house",
    "the office",
    "the harbour",
    "my grandmother's kitchen",
    "the bike shop",
    "the library",
]
TOPICS = [
    "sourdough",
    "the garden",
    "cycling",
    "chess",
    "the move",
    "my thesis",
    "the cello",
    "budgeting",
    "sleep",
    "the new job",
    "running",
    "the roof repair",
    "learning Dutch",
    "the wedding",
    "photography",
    "the dog",
    "tax returns",
    "the climbing trip",
]
QUESTIONS = [
    "What do you think about {topic} these days?",
    "How did things go with {topic} last {when}?",
    "Why did you stop talking about {topic} with {name}?",
    "Can you tell me what happened at {place} last {when}?",
    "What would you change about {topic} if you could start again?",
    "How do you usually deal with {topic} when {name} is around?",
    "What is the best advice you got about {topic}?",
    "Do you still go to {place} for {topic}?",
]
WHEN = ["week", "month", "spring", "winter", "summer", "weekend", "year", "Tuesday"]
OPENERS = [
    "Honestly,",
    "To be fair,",
    "Looking back,",
    "I think",
    "Most days",
    "Lately",
    "If I am honest,",
    "The short answer is that",
    "It depends, but",
    "Funny enough,",
]
SUBJECTS = ["I", "we", "{name}", "nobody", "everyone at {place}", "the two of us"]
VERBS = [
    "kept coming back to",
    "argued about",
    "underestimated",
    "finally figured out",
    "spent {n} hours on",
    "laughed about",
    "wrote down notes on",
    "gave up on",
    "made a plan for",
    "talked for ages about",
    "nearly forgot about",
    "changed my mind on",
]
OBJECTS = [
    "{topic}",
    "the first attempt at {topic}",
    "what {name} said about {topic}",
    "the budget of {n} euros",
    "a list of {n} small steps",
    "the old routine",
    "the way {place} smelled in the morning",
    "a mistake I made {n} times",
]
TAILS = [
    "before dinner.",
    "on the way back from {place}.",
    "without saying much.",
    "and it felt right.",
    "which surprised me.",
    "for the {nth} time.",
    "while it rained the whole day.",
    "and I would do it again.",
    "with {name} watching.",
    "even though it was late.",
    "and then we went to {place}.",
]
NTH = ["second", "third", "fourth", "fifth", "tenth", "last"]


def _fill(rng: random.Random, template: str) -> str:
    return template.format(
        name=rng.choice(NAMES),
        place=rng.choice(PLACES),
        topic=rng.choice(TOPICS),
        when=rng.choice(WHEN),
        n=rng.randint(2, 90),
        nth=rng.choice(NTH),
    )


def _sentence(rng: random.Random) -> str:
    parts = [
        rng.choice(OPENERS),
        rng.choice(SUBJECTS),
        rng.choice(VERBS),
        rng.choice(OBJECTS),
        rng.choice(TAILS),
    ]
    return _fill(rng, " ".join(parts))


def make_exchange(rng: random.Random) -> tuple[str, str]:
    """A prompt and a response whose words together number about 20-120."""
    prompt = _fill(rng, rng.choice(QUESTIONS))
    total = rng.randint(20, 120)
    want = max(8, total - len(prompt.split()))
    words: list[str] = []
    while len(words) < want:
        words += _sentence(rng).split()
    response = " ".join(words[:want]).rstrip(".,") + "."
    return prompt, response


def unique_exchanges(rng: random.Random, n: int, seen: set[str]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    while len(out) < n:
        prompt, response = make_exchange(rng)
        key = f"{prompt}\n{response}"
        if key not in seen:
            seen.add(key)
            out.append((prompt, response))
    return out


def file_bytes(kind: str, records: list[tuple[str, str]], rng: random.Random) -> bytes:
    if kind == "pr.jsonl":
        lines = [json.dumps({"prompt": p, "response": r}) for p, r in records]
        return ("\n".join(lines) + "\n").encode()
    if kind == "pc.jsonl":
        lines = [
            json.dumps({"prompt": p, "completion": r, "quality_score": rng.randint(5, 10)})
            for p, r in records
        ]
        return ("\n".join(lines) + "\n").encode()
    if kind == "pr.csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["prompt", "response"])
        writer.writerows(records)
        return buf.getvalue().encode()
    if kind == "alpaca.json":
        rows = [{"instruction": p, "input": "", "output": r} for p, r in records]
        return json.dumps(rows, indent=1).encode()
    raise ValueError(kind)


KINDS = ["pr.jsonl"] * 5 + ["pc.jsonl"] * 3 + ["pr.csv", "alpaca.json"]


def make_corpus(n: int, seed: int) -> tuple[dict[str, bytes], list[Memory]]:
    """``{file name: bytes}`` holding ``n`` distinct memories, and those memories as the
    daemon's parser reads them."""
    rng = random.Random(seed)
    seen: set[str] = set()
    files: dict[str, bytes] = {}
    memories: list[Memory] = []
    for i, start in enumerate(range(0, n, PER_FILE)):
        kind = KINDS[i % len(KINDS)]
        stem, ext = kind.split(".")
        name = f"{i:04d}-{stem}.{ext}"
        records = unique_exchanges(rng, min(PER_FILE, n - start), seen)
        data = file_bytes(kind, records, rng)
        parsed = parse_bytes(name, data)
        if parsed.problems or len(parsed.memories) != len(records):
            raise SystemExit(f"generated file {name} does not parse cleanly: {parsed.problems}")
        files[name] = data
        memories.extend(parsed.memories)
    if len({m.id for m in memories}) != n:
        raise SystemExit("generated memories are not all distinct")
    return files, memories


# -- talking to the daemon ------------------------------------------------------------------


class Client:
    """One long-lived control connection, reopened if the daemon drops it."""

    def __init__(self, d: DaemonProcess) -> None:
        self.d = d
        self.c: ControlClient | None = None

    def call(self, cmd: str, args: dict[str, Any] | None = None) -> Any:
        for attempt in (0, 1):
            if self.c is None:
                self.c = ControlClient(self.d.socket, timeout=60)
                self.c.connect()
            try:
                return self.c.call(cmd, args)
            except ClientError:
                self.close()
                if attempt:
                    raise
        return None

    def close(self) -> None:
        if self.c is not None:
            self.c.close()
            self.c = None


def profile_status(client: Client) -> dict[str, Any]:
    status = client.call("status")
    return {
        **status["profiles"].get(PROFILE, {}),
        "daemon_queue": status["daemon"]["ingest"]["queue"],
        "ingest_state": status["daemon"]["ingest"]["state"],
    }


def wait_idle(client: Client, memories: int, timeout: float = 120.0) -> dict[str, Any]:
    """Until all ``memories`` are indexed and nothing is queued."""
    deadline = time.monotonic() + timeout
    st: dict[str, Any] = {}
    while time.monotonic() < deadline:
        st = profile_status(client)
        if (
            st.get("indexed") == memories
            and st.get("memories") == memories
            and not (st["daemon_queue"])
        ):
            return st
        time.sleep(0.1)
    raise SystemExit(f"daemon did not settle in {timeout}s: {st}")


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drop_renamed(directory: Path, name: str, data: bytes) -> float:
    """Write to an ignored temp name, then rename into place; returns the rename time."""
    tmp = directory / f".{name}.tmp"
    tmp.write_bytes(data)
    t = time.perf_counter()
    os.rename(tmp, directory / name)
    return t


def drop_written(directory: Path, name: str, data: bytes) -> float:
    """Plain write then close in place; returns the close time."""
    with open(directory / name, "wb") as fh:
        fh.write(data)
        fh.flush()
        t = time.perf_counter()
    return t


# -- the three measurements -------------------------------------------------------------------


def bench_bulk(d: DaemonProcess, client: Client, files: dict[str, bytes], n: int) -> dict[str, Any]:
    memdir = d.profiles_dir / PROFILE / "memory"
    assert d.proc is not None
    cpu0 = proc_cpu_s(d.proc.pid)
    t0 = time.perf_counter()
    for name, data in files.items():
        drop_renamed(memdir, name, data)
    dropped = time.perf_counter() - t0
    polls = 0
    while True:
        st = profile_status(client)
        polls += 1
        if st.get("indexed", 0) >= n:
            elapsed = time.perf_counter() - t0
            break
        if time.perf_counter() - t0 > 900:
            raise SystemExit(f"bulk ingest did not finish in 900 s: {st}")
        # A status costs the daemon ~10 ms of ledger queries at this size: poll sparingly.
        time.sleep(STATUS_POLL_S)
    cpu = proc_cpu_s(d.proc.pid) - cpu0
    return {
        "memories": n,
        "files": len(files),
        "drop_s": round(dropped, 3),
        "seconds": round(elapsed, 3),
        "rate": round(n / elapsed, 1),
        "daemon_cpu_s": round(cpu, 2),
        "status_polls": polls,
        "status_poll_s": STATUS_POLL_S,
    }


class RawEmbedding:
    """``LocalEmbedder`` in this process, timed over one or more slices of the texts."""

    def __init__(self, batch_size: int, warmup: list[str]) -> None:
        from services.embedding import LocalEmbedder

        self.batch_size = batch_size
        self.embedder = LocalEmbedder(batch_size=batch_size)
        self.embedder.embed(warmup)  # load the model and warm up
        self.texts = 0
        self.seconds = 0.0
        self.cpu_s = 0.0
        self.daemon_cpu_s = 0.0
        self.slices: list[dict[str, Any]] = []

    def measure(self, texts: list[str], daemon_pid: int) -> dict[str, Any]:
        self.embedder.embed(texts[: self.batch_size // 4 or 1])  # warm caches again
        daemon0 = proc_cpu_s(daemon_pid)
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        vectors = self.embedder.embed(texts)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        daemon = proc_cpu_s(daemon_pid) - daemon0
        assert len(vectors) == len(texts)
        self.texts += len(texts)
        self.seconds += elapsed
        self.cpu_s += cpu
        self.daemon_cpu_s += daemon
        one = {
            "texts": len(texts),
            "seconds": round(elapsed, 3),
            "rate": round(len(texts) / elapsed, 1),
            "cpu_s": round(cpu, 2),
            "daemon_cpu_s": round(daemon, 2),
            "load_avg": loadavg(),
        }
        self.slices.append(one)
        return one

    def summary(self) -> dict[str, Any]:
        import torch

        return {
            "texts": self.texts,
            "batch_size": self.batch_size,
            "torch_threads": torch.get_num_threads(),
            "seconds": round(self.seconds, 3),
            "rate": round(self.texts / self.seconds, 1),
            "cpu_s": round(self.cpu_s, 2),
            "daemon_cpu_s_meanwhile": round(self.daemon_cpu_s, 2),
            "slices": self.slices,
        }


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def summarise(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50_ms": round(1000 * statistics.median(values), 1),
        "p90_ms": round(1000 * percentile(values, 90), 1),
        "p99_ms": round(1000 * percentile(values, 99), 1),
        "max_ms": round(1000 * max(values), 1),
        "min_ms": round(1000 * min(values), 1),
        "mean_ms": round(1000 * statistics.fmean(values), 1),
    }


def bench_latency(
    d: DaemonProcess, client: Client, count: int, seed: int, poll_s: float, timeout_s: float
) -> dict[str, Any]:
    memdir = d.profiles_dir / PROFILE / "memory"
    assert d.proc is not None
    cpu0 = proc_cpu_s(d.proc.pid)
    t_start = time.perf_counter()
    rng = random.Random(seed)
    seen: set[str] = set()
    by_mode: dict[str, list[float]] = {"rename": [], "write": []}
    searches = missed = 0
    start = time.perf_counter() + 0.5
    for i in range(count):
        prompt, response = unique_exchanges(rng, 1, seen)[0]
        prompt = f"[latency probe {i}] {prompt}"
        name = f"latency-{i:03d}.jsonl"
        data = (json.dumps({"prompt": prompt, "response": response}) + "\n").encode()
        memory = parse_bytes(name, data).memories[0]
        # One file a second, on a fixed schedule.
        time.sleep(max(0.0, start + i - time.perf_counter()))
        mode = "rename" if i % 2 == 0 else "write"
        t0 = (drop_renamed if mode == "rename" else drop_written)(memdir, name, data)
        while True:
            results = client.call("search", {"profile": PROFILE, "query": memory.text, "k": 1})
            searches += 1
            now = time.perf_counter()
            if results["results"] and results["results"][0]["id"] == memory.id:
                by_mode[mode].append(now - t0)
                break
            if now - t0 > timeout_s:
                missed += 1
                by_mode[mode].append(now - t0)
                break
            time.sleep(poll_s)
    combined = by_mode["rename"] + by_mode["write"]
    return {
        "files": count,
        "seconds": round(time.perf_counter() - t_start, 1),
        "daemon_cpu_s": round(proc_cpu_s(d.proc.pid) - cpu0, 2),
        "poll_ms": round(poll_s * 1000, 1),
        "searches": searches,
        "not_found_in_time": missed,
        "rename": summarise(by_mode["rename"]),
        "write": summarise(by_mode["write"]),
        "combined": summarise(combined),
    }


# -- the run ---------------------------------------------------------------------------------------


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--memories", type=int, default=5000)
    ap.add_argument("--latency-files", type=int, default=60)
    ap.add_argument("--poll-ms", type=float, default=10.0, help="pause between search polls")
    ap.add_argument("--batch-size", type=int, default=64, help="index.batch_size of the daemon")
    ap.add_argument(
        "--embed-sample",
        type=int,
        default=1000,
        help="raw embedding on every k-th text so that about this many are embedded "
        "(0: all); the same texts in the same order as the daemon sees them",
    )
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--json-out", type=Path, help="also write the figures here as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (daemon log, state)")
    args = ap.parse_args()

    started = time.perf_counter()
    report: dict[str, Any] = {"load_avg_start": loadavg(), "cpus": os.cpu_count()}
    print(f"load average at start: {report['load_avg_start']} ({os.cpu_count()} CPUs)")
    files, memories = make_corpus(args.memories, args.seed)
    words = [len(m.text.split()) for m in memories]
    report["corpus"] = {
        "memories": len(memories),
        "files": len(files),
        "words_min": min(words),
        "words_mean": round(statistics.fmean(words), 1),
        "words_max": max(words),
    }
    print(f"corpus: {report['corpus']}")

    root = Path(tempfile.mkdtemp(prefix="pd-bench-ingest-"))
    d = DaemonProcess(
        root,
        env={
            "PERSONAD_INDEX__BATCH_SIZE": str(args.batch_size),
            "PERSONAD_LOG__LEVEL": "info",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            # No training jobs: they would compete with ingest for the CPU.
            "PERSONAD_TRIGGERS__LORA_THRESHOLD": str(10**9),
            "PERSONAD_TRIGGERS__LORA_SCHEDULE": "",
            "PERSONAD_TRIGGERS__FULL_SCHEDULE": "",
        },
    )
    (d.profiles_dir / PROFILE / "memory").mkdir(parents=True)
    client = Client(d)
    ok = False
    try:
        t = time.perf_counter()
        d.start(timeout=180)
        # Ready means the worker has loaded the embedding model (its warm-up).
        while profile_status(client)["ingest_state"] == "starting":
            time.sleep(0.1)
        report["daemon_start_s"] = round(time.perf_counter() - t, 2)
        print(f"daemon ready in {report['daemon_start_s']} s")

        assert d.proc is not None
        # The raw embedding is timed in two halves, one just before and one just after
        # the bulk ingest, so that changes in other load on the machine weigh on both.
        texts = [m.text for m in memories]
        if 0 < args.embed_sample < len(texts):
            texts = texts[:: -(-len(texts) // args.embed_sample)]
        half = len(texts) // 2
        raw = RawEmbedding(args.batch_size, texts[: 2 * args.batch_size])
        first = raw.measure(texts[:half], d.proc.pid)
        print(f"raw embedding, first half (before the bulk): {first}")

        bulk = bench_bulk(d, client, files, len(memories))
        report["bulk_ingest"] = bulk
        print(
            f"bulk ingest: {bulk['memories']} memories in {bulk['files']} files, "
            f"{bulk['seconds']} s -> {bulk['rate']} memories/s "
            f"(daemon CPU {bulk['daemon_cpu_s']} s, load {loadavg()})"
        )
        idle = wait_idle(client, len(memories))
        if idle.get("rejects"):
            raise SystemExit(f"the daemon rejected generated memories: {idle}")

        second = raw.measure(texts[half:], d.proc.pid)
        print(f"raw embedding, second half (after the bulk): {second}")
        embed = raw.summary()
        report["raw_embedding"] = embed
        print(
            f"raw embedding: {embed['texts']} texts, batch {embed['batch_size']}, "
            f"{embed['torch_threads']} threads, {embed['seconds']} s -> {embed['rate']} texts/s "
            f"(daemon CPU meanwhile {embed['daemon_cpu_s_meanwhile']} s)"
        )
        ratio = bulk["rate"] / embed["rate"]
        report["ratio"] = round(ratio, 3)
        print(f"ingest/embed ratio: {ratio:.3f} (target >= {TARGET_RATIO})")
        # CPU seconds per memory are less sensitive to other load on the machine.
        cpu_ratio = (embed["cpu_s"] / embed["texts"]) / (bulk["daemon_cpu_s"] / bulk["memories"])
        report["cpu_ratio"] = round(cpu_ratio, 3)
        print(
            f"  CPU per memory: daemon {1000 * bulk['daemon_cpu_s'] / bulk['memories']:.1f} ms, "
            f"raw embedding {1000 * embed['cpu_s'] / embed['texts']:.1f} ms "
            f"(ratio {cpu_ratio:.3f})"
        )

        lat = bench_latency(
            d, client, args.latency_files, args.seed + 1, args.poll_ms / 1000, timeout_s=10.0
        )
        report["latency"] = lat
        for mode in ("rename", "write", "combined"):
            s = lat[mode]
            print(
                f"latency {mode:8s} n={s['n']:3d}  p50 {s['p50_ms']} ms  p90 {s['p90_ms']} ms  "
                f"p99 {s['p99_ms']} ms  max {s['max_ms']} ms"
            )
        print(f"  {lat['searches']} searches, {lat['not_found_in_time']} not found within 10 s")
        wait_idle(client, len(memories) + args.latency_files)
        jobs = client.call("status").get("jobs") or []
        if jobs:
            raise SystemExit(f"training jobs ran during the benchmark: {jobs}")
        ok = True
    finally:
        client.close()
        rc = d.stop() if d.proc is not None else 0
        if not ok:
            print(d.log()[-4000:], file=sys.stderr)
        if args.keep or not ok:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    report["daemon_exit"] = rc
    report["load_avg_end"] = loadavg()
    report["total_s"] = round(time.perf_counter() - started, 1)
    comb = report["latency"]["combined"]
    report["targets"] = {
        "ratio_ge_0.8": report["ratio"] >= TARGET_RATIO,
        "p50_le_300ms": comb["p50_ms"] <= TARGET_P50_S * 1000,
        "p99_le_1s": comb["p99_ms"] <= TARGET_P99_S * 1000,
    }
    print(f"load average at end: {report['load_avg_end']}; total {report['total_s']} s")
    print(f"targets: {report['targets']}")
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(report["targets"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

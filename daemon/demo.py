"""`personad demo`: the whole cycle on this machine, offline, in one go.

Writes a small persona (its memories, and held-out questions no memory asks as its
``probes.jsonl``), starts a daemon on it in the demo directory, and shows each step with
its time: ingest and index, search, the LoRA threshold, training, the evaluation gate
with the persona fidelity of the base and the fine-tuned model, publishing v1 to the
local registry, and an answer from the new model beside the base model's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.client import ClientError, ControlClient
from daemon.errors import DaemonError
from daemon.interrupt import Interrupted, stop_tree
from daemon.render import console, follow_job
from services import durable
from services.demo_persona import PROFILE, write_persona
from services.fidelity.summary import describe, version_fidelity
from services.jsonl import read_object
from services.personas import MAREN_PROBES, ODILE, Probe, write_memories
from services.run_prep import OWN_PROBES

QUERY = "Where does she go sailing?"
QUESTION = "What do you like to cook on Sundays?"


@dataclass(frozen=True)
class DemoPersona:
    """A persona the demo can run: its memories, its held-out probes, what it searches
    and what it asks."""

    name: str
    write: Callable[[Path], int]
    probes: list[Probe]
    query: str
    question: str
    formats: str


DEMO_PERSONAS = {
    PROFILE: DemoPersona(
        PROFILE,
        write_persona,
        MAREN_PROBES,
        QUERY,
        QUESTION,
        "4 formats (JSONL, MetaHuman events, Q&A text)",
    ),
    ODILE.name: DemoPersona(
        ODILE.name,
        lambda folder: write_memories(ODILE, folder),
        ODILE.probes,
        "Where is her workshop?",
        "What do you bake on Saturdays?",
        "2 formats (JSONL, MetaHuman events)",
    ),
}
# Interrupted: how long the daemon may drain before it and its children are killed.
STOP_GRACE_S = 1.0
# The defaults: a small profile's LoRA (services.training.config.SMALL_PROFILE).
TRAIN_CONFIG: dict[str, Any] = {}


class DemoError(DaemonError):
    pass


def _toml(value: Any) -> str:
    return json.dumps(value)  # JSON strings and numbers are valid TOML


def write_config(
    root: Path, base_model: str, family: str | None, threshold: int, train_config: dict[str, Any]
) -> Path:
    lines = [
        f"state_dir = {_toml(str(root / 'state'))}",
        f"profiles_dir = {_toml(str(root / 'profiles'))}",
        f"socket_path = {_toml(str(root / 'run' / 'personad.sock'))}",
        "[log]",
        'format = "json"',
        "[training]",
        f"base_model = {_toml(base_model)}",
        *([f"family = {_toml(family)}"] if family else []),
        "[training.config]",
        *(f"{k} = {_toml(v)}" for k, v in train_config.items()),
        "[triggers]",
        f"lora_threshold = {threshold}",
        'lora_schedule = ""',
        'full_schedule = ""',
    ]
    path = root / "personad.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class Step:
    current = "starting"  # what the step under way does (said when interrupted)

    def __init__(self, title: str, doing: str) -> None:
        self.title, self.doing = title, doing

    def __enter__(self) -> Step:
        self.started = time.monotonic()
        Step.current = self.doing
        console.print(f"[bold cyan]==>[/bold cyan] {self.title}")
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            console.print(f"    [dim]done in {time.monotonic() - self.started:.1f}s[/dim]")


def _wait(predicate: Any, timeout: float, what: str, proc: subprocess.Popen[bytes]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DemoError(f"the daemon exited ({proc.returncode}) while {what}")
        try:
            value = predicate()
        except ClientError:
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise DemoError(f"timed out after {timeout:.0f}s while {what}")


def run_demo(
    root: Path,
    *,
    base_model: str = "embedded:smollm2",
    family: str | None = None,
    train_config: dict[str, Any] | None = None,
    timeout: float = 1800.0,
    persona: str = "maren",
) -> dict[str, Any]:
    """Run the demo in ``root``; returns what it found (for scripts and tests)."""
    started = time.monotonic()
    Step.current = "starting"
    who = DEMO_PERSONAS[persona]
    root = root.resolve()
    if (root / "state").exists():
        raise DemoError(f"{root} already holds a demo; choose an empty --dir")
    root.mkdir(parents=True, exist_ok=True)
    memories = _write_persona(root, who)
    config = write_config(
        root,
        base_model,
        family,
        threshold=memories - 20,
        train_config={
            **TRAIN_CONFIG,
            "gate.fidelity_probes": len(who.probes),
            **(train_config or {}),
        },
    )
    log = open(root / "daemon.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "run", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )
    result: dict[str, Any] = {"memories": memories, "dir": str(root), "persona": who.name}
    try:
        client = ControlClient(root / "run" / "personad.sock", timeout=900)
        demo = _Demo(client, proc, who, root, config, result)
        demo.start()
        demo.ingest(memories)
        demo.search()
        demo.train()
        demo.ask()
        demo.report()
        client.close()
    except Interrupted as exc:
        # Quickly: the whole demo must end within about 2 s of the signal.
        stopped = stop_tree(proc, grace_s=STOP_GRACE_S)
        others = stopped - 1
        exc.during = f"while {Step.current}"
        exc.stopped.append(
            f"stopped its daemon (pid {proc.pid})"
            + (f" and {others} process{'es' if others != 1 else ''} it started" if others else "")
            + f"; nothing is left running; the demo directory {root} stays"
        )
        raise
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
    result["seconds"] = round(time.monotonic() - started, 1)
    console.print(
        f"[bold green]demo complete[/bold green] in {result['seconds']}s; everything is in {root}"
    )
    return result


def _write_persona(root: Path, who: DemoPersona) -> int:
    folder = root / "profiles" / who.name
    with Step(f"writing the persona '{who.name}' into {folder / 'memory'}", "writing the persona"):
        memories = who.write(folder / "memory")
        durable.write_jsonl(folder / OWN_PROBES, [p.to_dict() for p in who.probes])
        console.print(
            f"    {memories} memories in {who.formats}; {len(who.probes)} held-out questions "
            f"that no memory asks, in {folder / OWN_PROBES}"
        )
    return memories


class _Demo:
    """The demo's steps against a running daemon; each records what it found in ``result``."""

    def __init__(
        self,
        client: ControlClient,
        proc: subprocess.Popen[bytes],
        who: DemoPersona,
        root: Path,
        config: Path,
        result: dict[str, Any],
    ) -> None:
        self.client, self.proc, self.who = client, proc, who
        self.root, self.config, self.result = root, config, result

    def start(self) -> None:
        with Step("starting the daemon", "starting the daemon"):
            _wait(lambda: self.client.call("ping"), 120, "starting", self.proc)
            console.print(
                f"    pid {self.proc.pid}, socket {self.root / 'run' / 'personad.sock'}, "
                f"log {self.root / 'daemon.log'}"
            )

    def ingest(self, memories: int) -> None:
        with Step("ingesting and indexing (embedded Chroma, all-MiniLM-L6-v2)", "ingesting"):

            def indexed() -> dict[str, Any] | None:
                p = self.client.call("status")["profiles"].get(self.who.name)
                return p if p and p["indexed"] >= memories else None

            p = _wait(indexed, 300, "ingesting", self.proc)
            console.print(
                f"    {p['memories']} memories, {p['indexed']} indexed, "
                f"{p['eligible_samples']} eligible samples {p['eligible_by_mode']}"
            )

    def search(self) -> None:
        with Step(f"search: {self.who.query!r}", "searching"):
            args = {"profile": self.who.name, "query": self.who.query, "k": 3}
            hits = self.client.call("search", args)["results"]
            for h in hits:
                console.print(
                    f"    {h['score']:.3f}  {' '.join(h['text'].split())[:110]}", markup=False
                )
            self.result["search"] = hits

    def train(self) -> None:
        with Step("the LoRA threshold was crossed: training, evaluating, publishing", "training"):
            job = _wait(
                lambda: (self.client.call("jobs")["jobs"] or [None])[-1],
                120,
                "waiting for the threshold job",
                self.proc,
            )
            console.print(f"    job {job['id']} queued by {job['reason']}")
            job = follow_job(lambda: _job(self.client, job["id"]))
            self.result["job"] = job
            if job["state"] != "succeeded":
                raise DemoError(f"job {job['id']} {job['state']}: {job.get('reason')}")
            gate = read_object(Path(job["run_dir"]) / "eval.json")
            self.result["gate"] = gate
            base_loss, tuned_loss = gate_losses(gate)
            if base_loss is not None and tuned_loss is not None:
                console.print(
                    f"    held-out loss: base {base_loss:.4f} -> fine-tuned {tuned_loss:.4f}"
                )
            fidelity = version_fidelity(gate)
            self.result["fidelity"] = fidelity
            if fidelity is not None:
                console.print(f"    persona fidelity, base: {describe(fidelity['reference'])}")
                console.print(f"    persona fidelity, fine-tuned: {describe(fidelity)}")
            console.print(f"    gate: {'passed' if gate.get('passed') else 'rejected'}")
        status = self.client.call("status")["profiles"][self.who.name]
        self.result["active_version"] = status["active_version"]
        console.print(
            f"    active model: {status['active_version']} "
            f"({self.root / 'state' / 'models' / self.who.name / 'active'})"
        )

    def ask(self) -> None:
        question = self.who.question
        with Step(f"ask: {question!r} (retrieval + the new model, and the base model)", "asking"):
            args = {"profile": self.who.name, "question": question, "compare_base": True}
            answer = self.client.call("ask", args)
            for label, a in answer["answers"].items():
                who = f"{self.who.name} {label}" if label != "base" else "base model"
                console.print(f"    [bold]{who}[/bold]: {a['text'] or '(no answer)'}")
            self.result["answers"] = answer["answers"]
            self.result["question"] = question

    def report(self) -> None:
        with Step("run report", "writing the report"):
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "daemon.cli",
                    "report",
                    self.result["job"]["run_dir"],
                    "--config",
                    str(self.config),
                    "--json",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode == 0:
                self.result["report"] = json.loads(done.stdout)["png"]
                console.print(f"    loss curves and fidelity: {self.result['report']}")


def gate_losses(gate: dict[str, Any]) -> tuple[float | None, float | None]:
    """(reference, candidate) held-out loss from eval.json."""
    held = gate.get("heldout")
    if not isinstance(held, dict):
        return None, None
    ref, cand = held.get("reference"), held.get("candidate")
    return (
        float(ref) if isinstance(ref, (int, float)) else None,
        float(cand) if isinstance(cand, (int, float)) else None,
    )


def _job(client: ControlClient, job_id: int) -> dict[str, Any]:
    return dict(next(j for j in client.call("jobs")["jobs"] if j["id"] == job_id))

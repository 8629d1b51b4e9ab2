"""The control socket's commands. Each is also a `personad` subcommand."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar

from daemon.control import CommandError, Handler
from daemon.runtime import Runtime
from services.ask import AskConfig, AskError
from services.ask import ask as answer_question
from services.curation import Sample
from services.dataset_build import SCHEMA_APPLIED, select_samples
from services.durable import write_bytes, write_jsonl, write_text
from services.errors import PersonadError
from services.fidelity.summary import run_fidelity, version_fidelity
from services.ledger import Ledger
from services.publish import PublishError
from services.publish.local import LocalRegistry
from services.publish.release import rollback
from services.report import latest_report
from services.run_prep import OWN_PROBES, PROBES_FILE, fidelity_probes, new_run_dir, own_probes
from services.training.config import GateSettings

T = TypeVar("T")


@functools.cache
def package_version() -> str:
    """Read once: the metadata lookup opens files, which fails when fds run out."""
    try:
        return version("personad")
    except PackageNotFoundError:
        return "unknown"


def _str_arg(args: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = args.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise CommandError("bad_args", f"'{name}' must be a non-empty string")
    return value


def _int_arg(args: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = args.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise CommandError("bad_args", f"'{name}' must be an integer from {lo} to {hi}")
    return value


class Commands:
    """Handlers run blocking work (ledger, index) on a small thread pool; each pool
    thread has its own ledger connection."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="control")
        self._local = threading.local()
        self._ledgers: list[Ledger] = []
        self._ledgers_lock = threading.Lock()
        self._children: set[subprocess.Popen[str]] = set()
        self._children_lock = threading.Lock()

    def handlers(self) -> dict[str, Handler]:
        return {
            "ping": self.ping,
            "status": self.status,
            "search": self.search,
            "rejects": self.rejects,
            "reindex": self.reindex,
            "train": self.train,
            "jobs": self.jobs,
            "cancel": self.cancel,
            "versions": self.versions,
            "ask": self.ask,
            "rollback": self.rollback,
            "pause": self.pause,
            "resume": self.resume,
            "eval": self.eval,
        }

    def close(self) -> None:
        with self._children_lock:  # eval children end (SIGTERM): nothing waits on them
            for child in self._children:
                child.terminate()
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._ledgers_lock:
            for ledger in self._ledgers:
                ledger.close()
            self._ledgers.clear()

    def _ledger(self) -> Ledger:
        ledger = getattr(self._local, "ledger", None)
        if ledger is None:
            ledger = Ledger(self.rt.settings.ledger_path, migrate=False)
            self._local.ledger = ledger
            with self._ledgers_lock:
                self._ledgers.append(ledger)
        return ledger

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def _known_profile(self, profile: str) -> None:
        if profile not in self._ledger().profiles():
            known = ", ".join(self._ledger().profiles()) or "none yet"
            raise CommandError(
                "unknown_profile",
                f"no profile {profile!r} (known: {known}); drop memories into "
                f"{self.rt.settings.profiles / profile / 'memory'} to create it",
            )

    # -- commands ---------------------------------------------------------------
    async def ping(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"pong": True, "pid": os.getpid(), "version": package_version()}

    async def status(self, args: dict[str, Any]) -> dict[str, Any]:
        counts, stats, paused, globally, active = await self._run(
            lambda: (
                self._ledger().profile_counts(),
                self._ledger().sample_stats(),
                self._ledger().paused_profiles(),
                self._ledger().globally_paused(),
                self._ledger().active_versions(),
            )
        )
        fidelity = await self._run(lambda: self._active_fidelity(active))
        rt = self.rt
        s = rt.settings
        profiles: dict[str, Any] = {}
        for name, c in sorted(counts.items()):
            st = stats.get(name, {})
            profiles[name] = {
                "memories": c["memories"],
                "rejects": c["rejects"],
                "indexed": c["indexed"],
                "samples": c["samples"],
                "eligible_samples": c["eligible"],
                "eligible_by_mode": st.get("by_mode", {}),
                "quality": st.get("quality"),
                "since_last_training": st.get("since_last_training", 0),
                "active_version": f"v{active[name]}" if name in active else None,
                "active_fidelity": fidelity.get(name),
                "last_ingest_at": c["last_ingest_at"],
                "queue": rt.queue_depth(name),
                "paused": name in paused,
                "latest_report": latest_report(s.state_dir, name),
            }
        return {
            "daemon": {
                "pid": os.getpid(),
                "version": package_version(),
                "uptime_s": round(time.monotonic() - rt.started_monotonic, 3),
                "state": rt.state,
                "paused": globally,
                "state_dir": str(s.state_dir),
                "profiles_dir": str(s.profiles),
                "socket": str(s.socket_file),
                "config_file": str(s.config_file) if s.config_file else None,
                "ingest": rt.ingest_state().to_dict(),
            },
            "profiles": profiles,
            "jobs": await self._job_list(active_only=True),
            "schedules": rt.describe_schedules(),
        }

    async def search(self, args: dict[str, Any]) -> dict[str, Any]:
        profile = _str_arg(args, "profile")
        query = _str_arg(args, "query")
        k = _int_arg(args, "k", 5, 1, 100)
        assert profile is not None and query is not None
        index = self.rt.index
        if index is None:
            raise CommandError("unavailable", "the vector index is not available")

        def run() -> dict[str, Any]:
            self._known_profile(profile)
            hits = index.search(profile, query, k=k)
            return {
                "results": [
                    {
                        "id": h.id,
                        "score": round(float(h.score), 6),
                        "text": h.text,
                        "type": h.metadata.get("type"),
                        "mode": h.metadata.get("mode") or None,
                        "timestamp": h.metadata.get("timestamp") or None,
                        "source": h.metadata.get("source"),
                    }
                    for h in hits
                ]
            }

        return await self._run(run)

    async def rejects(self, args: dict[str, Any]) -> dict[str, Any]:
        profile = _str_arg(args, "profile", required=False)
        limit = _int_arg(args, "limit", 200, 1, 10_000)
        rows = await self._run(lambda: self._ledger().rejects(profile, limit=limit))
        return {"rejects": rows}

    async def reindex(self, args: dict[str, Any]) -> dict[str, Any]:
        profile = _str_arg(args, "profile")
        assert profile is not None
        await self._run(lambda: self._known_profile(profile))
        started = time.monotonic()
        requested = self.rt.request_reindex(profile)
        if requested is None:
            raise CommandError("unavailable", "the ingest worker is not running")
        count = await asyncio.wrap_future(requested)
        return {
            "profile": profile,
            "indexed": count,
            "seconds": round(time.monotonic() - started, 3),
        }

    # -- jobs -----------------------------------------------------------------------
    async def _job_list(self, *, active_only: bool, limit: int = 50) -> list[dict[str, Any]]:
        states = ("queued", "running") if active_only else None
        jobs = await self._run(lambda: self._ledger().jobs(states=states, limit=limit))
        supervisor = self.rt.supervisor
        live = supervisor.running() if supervisor else {}
        out = []
        for job in jobs:
            item = job.to_dict()
            item["progress"] = live.get(job.id) or job.progress
            out.append(item)
        return out

    async def train(self, args: dict[str, Any]) -> dict[str, Any]:
        profile = _str_arg(args, "profile")
        kind = args.get("kind", "lora")
        if kind not in ("lora", "full"):
            raise CommandError("bad_args", "'kind' must be 'lora' or 'full'")
        mode = args.get("mode")
        if mode is not None and mode not in ("dual", "emulation", "agent"):
            raise CommandError("bad_args", "'mode' must be dual, emulation or agent")
        preset = args.get("preset")
        if preset is not None and preset not in ("quick", "balanced", "quality"):
            raise CommandError("bad_args", "'preset' must be quick, balanced or quality")
        config = args.get("config") or {}
        if not isinstance(config, dict):
            raise CommandError("bad_args", "'config' must be an object of settings")
        assert profile is not None

        def enqueue() -> dict[str, Any]:
            self._known_profile(profile)
            job, created = self._ledger().enqueue_job(
                profile,
                kind,
                mode=mode,
                args={"preset": preset, "config": config, "force": bool(args.get("force"))},
                reason="manual",
            )
            return {"job": job.to_dict(), "created": created}

        result = await self._run(enqueue)
        self._wake_jobs()
        return result

    async def jobs(self, args: dict[str, Any]) -> dict[str, Any]:
        limit = _int_arg(args, "limit", 50, 1, 1000)
        return {"jobs": await self._job_list(active_only=False, limit=limit)}

    async def cancel(self, args: dict[str, Any]) -> dict[str, Any]:
        job_id = _int_arg(args, "job", 0, 1, 2**62)

        def cancel() -> dict[str, Any]:
            ledger = self._ledger()
            job = ledger.job(job_id)
            if job is None:
                raise CommandError("unknown_job", f"no job {job_id}")
            if ledger.cancel_queued(job_id):
                return {"job": job_id, "state": "cancelled"}
            supervisor = self.rt.supervisor
            if job.state == "running" and supervisor and supervisor.cancel(job_id):
                return {"job": job_id, "state": "cancelling"}
            raise CommandError("not_cancellable", f"job {job_id} is {job.state}")

        return await self._run(cancel)

    async def pause(self, args: dict[str, Any]) -> dict[str, Any]:
        return await self._set_paused(args, True)

    async def resume(self, args: dict[str, Any]) -> dict[str, Any]:
        result = await self._set_paused(args, False)
        self._wake_jobs()
        return result

    def _wake_jobs(self) -> None:
        if self.rt.supervisor is not None:
            self.rt.supervisor.wake()

    async def _set_paused(self, args: dict[str, Any], paused: bool) -> dict[str, Any]:
        profile = _str_arg(args, "profile", required=False)

        def apply() -> dict[str, Any]:
            if profile is not None:
                self._known_profile(profile)
            self._ledger().set_paused(profile, paused)
            return {"profile": profile, "paused": paused}

        return await self._run(apply)

    def _active_fidelity(self, active: dict[str, int]) -> dict[str, Any]:
        """Profile -> the active version's fidelity summary (from its gate verdict)."""
        out: dict[str, Any] = {}
        for profile in active:
            row = next((v for v in self._ledger().versions(profile) if v["active"]), None)
            out[profile] = run_fidelity(row.get("run_dir")) if row else None
        return out

    async def versions(self, args: dict[str, Any]) -> dict[str, Any]:
        profile = _str_arg(args, "profile")
        assert profile is not None

        def run() -> dict[str, Any]:
            self._known_profile(profile)
            versions = [
                {**v, "fidelity": run_fidelity(v.get("run_dir"))}
                for v in self._ledger().versions(profile)
            ]
            return {"profile": profile, "versions": versions}

        return await self._run(run)

    async def rollback(self, args: dict[str, Any]) -> dict[str, Any]:
        profile = _str_arg(args, "profile")
        to = args.get("to")
        if to is not None and (isinstance(to, bool) or not isinstance(to, int) or to < 1):
            raise CommandError("bad_args", "'to' must be a version number (1, 2, ...)")
        assert profile is not None and self.rt.supervisor is not None
        cfg = self.rt.supervisor.release_config()

        def run() -> dict[str, Any]:
            self._known_profile(profile)
            before = self._ledger().active_version(profile)
            try:
                now = rollback(self._ledger(), cfg, profile, to)
            except PublishError as exc:
                raise CommandError("rollback_failed", str(exc)) from exc
            return {"profile": profile, "from": before, "active": now}

        return await self._run(run)

    async def ask(self, args: dict[str, Any]) -> dict[str, Any]:
        profile = _str_arg(args, "profile")
        question = _str_arg(args, "question")
        k = _int_arg(args, "k", 4, 0, 20)
        compare = bool(args.get("compare_base"))
        assert profile is not None and question is not None
        cfg = AskConfig.from_settings(self.rt.settings)
        index = self.rt.index
        pool = self.rt.generation_pool

        def run() -> dict[str, Any]:
            self._known_profile(profile)
            try:
                return answer_question(
                    self._ledger(),
                    index,
                    cfg,
                    profile,
                    question,
                    k=k,
                    compare_base=compare,
                    pool=pool,
                )
            except AskError as exc:
                raise CommandError("ask_failed", str(exc)) from exc

        return await self._run(run)

    # -- eval -------------------------------------------------------------------------
    async def eval(self, args: dict[str, Any]) -> dict[str, Any]:
        """A published version's persona fidelity against the base model, on demand: the
        person's own probes and held-out samples, answered in a child process."""
        profile = _str_arg(args, "profile")
        number = args.get("version")
        if number is not None and (
            isinstance(number, bool) or not isinstance(number, int) or number < 1
        ):
            raise CommandError("bad_args", "'version' must be a version number (1, 2, ...)")
        assert profile is not None

        def prepare() -> _EvalRun:
            self._known_profile(profile)
            return self._prepare_eval(profile, number)

        run = await self._run(prepare)
        await self._run(self.rt.generation_pool.release)  # the child needs their memory
        fidelity = await self._run(lambda: self._run_eval(run))
        summary = version_fidelity({"fidelity": fidelity}) or {}
        return {
            "profile": profile,
            "version": f"v{run.version}",
            "run_dir": str(run.run_dir),
            "fidelity": {k: v for k, v in summary.items() if k != "passed"},
            "check": {"passed": fidelity.get("passed"), "summary": fidelity.get("summary")},
        }

    def _prepare_eval(self, profile: str, number: int | None) -> _EvalRun:
        """The version's model and base, and a new run directory holding its chat format
        and the probes (with the memories retrieval finds for each)."""
        s = self.rt.settings
        ledger = self._ledger()
        if number is None:
            number = ledger.active_version(profile)
            if number is None:
                raise CommandError(
                    "not_published", f"{profile} has no active version: nothing to evaluate"
                )
        row = next((v for v in ledger.versions(profile) if v["version"] == number), None)
        if row is None:
            known = ", ".join(f"v{v['version']}" for v in ledger.versions(profile)) or "none"
            raise CommandError(
                "not_published", f"{profile} has no version v{number} (published: {known})"
            )
        registry = LocalRegistry(s.state_dir / "models")
        try:
            model, adapter = registry.version_model(profile, number)
            info = registry.info(profile, number)
        except PublishError as exc:
            raise CommandError("not_published", str(exc)) from exc
        base = str(info.get("base") or row.get("base") or s.training.base_model)
        trained_in = row.get("run_dir") or (info.get("info") or {}).get("run_dir")
        schema = Path(trained_in) / SCHEMA_APPLIED if trained_in else None
        if schema is None or not schema.is_file():
            where = schema or "no training run recorded"
            raise CommandError(
                "eval_failed",
                f"{profile} v{number}: no {SCHEMA_APPLIED} of its training run ({where}): "
                "the chat format it was trained in is unknown",
            )
        try:
            own = own_probes(s.profiles / profile / OWN_PROBES)
        except PersonadError as exc:
            raise CommandError("eval_failed", str(exc)) from exc
        samples = [Sample.from_record(r) for r in ledger.sample_records(profile)]
        held_out = select_samples(samples, mode=None, max_samples=None)  # best first
        limit = max(_probe_limit(s.training.config), len(own))
        probes = fidelity_probes(profile, held_out, own, self.rt.retrieve, limit)
        if not probes:
            raise CommandError(
                "eval_failed",
                f"{profile} has nothing to ask: write questions into "
                f"{s.profiles / profile / OWN_PROBES} "
                '(one {"question", "reference"} per line) or add held-out conversations',
            )
        run_dir = new_run_dir(s.state_dir, profile, f"eval-v{number}")
        write_bytes(run_dir / SCHEMA_APPLIED, schema.read_bytes())
        write_jsonl(run_dir / PROBES_FILE, probes)
        return _EvalRun(profile, number, run_dir, model, adapter, base)

    def _run_eval(self, run: _EvalRun) -> dict[str, Any]:
        """The child's ``fidelity``; ``eval_failed`` with its error line when it fails."""
        s = self.rt.settings
        argv = [
            s.training.python or sys.executable,
            "-m",
            "services.training.gate.evaluate_version",
            "--run-dir",
            str(run.run_dir),
            "--model",
            run.model,
            "--base",
            run.base,
            "--cache-dir",
            str(s.state_dir / "base-models"),
            "--version",
            f"v{run.version}",
            "--device",
            s.training.device,
        ]
        if run.adapter is not None:
            argv += ["--adapter", str(run.adapter)]
        timeout = s.ask.timeout_s * 4
        with subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        ) as child:
            with self._children_lock:
                self._children.add(child)
            try:
                stdout, stderr = child.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                stdout, stderr = child.communicate()
                raise CommandError(
                    "eval_failed", f"the evaluation did not finish within {timeout:.0f}s"
                ) from None
            finally:
                with self._children_lock:
                    self._children.discard(child)
                write_text(run.run_dir / "child.stderr", stderr or "")
        try:
            out = json.loads(stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            tail = (stderr or "").strip().splitlines()[-1:] or ["no output"]
            raise CommandError(
                "eval_failed", f"the evaluation failed (exit {child.returncode}): {tail[0]}"
            ) from None
        if not isinstance(out, dict) or "error" in out or child.returncode != 0:
            error = out.get("error") if isinstance(out, dict) else None
            raise CommandError("eval_failed", str(error or f"exit {child.returncode}"))
        fidelity = out.get("fidelity")
        if not isinstance(fidelity, dict):
            raise CommandError("eval_failed", "the evaluation printed no fidelity")
        return fidelity


@dataclass(frozen=True)
class _EvalRun:
    """What ``eval`` asks its child: the version's model (and adapter), its base."""

    profile: str
    version: int
    run_dir: Path
    model: str
    adapter: Path | None
    base: str


def _probe_limit(config: dict[str, Any]) -> int:
    """``gate.fidelity_probes`` of ``training.config`` (dotted or nested), else the
    default."""
    gate = config.get("gate")
    value = config.get("gate.fidelity_probes")
    if value is None and isinstance(gate, dict):
        value = gate.get("fidelity_probes")
    if value is None:
        return GateSettings().fidelity_probes
    try:
        return GateSettings(fidelity_probes=value).fidelity_probes
    except ValueError:
        return GateSettings().fidelity_probes

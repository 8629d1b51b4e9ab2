"""The control socket's commands. Each is also a `personad` subcommand, but run_info (a
job's curves and verdict, for the dashboard; `personad report` is the people's view).
The HTTP API (daemon/http_api.py) serves the same handlers."""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar

from daemon.control import CommandError, Handler
from daemon.profile_commands import ProfileCommands
from daemon.runtime import Runtime
from daemon.train_command import queue_job, summary_context, train_request
from daemon.version_eval import EvalChildren, EvalRun, prepare_eval, run_eval
from services.ask import AskConfig, AskError
from services.ask import ask as answer_question
from services.fidelity.summary import judge_summary, run_fidelity, version_fidelity
from services.index import VectorIndexError
from services.ledger import Ledger
from services.profile_names import RULE, is_valid_profile_name
from services.profile_stats import version_name
from services.publish import PublishError
from services.publish.local import LocalRegistry
from services.publish.release import rollback
from services.report import latest_report, run_overview

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
    if name == "profile" and not is_valid_profile_name(value):
        raise CommandError("bad_args", f"invalid profile name {value!r}: {RULE}")
    return value


def _int_arg(args: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = args.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise CommandError("bad_args", f"'{name}' must be an integer from {lo} to {hi}")
    return value


class Commands(ProfileCommands):
    """Handlers run blocking work (ledger, index) on a small thread pool; each pool
    thread has its own ledger connection."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="control")
        self._local = threading.local()
        self._ledgers: list[Ledger] = []
        self._ledgers_lock = threading.Lock()
        self._eval_children = EvalChildren()

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
            "run_info": self.run_info,
            "dashboard": self.dashboard,
            "stats": self.stats,
            "remember": self.remember,
        }

    def close(self) -> None:
        self._eval_children.terminate()  # eval children end (SIGTERM): nothing waits on them
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
        def read() -> tuple[Any, ...]:
            # One moment of the ledger: ingestion writes between these reads.
            ledger = self._ledger()
            with ledger.snapshot():
                return (
                    ledger.profile_counts(),
                    ledger.sample_stats(),
                    ledger.paused_profiles(),
                    ledger.globally_paused(),
                    ledger.active_versions(),
                )

        counts, stats, paused, globally, active = await self._run(read)
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
                "http": rt.http_info(),
                "ingest": rt.ingest_state().to_dict(),
            },
            "profiles": profiles,
            "jobs": await self._job_list(active_only=True),
            "schedules": rt.describe_schedules(),
        }

    async def dashboard(self, args: dict[str, Any]) -> dict[str, Any]:
        """The dashboard's address with its token (the socket's peers only)."""
        http = self.rt.http_info()
        if http is None:
            raise CommandError("unavailable", "the HTTP server is off (http.enabled = false)")
        if http["error"]:
            raise CommandError("unavailable", f"the HTTP server is not running: {http['error']}")
        if not http["url"]:
            raise CommandError("unavailable", "the HTTP server is starting; ask again in a moment")
        return {"url": f"{http['url']}?token={self.rt.http_token()}", "address": http["url"]}

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
            try:
                hits = index.search(profile, query, k=k)
            except VectorIndexError as exc:
                raise CommandError("unavailable", f"cannot search: {exc}") from exc
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
        """Queue a job (or, with ``dry_run``, only say what it would do)."""
        req = train_request(args)
        ctx = summary_context(self.rt.settings)
        dry_run = bool(args.get("dry_run"))

        def enqueue() -> dict[str, Any]:
            self._known_profile(req.profile)
            return queue_job(self._ledger(), req, ctx, dry_run=dry_run)

        result = await self._run(enqueue)
        if not dry_run:
            self._wake_jobs()
        return result

    async def run_info(self, args: dict[str, Any]) -> dict[str, Any]:
        """A job's run: its loss curves, gate verdict and fidelity numbers."""
        job_id = _int_arg(args, "job", 0, 1, 2**62)

        def read() -> dict[str, Any]:
            job = self._ledger().job(job_id)
            if job is None:
                raise CommandError("unknown_job", f"no job {job_id}")
            if not job.run_dir:
                raise CommandError("no_run", f"job {job_id} is {job.state}: it has no run yet")
            return {"job": job_id, "state": job.state, **run_overview(Path(job.run_dir))}

        return await self._run(read)

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

        registry = LocalRegistry(self.rt.settings.state_dir / "models")

        def run() -> dict[str, Any]:
            self._known_profile(profile)
            versions = [
                {
                    **v,
                    "name": version_name(registry, profile, v),
                    "fidelity": run_fidelity(v.get("run_dir")),
                }
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

        def prepare() -> EvalRun:
            self._known_profile(profile)
            return prepare_eval(self._ledger(), self.rt.settings, self.rt.retrieve, profile, number)

        run = await self._run(prepare)
        await self._run(self.rt.generation_pool.release)  # the child needs their memory
        done = await self._run(lambda: run_eval(self.rt.settings, run, self._eval_children))
        fidelity, judged = done["fidelity"], done["fidelity_judge"]
        summary = version_fidelity({"fidelity": fidelity}) or {}
        result = {
            "profile": profile,
            "version": f"v{run.version}",
            "run_dir": str(run.run_dir),
            "fidelity": {k: v for k, v in summary.items() if k != "passed"},
            "check": {"passed": fidelity.get("passed"), "summary": fidelity.get("summary")},
        }
        if judged is not None:
            result["judge"] = judge_summary(judged)
        return result

"""The daemon process: wiring, the main loop, signals and sd_notify."""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import time
from concurrent.futures import Future
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from daemon.child import kill_orphan
from daemon.commands import Commands, package_version
from daemon.control import ControlServer
from daemon.ingest_worker import IngestWorker
from daemon.lock import InstanceLock
from daemon.notify import Notifier
from daemon.runtime import IngestState
from daemon.schedules import Schedules, Triggers
from daemon.supervisor import Supervisor
from daemon.watcher import IngestQueue, Watcher
from services.chroma_store import looks_damaged, set_aside
from services.curation import load_rules
from services.embedding import make_embedder
from services.generation_pool import WorkerPool
from services.index import VectorIndex, VectorIndexError
from services.ingest import make_curator
from services.ledger import Ledger
from services.publish.release import ReleaseConfig, align_published
from services.ray_jobs import RayJobError, check_shared_storage
from services.settings import Settings

if TYPE_CHECKING:
    from daemon.http_server import HttpServer

log = structlog.get_logger(__name__)

# How long stopping waits for the ingest worker to finish the file in hand; a file
# not finished is taken again at the next start (the ledger write is atomic).
DRAIN_TIMEOUT_S = 2.0
# Most seconds between two looks for idle generation workers.
REAP_INTERVAL_S = 30.0


class Daemon:
    """The process; to the control commands, a :class:`daemon.runtime.Runtime`."""

    def __init__(self, settings: Settings, notifier: Notifier | None = None) -> None:
        self.settings = settings
        self.notifier = notifier or Notifier(None)
        self.state = "starting"
        self.started_monotonic = time.monotonic()
        self.queue = IngestQueue(
            debounce_s=settings.ingest.debounce_ms / 1000, settle_s=settings.ingest.settle_s
        )
        self.index: VectorIndex | None = None
        self.worker: IngestWorker | None = None
        self.watcher: Watcher | None = None
        self.supervisor: Supervisor | None = None
        self.schedules: Schedules | None = None
        # Warm models for `ask`, each in a generation worker process (never in this one).
        self.generation_pool = WorkerPool(idle_timeout_s=settings.ask.idle_timeout_s)
        self.http: HttpServer | None = None
        self._stop: asyncio.Event | None = None
        self._signals = 0

    # -- what the control commands see (daemon.runtime.Runtime) ------------------------
    def queue_depth(self, profile: str | None = None) -> int:
        return self.queue.depth(profile)

    def ingest_state(self) -> IngestState:
        w = self.worker
        return IngestState(
            state=w.state if w else "stopped",
            queue=self.queue.depth(),
            files_read=w.files_done if w else 0,
            scans=w.scans_done if w else 0,
            last_error=w.last_error if w else None,
        )

    def request_reindex(self, profile: str) -> Future[int] | None:
        if self.worker is None or self.index is None:
            return None
        return self.worker.request_reindex(profile)

    def describe_schedules(self) -> list[dict[str, Any]]:
        return self.schedules.describe() if self.schedules else []

    def retrieve(self, profile: str, question: str, k: int) -> list[tuple[str, str]]:
        return self._retrieve(profile, question, k)

    def http_info(self) -> dict[str, Any] | None:
        if not self.settings.http.enabled:
            return None
        if self.http is None:  # still starting
            return {"url": None, "listen": self.settings.http.listen, "error": None}
        return self.http.info()

    def http_token(self) -> str:
        return self.http.token if self.http else ""

    def _activity(self) -> tuple[Any, ...]:
        """What the dashboard's event streams watch: cheap, in memory."""
        running = self.supervisor.running() if self.supervisor else {}
        return (self.ingest_state(), repr(sorted(running.items())))

    # -- the process ------------------------------------------------------------------
    def run(self) -> int:
        """Run in the foreground until SIGTERM/SIGINT; returns the exit status."""
        lock = InstanceLock(self.settings.state_dir / "personad.lock")
        lock.acquire()  # AlreadyRunning propagates to the CLI
        try:
            # A damaged ledger (or one newer than this code) stops start-up here, as
            # LedgerUnusable, with the file untouched; the CLI says so in one line.
            with Ledger(self.settings.ledger_path, migrate=False) as ledger:
                ledger.verify()
            return asyncio.run(self._main())
        finally:
            lock.release()

    def _make_index(self) -> VectorIndex:
        ix = self.settings.index
        if ix.embedding_provider == "ollama":
            if not self.settings.ollama.url:
                raise SystemExit("index.embedding_provider is 'ollama' but ollama.url is not set")
            embedder = make_embedder(
                "ollama",
                host=self.settings.ollama.url,
                model=ix.embedding_model,
                batch_size=ix.batch_size,
            )
        else:
            embedder = make_embedder("local", batch_size=ix.batch_size)
        if ix.chroma_url:
            return VectorIndex(url=ix.chroma_url, embedder=embedder)
        try:
            return VectorIndex(path=self.settings.index_dir, embedder=embedder)
        except VectorIndexError as exc:
            if not looks_damaged(exc):
                raise
            # The index is derived data: set it aside (kept) and rebuild it from the ledger.
            aside = set_aside(self.settings.index_dir)
            log.error(
                "the index is damaged; it was set aside and is rebuilt from the ledger",
                error=str(exc),
                set_aside=str(aside),
            )
            return VectorIndex(path=self.settings.index_dir, embedder=embedder)

    async def _main(self) -> int:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        s = self.settings
        s.state_dir.mkdir(parents=True, exist_ok=True)
        supervisor = self.supervisor = Supervisor(
            s, before_training=self._free_gpu, retrieve=self._retrieve
        )
        triggers = Triggers(s, on_queued=supervisor.wake, now=_local_now)
        if s.training.backend == "ray":
            self._check_cluster(supervisor)
        with Ledger(s.ledger_path) as ledger:  # creates and migrates
            self._recover(ledger, triggers, supervisor.release_config())
        schedules, worker, watcher = self._wire(triggers)
        commands = Commands(self)
        server = ControlServer(
            s.socket_file,
            commands.handlers(),
            allowed_uids=s.socket.allowed_uids,
            max_line_bytes=s.socket.max_line_bytes,
            read_timeout_s=s.socket.read_timeout_s,
            max_connections=s.socket.max_connections,
        )
        await server.start()
        watcher.start()
        worker.start()
        supervisor.start()
        schedules.start()
        self.state = "running"
        self.notifier.ready(f"watching {s.profiles}")
        log.info(
            "personad started",
            version=package_version(),
            pid=os.getpid(),
            state_dir=str(s.state_dir),
            socket=str(s.socket_file),
        )
        tasks = [
            asyncio.create_task(self._watchdog_pings()),
            asyncio.create_task(self._reconcile_timer()),
            asyncio.create_task(self._reap_timer()),
        ]
        if s.http.enabled:  # after READY: the HTTP server never delays the start
            tasks.append(asyncio.create_task(self._serve_http(commands)))
        try:
            await self._stop.wait()
        finally:
            self.state = "stopping"
            self.notifier.stopping("draining")
            log.info("personad stopping")
            for task in tasks:
                task.cancel()
            await server.stop()
            if self.http is not None:
                await self.http.stop()
            # No generation worker outlives the daemon; an answer in hand fails.
            await loop.run_in_executor(None, self.generation_pool.close)
            await self._drain(loop)
            commands.close()
            if self.index is not None:
                self.index.close()
            self.state = "stopped"
            log.info("personad stopped")
        return 0

    def _wire(self, triggers: Triggers) -> tuple[Schedules, IngestWorker, Watcher]:
        """The schedules, the index, the ingest worker and the watcher, not yet started."""
        s = self.settings
        self.schedules = Schedules(s, triggers)
        self.index = self._make_index()
        self.worker = IngestWorker(
            s,
            self.queue,
            self.index,
            curate=make_curator(load_rules()),
            on_ingested=triggers.after_ingest,
        )
        self.watcher = Watcher(s.profiles, self.queue, self.worker.request_scan)
        return self.schedules, self.worker, self.watcher

    async def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """Stop the schedules and the jobs, then ingest (the file in hand is finished)."""
        assert self.schedules is not None and self.supervisor is not None
        assert self.watcher is not None and self.worker is not None
        self.schedules.stop()
        await loop.run_in_executor(
            None, self.supervisor.stop, self.settings.training.stop_grace_s + 5
        )
        self.watcher.stop()
        self.worker.stop()
        await loop.run_in_executor(None, self.worker.join, DRAIN_TIMEOUT_S)

    def _recover(self, ledger: Ledger, triggers: Triggers, release: ReleaseConfig) -> None:
        """At start-up: retry the jobs a stop or crash interrupted, catch up on missed
        schedules, put the published models back in line with the ledger."""
        s = self.settings
        remote = s.training.backend == "ray"
        for old, retry in ledger.recover_interrupted(s.training.max_attempts, keep_remote=remote):
            log.warning(
                "job interrupted by a stop or crash",
                job_id=old.id,
                profile=old.profile,
                retry=retry.id if retry else None,
                orphan_killed=kill_orphan(old.pid, old.run_dir),
            )
        if remote and self.supervisor is not None:
            # Jobs still on the Ray cluster: followed again, never killed nor repeated.
            left = [j for j in ledger.jobs(states=("running",), limit=10_000) if j.remote]
            for job in left:
                log.info("re-attaching to a Ray job", job_id=job.id, remote=job.remote)
            self.supervisor.adopt(left)
        triggers.catch_up(ledger)
        try:
            align_published(ledger, release)
        except Exception:
            log.exception("cannot align the published models with the ledger")

    def _check_cluster(self, supervisor: Supervisor) -> None:
        """backend 'ray': the cluster answers and shares the state directory, or the
        daemon does not start (one line saying what is missing)."""
        try:
            check_shared_storage(
                supervisor.ray(), self.settings.state_dir, supervisor.release_config().python
            )
        except RayJobError as exc:
            raise SystemExit(f"personad: {exc}") from exc

    def _retrieve(self, profile: str, question: str, k: int) -> list[tuple[str, str]]:
        """The memories ``ask`` would retrieve (none while the index is down)."""
        if self.index is None:
            return []
        try:
            return [(h.id, h.text) for h in self.index.search(profile, question, k=k)]
        except Exception as exc:  # the gate then asks without memories
            log.warning("cannot retrieve memories for the fidelity probes", error=str(exc))
            return []

    def _free_gpu(self) -> None:
        """Before a training job: the warm generation workers and Ollama's loaded models
        give their memory back."""
        self.generation_pool.release()
        if self.settings.ollama.url:
            from services.ollama_unload import unload_all

            unload_all(self.settings.ollama.url)

    def _on_signal(self, sig: int) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("second signal: exiting at once", signal=signal.Signals(sig).name)
            os._exit(128 + sig)
        log.info("signal received: draining", signal=signal.Signals(sig).name)
        assert self._stop is not None
        self._stop.set()

    async def _serve_http(self, commands: Commands) -> None:
        """Start the HTTP API; its modules (Starlette, uvicorn) are imported off the loop."""
        loop = asyncio.get_running_loop()
        module = await loop.run_in_executor(None, importlib.import_module, "daemon.http_server")
        http = module.HttpServer(
            self.settings.http, self.settings.state_dir, commands.handlers(), self._activity
        )
        self.http = http
        await http.start()

    async def _watchdog_pings(self) -> None:
        interval = self.notifier.watchdog_interval_s
        if not interval:
            return
        while True:
            # Sent from the event loop itself: a stalled loop stops the pings and
            # systemd restarts the service.
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    async def _reap_timer(self) -> None:
        interval = min(REAP_INTERVAL_S, max(0.5, self.settings.ask.idle_timeout_s / 4))
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            try:
                await loop.run_in_executor(None, self.generation_pool.reap)
            except Exception:
                log.exception("cannot end the idle generation workers")

    async def _reconcile_timer(self) -> None:
        interval = self.settings.ingest.reconcile_interval_s
        while True:
            await asyncio.sleep(interval)
            if self.worker is not None:
                self.worker.request_scan(None)


def _local_now() -> datetime:
    return datetime.now().astimezone()

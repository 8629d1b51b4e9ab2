"""The job supervisor: runs queued training jobs, each in its own child process.

One job at a time per slot (``training.concurrent_jobs``, one per GPU), never two for
one profile. A slot claims a job, plans and prepares its run (the rules are
``services.lifecycle``'s), runs the child (:class:`daemon.child.TrainingChild`: its own
process group, a timeout, an optional memory limit, JSON-lines progress on a pipe), then
takes the gate's verdict and publishes. A crash, an out-of-memory, a hang or garbage on
the pipe fails that job, never the daemon. The ledger is the durable queue: a job the
daemon was running when it stopped is marked interrupted and retried at the next start.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from daemon.base_download import download_base
from daemon.child import MemoryLimit, Outcome, TimeLimit, TrainingChild, classify_exit
from daemon.oom_fallback import retry_cheaper, with_note
from daemon.remote_job import Detached, RemoteJob
from daemon.train_command import job_result
from services.curation import load_mode_config, load_rules
from services.errors import PersonadError
from services.fidelity.judge import judge_config
from services.job_summary import plan_for_job
from services.ledger import Job, Ledger, LedgerError
from services.lifecycle import JobPlan, judge, skip_reason
from services.persona_style import SYSTEM_FILE
from services.publish.local import LocalRegistry
from services.publish.release import ReleaseConfig, StaleBase, release
from services.ray_jobs import RayJobError, RayJobs
from services.run_prep import OWN_PROBES, Device, Retrieve, new_run_dir, prepare_training_run
from services.run_retention import tidy_after_job
from services.settings import Settings
from services.training.command import build_command, torchrun_processes

log = structlog.get_logger(__name__)

# An idle slot looks at the queue this often. Whatever queues a job in the daemon (the
# threshold, the schedules, `train`, `resume`, `cancel`) wakes the slots at once; the look
# only catches what nothing announced.
IDLE_POLL_S = 5.0

PROGRESS_EVERY_S = 1.0


@dataclass
class Running:
    job: Job
    run_dir: Path
    progress: dict[str, Any] = field(default_factory=dict)
    cancel: bool = False
    base: str | None = None
    started: float = field(default_factory=time.monotonic)


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        *,
        before_training: Callable[[], None] | None = None,
        python: str | None = None,
        retrieve: Retrieve | None = None,
    ) -> None:
        self.settings = settings
        self.before_training = before_training
        self.python = python
        self.retrieve = retrieve  # memories for the gate's fidelity probes, as ask finds them
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._running: dict[int, Running] = {}
        self._threads: list[threading.Thread] = []
        self._adopted: list[Job] = []  # Ray jobs a restart re-attaches to
        self._ray: RayJobs | None = None

    # -- control from other threads ---------------------------------------------
    def start(self) -> None:
        for slot in range(self.settings.training.concurrent_jobs):
            t = threading.Thread(target=self._slot, name=f"jobs-{slot}", daemon=True)
            t.start()
            self._threads.append(t)

    def wake(self) -> None:
        self._wake.set()

    def adopt(self, jobs: list[Job]) -> None:
        """Jobs still running on the Ray cluster from an earlier daemon: followed first."""
        with self._lock:
            self._adopted.extend(jobs)
        self._wake.set()

    def ray(self) -> RayJobs:
        if self._ray is None:
            self._ray = RayJobs(self.settings.training.ray_address or "")
        return self._ray

    def running(self) -> dict[int, dict[str, Any]]:
        with self._lock:
            return {jid: dict(r.progress) for jid, r in self._running.items()}

    def cancel(self, job_id: int) -> bool:
        """Stop a running job; False when this supervisor is not running it."""
        with self._lock:
            run = self._running.get(job_id)
            if run is None:
                return False
            run.cancel = True
        self._wake.set()
        return True

    def stop(self, timeout: float) -> None:
        """Stop every running child (it is marked interrupted) and the slots."""
        self._stopping.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    # -- the slots ----------------------------------------------------------------
    def _slot(self) -> None:
        with Ledger(self.settings.ledger_path, migrate=False) as ledger:
            while not self._stopping.is_set():
                job = self._claim(ledger)
                if job is None:
                    self._wake.wait(IDLE_POLL_S)
                    self._wake.clear()
                    continue
                try:
                    self._run(ledger, job)
                except Exception as exc:  # a bug here must not stop the queue
                    log.exception("job supervision failed", job_id=job.id)
                    with contextlib.suppress(LedgerError):
                        ledger.finish_job(
                            job.id, "failed", reason=f"internal error: {exc}", error=str(exc)
                        )
                finally:
                    with self._lock:
                        self._running.pop(job.id, None)

    def _claim(self, ledger: Ledger) -> Job | None:
        if ledger.globally_paused():
            return None
        with self._lock:
            if self._adopted:
                adopted = self._adopted.pop(0)
                self._running[adopted.id] = Running(adopted, Path(adopted.run_dir or ""))
                return adopted
            # Never two jobs of one profile at once; paused profiles wait.
            busy = {r.job.profile for r in self._running.values()} | ledger.paused_profiles()
            busy |= {j.profile for j in self._adopted}
            job = ledger.next_queued(exclude_profiles=busy)
            if job is None:
                return None
            run_dir = new_run_dir(self.settings.state_dir, job.profile, f"{job.kind}-job{job.id}")
            if not ledger.start_job(job.id, str(run_dir)):
                return None
            self._running[job.id] = Running(job, run_dir)
            return job

    def _plan(self, ledger: Ledger, job: Job) -> JobPlan:
        """What the job trains on (services.lifecycle decides; the ledger tells)."""
        return plan_for_job(
            ledger,
            job.profile,
            job.kind,
            job_id=job.id,
            original_base=self.settings.training.base_model,
            triggers=self.settings.triggers,
            everything=bool(job.args.get("all")),
            base_model=job.args.get("base_model"),
        )

    def _run(self, ledger: Ledger, job: Job) -> None:
        run = self._running[job.id]
        structlog.contextvars.bind_contextvars(profile=job.profile, job_id=job.id)
        try:
            if job.remote is not None:  # re-attached after a restart
                log.info("following the Ray job again", run_dir=str(run.run_dir))
                self._finish(ledger, job, self._reattach(ledger, job, run))
                return
            log.info("job started", kind=job.kind, mode=job.mode, run_dir=str(run.run_dir))
            self._finish(ledger, job, self._attempt(ledger, job, run))
        finally:
            structlog.contextvars.unbind_contextvars("profile", "job_id")

    def _attempt(self, ledger: Ledger, job: Job, run: Running) -> Outcome:
        """Prepare the run, train it in a child, then take the gate's verdict."""
        s = self.settings
        try:
            planned = self._plan(ledger, job)
            run.base = planned.base
            if fetched := download_base(s, ledger, run, self.python, self._stopping):
                return fetched  # a hub base that could not be downloaded
            prepared = prepare_training_run(
                ledger,
                job.profile,
                run.run_dir,
                kind=job.kind,
                base_model=planned.base,
                family=s.training.family,
                rules=load_rules(),
                mode=job.mode,
                preset=job.args.get("preset"),
                job_args={**s.training.config, **(job.args.get("config") or {})},
                max_samples=s.training.max_samples,
                samples=planned.samples,
                regression=planned.regression,
                retrieve=self.retrieve,
                probes_file=s.profiles / job.profile / OWN_PROBES,
                system_file=s.profiles / job.profile / SYSTEM_FILE,
                cache_dir=s.state_dir / "base-models",
                device=Device.of(s.training),
            )
        except (PersonadError, OSError) as exc:
            return Outcome("failed", f"cannot prepare the run: {exc}", str(exc))
        plan = {**planned.summary, "n_train": prepared.n_train, "n_eval": prepared.n_eval}
        skip = skip_reason(
            job.kind,
            job.mode,
            prepared.n_train,
            triggers=s.triggers,
            mode_minimum=lambda mode: load_mode_config(mode).thresholds("full")[0],
            force=bool(job.args.get("force")),
            required=prepared.config.config.dataset.required_samples,
            everything=bool(job.args.get("all")),
        )
        if skip is not None:
            return Outcome("skipped", skip, result={"plan": plan})
        run.progress = {"phase": "starting", "n_train": prepared.n_train}
        run.progress["plan"] = prepared.config.plan  # status shows it before the job starts
        ledger.set_progress(job.id, run.progress)
        if run.cancel or self._stopping.is_set():
            state = "cancelled" if run.cancel else "interrupted"
            return Outcome(state, "stopped before training")
        if self.before_training is not None:
            self.before_training()
        if s.training.backend == "ray":
            outcome = self._train_remote(ledger, run, plan)
        else:
            outcome = self._train(ledger, run)
            stopped = run.cancel or self._stopping.is_set()
            outcome = retry_cheaper(ledger, run, outcome, lambda: self._train(ledger, run), stopped)
        if outcome.result is not None:
            result = job_result(outcome.result, plan, prepared.n_train, run.run_dir, job.kind)
            outcome = replace(outcome, result=result)
        if outcome.state == "succeeded":
            outcome = self._accept(ledger, job, run, outcome, plan)
        return with_note(outcome)

    def _train_remote(self, ledger: Ledger, run: Running, plan: dict[str, Any]) -> Outcome:
        """The training child as a Ray job; its submission id (and the plan, to publish
        after a restart) go into the ledger before it is submitted."""
        s = self.settings
        sid = f"personad-{run.job.profile}-job{run.job.id}-{uuid.uuid4().hex[:8]}"
        remote = {"backend": "ray", "address": s.training.ray_address, "submission_id": sid}
        ledger.set_remote(run.job.id, {**remote, "plan": plan})
        try:
            self.ray().submit(
                self._command(run, None), submission_id=sid, num_gpus=s.training.ray_gpus
            )
        except RayJobError as exc:
            return Outcome("failed", f"cannot start the Ray job: {exc}", str(exc))
        log.info("Ray job submitted", submission_id=sid)
        return self._follow(ledger, run, sid)

    def _reattach(self, ledger: Ledger, job: Job, run: Running) -> Outcome:
        """A job a stopped or killed daemon left on the cluster: followed to its end and
        published, never submitted again."""
        remote = job.remote or {}
        plan = dict(remote.get("plan") or {})
        run.base = plan.get("base")
        outcome = self._follow(ledger, run, str(remote.get("submission_id")))
        if outcome.state == "succeeded":
            outcome = replace(outcome, result={**(outcome.result or {}), "plan": plan})
            outcome = self._accept(ledger, job, run, outcome, plan)
        return outcome

    def _follow(self, ledger: Ledger, run: Running, sid: str) -> Outcome:
        s = self.settings
        follower = RemoteJob(
            self.ray(),
            sid,
            run.run_dir,
            time_limit=TimeLimit(s.training.job_timeout_s, s.training.stop_grace_s),
            started=run.started,
            heartbeat_s=PROGRESS_EVERY_S,
        )

        def save_progress() -> None:
            if run.progress:
                ledger.try_set_progress(run.job.id, run.progress)

        end = follower.follow(
            run.progress,
            stop_requested=lambda: run.cancel,
            detach_requested=self._stopping.is_set,
            heartbeat=save_progress,
        )
        if isinstance(end, Detached):
            return Outcome("detached", f"left running on the Ray cluster as {sid}")
        save_progress()
        return classify_exit(
            end.returncode,
            done=end.done,
            last_error=end.last_error,
            cancelled=run.cancel,
            timed_out=end.timed_out,
            stopping=False,
        )

    def release_config(self) -> ReleaseConfig:
        s = self.settings
        return ReleaseConfig(
            models_dir=s.state_dir / "models",
            cache_dir=s.state_dir / "base-models",
            keep=s.ollama.keep_versions,
            ollama_url=s.ollama.url,
            ollama_prefix=s.ollama.prefix,
            quantize=s.ollama.quantize,
            system=s.ollama.system,
            python=self._python(),
            parameters={
                name: value
                for name in ("temperature", "top_p", "repeat_penalty")
                if (value := getattr(s.ollama, name)) is not None
            },
        )

    def _python(self) -> str:
        return self.python or self.settings.training.python or sys.executable

    def _accept(
        self, ledger: Ledger, job: Job, run: Running, outcome: Outcome, plan: dict[str, Any]
    ) -> Outcome:
        """The gate's verdict, then publishing: a rejected candidate stays in its run dir."""
        result = dict(outcome.result or {})
        verdict = judge(job.kind, result.get("metrics"))
        if verdict.rejected is not None:
            return replace(outcome, state="rejected", reason=verdict.rejected)
        if verdict.new_base:
            ledger.set_current_base(job.profile, str(run.run_dir / "model"), job.id)
        run.progress["phase"] = "publishing"
        try:
            rel = release(
                ledger,
                self.release_config(),
                profile=job.profile,
                job_id=job.id,
                kind=job.kind,
                run_dir=run.run_dir,
                plan=plan,
                name=job.args.get("name"),
            )
        except StaleBase as exc:
            return replace(outcome, state="rejected", reason=str(exc))
        except (PersonadError, OSError) as exc:
            return replace(
                outcome, state="failed", reason=f"publishing failed: {exc}", error=str(exc)
            )
        result["release"] = rel.to_dict()
        return replace(outcome, reason=f"published v{rel.version}", result=result)

    def _finish(self, ledger: Ledger, job: Job, outcome: Outcome) -> None:
        if outcome.state == "detached":  # still running on the cluster
            log.info("job left on the Ray cluster", reason=outcome.reason)
            return
        if outcome.state == "interrupted":
            # Stopped with the daemon: the retry waits in the queue for the next start.
            retry = ledger.interrupt_job(
                job, self.settings.training.max_attempts, outcome.reason, outcome.exit_code
            )
            log.info("job interrupted", reason=outcome.reason, retry=retry.id if retry else None)
            return
        with contextlib.suppress(OSError, LedgerError):  # frees space before the ledger write
            pruned = tidy_after_job(ledger, self.settings, job.id, outcome.error == "disk full")
            log.info("run weights pruned", dirs=len(pruned.dirs), freed=pruned.freed_bytes)
        ledger.finish_job(
            job.id,
            outcome.state,
            reason=outcome.reason,
            error=outcome.error,
            result=outcome.result,
            exit_code=outcome.exit_code,
        )
        event = "job succeeded" if outcome.state == "succeeded" else "job ended"
        log.info(event, state=outcome.state, reason=outcome.reason)

    def _command(self, run: Running, progress_fd: int | None) -> list[str]:
        """The training child's command line (under torchrun with that launcher)."""
        s = self.settings
        # The gate compares the candidate with the active model (else the base).
        ref_model, ref_adapter = LocalRegistry(s.state_dir / "models").serving_model(
            run.job.profile, ""
        )
        return build_command(
            run_dir=run.run_dir,
            kind=run.job.kind,
            base=run.base or s.training.base_model,
            cache_dir=s.state_dir / "base-models",
            progress_fd=progress_fd,
            device=s.training.device,
            python=self._python(),
            reference_model=ref_model or None,
            reference_adapter=ref_adapter,
            judge=judge_config(s.eval.judge_model, s.ollama.url, s.eval.judge_timeout_s),
            nproc_per_node=torchrun_processes(s.training.launcher, s.training.nproc_per_node),
        )

    def _train(self, ledger: Ledger, run: Running) -> Outcome:
        """The training child, from spawn to its outcome."""
        s = self.settings

        def command(progress_fd: int) -> list[str]:
            return self._command(run, progress_fd)

        def save_progress() -> None:
            if run.progress:
                ledger.try_set_progress(run.job.id, run.progress)

        child = TrainingChild(
            run.run_dir,
            command,
            time_limit=TimeLimit(s.training.job_timeout_s, s.training.stop_grace_s),
            memory_limit=MemoryLimit(s.training.memory_limit_mb),
            started=run.started,
            heartbeat_s=PROGRESS_EVERY_S,
        )
        pid = child.spawn()
        ledger.set_pid(run.job.id, pid)
        log.info("training process started", pid=pid)
        end = child.supervise(
            run.progress,
            stop_requested=lambda: run.cancel or self._stopping.is_set(),
            heartbeat=save_progress,
        )
        save_progress()
        return classify_exit(
            end.returncode,
            done=end.done,
            last_error=end.last_error,
            cancelled=run.cancel,
            timed_out=end.timed_out,
            stopping=self._stopping.is_set(),
        )

"""The job supervisor: runs queued training jobs, each in its own child process.

One job at a time per slot (``training.concurrent_jobs``, one per GPU), never two for
one profile. Each child runs in its own process group (so grandchildren go with it),
under a timeout and an optional memory limit, and reports JSON-lines progress on a
pipe. A crash, an out-of-memory, a hang or garbage on the pipe fails that job, never
the daemon. The ledger is the durable queue: a job the daemon was running when it
stopped is marked interrupted and retried at the next start.
"""

from __future__ import annotations

import contextlib
import os
import resource
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from services.ask import model_of
from services.curation import CurationError, Sample, load_mode_config, load_rules
from services.ledger import Job, Ledger, LedgerError
from services.lifecycle import minimum_reason, select_lora_samples
from services.publish import PublishError
from services.publish.release import ReleaseConfig, StaleBase, release
from services.run_prep import new_run_dir, prepare_training_run
from services.schemas import SchemaError
from services.settings import Settings
from services.training.command import ExitCode, build_command
from services.training.errors import TrainingError
from services.training.progress import (
    CheckpointEvent,
    DoneEvent,
    ErrorEvent,
    EvalEvent,
    ProgressParser,
    StartEvent,
    StepEvent,
)

log = structlog.get_logger(__name__)

PROGRESS_EVERY_S = 1.0
REGRESSION_MAX = 200  # held-out older samples in a run's regression set


@dataclass
class Running:
    job: Job
    run_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    cancel: bool = False
    base: str | None = None
    started: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Outcome:
    state: str
    reason: str
    error: str | None = None
    result: dict[str, Any] | None = None
    exit_code: int | None = None


def classify_exit(
    returncode: int,
    *,
    done: DoneEvent | None,
    last_error: str | None,
    cancelled: bool,
    timed_out: float | None,
    stopping: bool,
) -> Outcome:
    """How a training child ended, as a job state and a reason a person can act on."""
    detail = f": {last_error}" if last_error else ""
    if returncode == ExitCode.OK and done is not None:
        result = {"metrics": done.metrics, "artifact": done.artifact}
        return Outcome("succeeded", "trained", result=result, exit_code=0)
    if timed_out is not None:
        return Outcome(
            "failed",
            f"timed out after {timed_out:.0f}s (training.job_timeout_s)",
            "timeout",
            exit_code=returncode,
        )
    if cancelled:
        return Outcome("cancelled", "cancelled", exit_code=returncode)
    if stopping:
        return Outcome(
            "interrupted",
            "the daemon stopped while the job ran",
            "interrupted",
            exit_code=returncode,
        )
    if returncode == ExitCode.OK:
        return Outcome(
            "failed",
            "the training process ended without reporting a result",
            "no result",
            exit_code=0,
        )
    if returncode == ExitCode.BAD_INPUT:
        return Outcome("failed", f"bad input{detail}", last_error, exit_code=returncode)
    if returncode == ExitCode.OOM:
        return Outcome(
            "failed",
            f"out of memory{detail}; lower batch_size or max_seq_length, or use LoRA",
            last_error or "out of memory",
            exit_code=returncode,
        )
    if returncode == ExitCode.CANCELLED:
        return Outcome("cancelled", "the training process was stopped", exit_code=returncode)
    if returncode < 0:
        name = signal.Signals(-returncode).name
        hint = " (the kernel's out-of-memory killer?)" if returncode == -signal.SIGKILL else ""
        return Outcome(
            "failed", f"killed by {name}{hint}", f"killed by {name}", exit_code=returncode
        )
    return Outcome(
        "failed",
        f"the training process failed (exit {returncode}){detail}",
        last_error or f"exit {returncode}",
        exit_code=returncode,
    )


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        *,
        before_training: Callable[[], None] | None = None,
        python: str | None = None,
    ) -> None:
        self.settings = settings
        self.before_training = before_training
        self.python = python
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._running: dict[int, Running] = {}
        self._threads: list[threading.Thread] = []

    # -- control from other threads ---------------------------------------------
    def start(self) -> None:
        for slot in range(self.settings.training.concurrent_jobs):
            t = threading.Thread(target=self._slot, name=f"jobs-{slot}", daemon=True)
            t.start()
            self._threads.append(t)

    def wake(self) -> None:
        self._wake.set()

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
        ledger = Ledger(self.settings.ledger_path, migrate=False)
        try:
            while not self._stopping.is_set():
                job = self._claim(ledger)
                if job is None:
                    self._wake.wait(1.0)
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
        finally:
            ledger.close()

    def _claim(self, ledger: Ledger) -> Job | None:
        if ledger.globally_paused():
            return None
        with self._lock:
            # Never two jobs of one profile at once; paused profiles wait.
            busy = {r.job.profile for r in self._running.values()} | ledger.paused_profiles()
            job = ledger.next_queued(exclude_profiles=busy)
            if job is None:
                return None
            run_dir = new_run_dir(self.settings.state_dir, job.profile, f"{job.kind}-job{job.id}")
            if not ledger.start_job(job.id, str(run_dir)):
                return None
            self._running[job.id] = Running(job, run_dir)
            return job

    def _plan(
        self, ledger: Ledger, job: Job
    ) -> tuple[str, list[Sample] | None, list[Sample], dict[str, Any]]:
        """The job's base model spec, its samples (None: the whole corpus), the held-out
        older samples for the regression check, and what the lifecycle decided."""
        s = self.settings
        if job.kind == "full":
            return s.training.base_model, None, [], {"base": s.training.base_model}
        current, base_job = ledger.current_base(job.profile)
        base = current or s.training.base_model
        cut = ledger.last_training_cut(job.profile)
        new, old = ledger.sample_records_split(job.profile, cut)
        t = s.triggers
        samples, replayed = select_lora_samples(
            [Sample.from_record(r) for r in new],
            [Sample.from_record(r) for r in old],
            replay_fraction=t.replay_fraction,
            replay_max=t.replay_max,
            replay_min_quality=t.replay_min_quality,
            seed=f"job{job.id}",
        )
        plan = {"base": base, "base_job": base_job, "since": cut, "replayed": replayed}
        older = [Sample.from_record(r) for r in old if r.get("split") == "eval"]
        return base, samples, older[-REGRESSION_MAX:], plan

    def _run(self, ledger: Ledger, job: Job) -> None:
        run = self._running[job.id]
        s = self.settings
        structlog.contextvars.bind_contextvars(profile=job.profile, job_id=job.id)
        try:
            log.info("job started", kind=job.kind, mode=job.mode, run_dir=str(run.run_dir))
            try:
                base, samples, regression, plan = self._plan(ledger, job)
                run.base = base
                prepared = prepare_training_run(
                    ledger,
                    job.profile,
                    run.run_dir,
                    kind=job.kind,
                    base_model=base,
                    family=s.training.family,
                    rules=load_rules(),
                    mode=job.mode,
                    preset=job.args.get("preset"),
                    job_args={**s.training.config, **(job.args.get("config") or {})},
                    max_samples=s.training.max_samples,
                    samples=samples,
                    regression=regression,
                )
            except (CurationError, TrainingError, SchemaError, OSError) as exc:
                self._finish(
                    ledger, job, Outcome("failed", f"cannot prepare the run: {exc}", str(exc))
                )
                return
            plan["n_train"], plan["n_eval"] = prepared.n_train, prepared.n_eval
            skip = None if job.args.get("force") else self._too_little(job, prepared.n_train)
            if skip is not None:
                self._finish(ledger, job, Outcome("skipped", skip, result={"plan": plan}))
                return
            run.progress = {"phase": "starting", "n_train": prepared.n_train}
            if run.cancel or self._stopping.is_set():
                self._finish(
                    ledger,
                    job,
                    Outcome(
                        "cancelled" if run.cancel else "interrupted", "stopped before training"
                    ),
                )
                return
            if self.before_training is not None:
                self.before_training()
            outcome = self._child(ledger, run)
            if outcome.result is not None:
                outcome = replace(outcome, result={**outcome.result, "plan": plan})
            if outcome.state == "succeeded":
                outcome = self._accept(ledger, job, run, outcome, plan)
            self._finish(ledger, job, outcome)
        finally:
            structlog.contextvars.unbind_contextvars("profile", "job_id")

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
            python=self.python or s.training.python or sys.executable,
        )

    def _accept(
        self, ledger: Ledger, job: Job, run: Running, outcome: Outcome, plan: dict[str, Any]
    ) -> Outcome:
        """The gate's verdict, then publishing: a rejected candidate stays in its run dir."""
        result = dict(outcome.result or {})
        gate = (result.get("metrics") or {}).get("gate")
        if isinstance(gate, dict) and not gate.get("passed", False):
            return replace(outcome, state="rejected", reason=f"gate: {gate.get('reason')}")
        if job.kind == "full":
            # A full fine-tune becomes the profile's new base.
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
            )
        except StaleBase as exc:
            return replace(outcome, state="rejected", reason=str(exc))
        except (PublishError, TrainingError, OSError) as exc:
            return replace(
                outcome, state="failed", reason=f"publishing failed: {exc}", error=str(exc)
            )
        result["release"] = rel.to_dict()
        return replace(outcome, reason=f"published v{rel.version}", result=result)

    def _too_little(self, job: Job, n_train: int) -> str | None:
        t = self.settings.triggers
        if job.kind == "lora":
            return minimum_reason(n_train, t.lora_min_samples, "LoRA (triggers.lora_min_samples)")
        if job.mode:
            need = load_mode_config(job.mode).dataset.min_samples
            return minimum_reason(n_train, need, f"{job.mode} mode's min_samples")
        return minimum_reason(n_train, t.full_min_samples, "full (triggers.full_min_samples)")

    def _finish(self, ledger: Ledger, job: Job, outcome: Outcome) -> None:
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

    def _child(self, ledger: Ledger, run: Running) -> Outcome:
        s = self.settings
        # The gate compares the candidate with the active model (else the base).
        ref_model, ref_adapter = model_of(s.state_dir / "models", run.job.profile, "")
        read_fd, write_fd = os.pipe()
        argv = build_command(
            run_dir=run.run_dir,
            kind=run.job.kind,
            base=run.base or s.training.base_model,
            cache_dir=s.state_dir / "base-models",
            progress_fd=write_fd,
            device=s.training.device,
            python=self.python or s.training.python or sys.executable,
            reference_model=ref_model or None,
            reference_adapter=ref_adapter,
        )
        limit = s.training.memory_limit_mb

        def limits() -> None:  # in the child, before exec
            if limit:
                size = limit * 1024 * 1024
                resource.setrlimit(resource.RLIMIT_AS, (size, size))

        with open(run.run_dir / "child.stderr", "wb") as stderr:
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=stderr,
                    stderr=stderr,
                    pass_fds=(write_fd,),
                    start_new_session=True,  # its own process group
                    preexec_fn=limits if limit else None,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            finally:
                os.close(write_fd)
        run.proc = proc
        ledger.set_pid(run.job.id, proc.pid)
        log.info("training process started", pid=proc.pid)
        parser = ProgressParser()
        done: DoneEvent | None = None
        last_error: str | None = None
        timed_out: float | None = None
        signalled_at: float | None = None
        last_saved = 0.0
        deadline = run.started + s.training.job_timeout_s
        open_pipe = True
        try:
            while True:
                if open_pipe:
                    ready, _, _ = select.select([read_fd], [], [], 0.2)
                    if ready:
                        chunk = os.read(read_fd, 65536)
                        if not chunk:
                            open_pipe = False
                            events = parser.close()
                        else:
                            events = parser.feed(chunk)
                        for ev in events:
                            if isinstance(ev, DoneEvent):
                                done = ev
                            elif isinstance(ev, ErrorEvent):
                                last_error = ev.message
                            self._apply(run, ev)
                else:
                    time.sleep(0.1)
                if proc.poll() is not None and not open_pipe:
                    break
                if proc.poll() is not None and open_pipe:
                    # A grandchild may hold the pipe open: the group goes.
                    self._signal_group(proc, signal.SIGKILL)
                now = time.monotonic()
                if signalled_at is None:
                    if now > deadline:
                        timed_out = s.training.job_timeout_s
                    if run.cancel or self._stopping.is_set() or timed_out is not None:
                        log.info(
                            "stopping training process",
                            cancel=run.cancel,
                            timeout=timed_out is not None,
                        )
                        self._signal_group(proc, signal.SIGTERM)
                        signalled_at = now
                elif now - signalled_at > s.training.stop_grace_s:
                    self._signal_group(proc, signal.SIGKILL)
                if now - last_saved > PROGRESS_EVERY_S and run.progress:
                    ledger.set_progress(run.job.id, run.progress)
                    last_saved = now
        finally:
            os.close(read_fd)
            if proc.poll() is None:
                self._signal_group(proc, signal.SIGKILL)
            proc.wait()
            # Nothing of the job may outlive it.
            self._signal_group(proc, signal.SIGKILL)
        if parser.garbage or parser.oversized:
            log.warning(
                "progress lines ignored", garbage=parser.garbage, oversized=parser.oversized
            )
        if run.progress:
            ledger.set_progress(run.job.id, run.progress)
        if last_error is None and proc.returncode not in (0, None):
            last_error = _last_line(run.run_dir / "child.stderr")
        return classify_exit(
            proc.returncode,
            done=done,
            last_error=last_error,
            cancelled=run.cancel,
            timed_out=timed_out,
            stopping=self._stopping.is_set(),
        )

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    @staticmethod
    def _apply(run: Running, ev: object) -> None:
        p = run.progress
        if isinstance(ev, StartEvent):
            p.update(phase="training", step=0, total_steps=ev.total_steps)
        elif isinstance(ev, StepEvent):
            p.update(
                phase="training",
                step=ev.step,
                loss=ev.loss,
                lr=ev.lr,
                tokens_per_s=ev.tokens_per_s,
                eta_s=ev.eta_s,
            )
        elif isinstance(ev, EvalEvent):
            p.update(eval_loss=ev.eval_loss, eval_step=ev.step)
            if ev.step == 0:
                p["base_eval_loss"] = ev.eval_loss
        elif isinstance(ev, CheckpointEvent):
            p.update(checkpoint=ev.path)
        elif isinstance(ev, DoneEvent):
            p.update(phase="done", artifact=ev.artifact)
        elif isinstance(ev, ErrorEvent):
            p.update(phase="error", error=ev.message)


def kill_orphan(job: Job) -> bool:
    """A job's training process group left behind by a daemon that was killed: end it,
    if that pid still runs that job (its command line names the job's run dir)."""
    if not job.pid or not job.run_dir:
        return False
    try:
        cmdline = Path(f"/proc/{job.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if job.run_dir.encode() not in cmdline:
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(job.pid, signal.SIGKILL)
        return True
    return False


def _last_line(path: Path) -> str | None:
    try:
        data = path.read_bytes()[-4096:]
    except OSError:
        return None
    lines = [ln.strip() for ln in data.decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:500] if lines else None

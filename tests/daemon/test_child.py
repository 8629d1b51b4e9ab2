"""The training child's policies (pure), its progress and how its end is classified,
and one real child under the memory limit."""

from __future__ import annotations

import resource
import signal
import sys
from pathlib import Path

import pytest

from daemon.child import (
    MemoryLimit,
    TimeLimit,
    TrainingChild,
    apply_event,
    classify_exit,
)
from services.training.command import ExitCode
from services.training.progress import (
    CheckpointEvent,
    DoneEvent,
    ErrorEvent,
    EvalEvent,
    StartEvent,
    StepEvent,
)

# -- the time limit -----------------------------------------------------------------------


def test_within_the_time_nothing_is_done() -> None:
    limit = TimeLimit(timeout_s=60, grace_s=5)
    assert not limit.expired(60)
    assert limit.action(elapsed=60, stop_requested=False, signalled_for=None) is None


def test_a_stop_request_or_the_time_running_out_sends_sigterm() -> None:
    limit = TimeLimit(timeout_s=60, grace_s=5)
    assert limit.expired(60.1)
    assert limit.action(elapsed=60.1, stop_requested=False, signalled_for=None) == signal.SIGTERM
    assert limit.action(elapsed=1, stop_requested=True, signalled_for=None) == signal.SIGTERM


def test_sigterm_is_sent_once_then_sigkill_after_the_grace() -> None:
    limit = TimeLimit(timeout_s=60, grace_s=5)
    for stop in (False, True):
        assert limit.action(elapsed=99, stop_requested=stop, signalled_for=0.0) is None
        assert limit.action(elapsed=99, stop_requested=stop, signalled_for=5.0) is None
        assert limit.action(elapsed=99, stop_requested=stop, signalled_for=5.1) == signal.SIGKILL


# -- the memory limit ---------------------------------------------------------------------


def test_no_memory_limit_sets_nothing() -> None:
    for limit in (MemoryLimit(), MemoryLimit(None), MemoryLimit(0)):
        assert limit.rlimit() is None
        assert limit.preexec() is None


def test_a_memory_limit_is_the_address_space_in_bytes() -> None:
    limit = MemoryLimit(512)
    assert limit.rlimit() == (512 * 1024 * 1024, 512 * 1024 * 1024)
    assert limit.preexec() == limit.apply


def test_a_real_child_runs_under_the_memory_limit(tmp_path: Path) -> None:
    script = (
        "import json, os, resource, sys\n"
        "fd = int(sys.argv[1])\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_AS)\n"
        "line = {'event': 'done', 'metrics': {'rlimit_as': [soft, hard]}, 'artifact': 'a'}\n"
        "os.write(fd, (json.dumps(line) + '\\n').encode())\n"
    )
    child = TrainingChild(
        tmp_path,
        lambda fd: [sys.executable, "-c", script, str(fd)],
        time_limit=TimeLimit(timeout_s=60, grace_s=1),
        memory_limit=MemoryLimit(4096),
    )
    assert child.spawn() > 0
    progress: dict[str, object] = {}
    end = child.supervise(progress, stop_requested=lambda: False)
    assert end.returncode == 0 and end.timed_out is None and end.last_error is None
    assert end.done is not None
    assert end.done.metrics["rlimit_as"] == [4096 * 1024 * 1024] * 2
    assert progress == {"phase": "done", "artifact": "a"}
    # The daemon itself is not limited.
    assert resource.getrlimit(resource.RLIMIT_AS)[0] != 4096 * 1024 * 1024


# -- progress -----------------------------------------------------------------------------


def test_progress_events_become_the_jobs_live_progress() -> None:
    p: dict[str, object] = {"phase": "starting", "n_train": 8}
    apply_event(p, StartEvent(total_steps=4))
    assert p == {"phase": "training", "n_train": 8, "step": 0, "total_steps": 4}
    apply_event(p, EvalEvent(step=0, eval_loss=2.5))
    apply_event(p, StepEvent(step=2, loss=1.5, lr=1e-4, tokens_per_s=10.0, eta_s=3.0))
    apply_event(p, EvalEvent(step=2, eval_loss=1.25))
    apply_event(p, CheckpointEvent(step=2, path="/run/checkpoint-2"))
    assert p["base_eval_loss"] == 2.5 and p["eval_loss"] == 1.25 and p["eval_step"] == 2
    assert (p["step"], p["loss"], p["eta_s"]) == (2, 1.5, 3.0)
    assert p["checkpoint"] == "/run/checkpoint-2"
    apply_event(p, DoneEvent(metrics={}, artifact="/run/adapter"))
    assert (p["phase"], p["artifact"]) == ("done", "/run/adapter")
    apply_event(p, ErrorEvent(message="boom"))
    assert (p["phase"], p["error"]) == ("error", "boom")


# -- how it ended -------------------------------------------------------------------------


def _end(code: int, **kw: object) -> tuple[str, str]:
    args: dict = {"done": None, "last_error": None, "cancelled": False, "timed_out": None}
    args["stopping"] = False
    out = classify_exit(code, **{**args, **kw})
    return out.state, out.reason


@pytest.mark.parametrize(
    ("code", "kw", "state", "reason"),
    [
        (0, {"done": DoneEvent({}, "a")}, "succeeded", "trained"),
        (-15, {"timed_out": 3.0}, "failed", "timed out after 3s (training.job_timeout_s)"),
        (-15, {"cancelled": True}, "cancelled", "cancelled"),
        (-15, {"stopping": True}, "interrupted", "the daemon stopped while the job ran"),
        (0, {}, "failed", "the training process ended without reporting a result"),
        (ExitCode.BAD_INPUT, {"last_error": "empty"}, "failed", "bad input: empty"),
        (ExitCode.CANCELLED, {}, "cancelled", "the training process was stopped"),
        (-9, {}, "failed", "killed by SIGKILL (the kernel's out-of-memory killer?)"),
        (7, {"last_error": "x"}, "failed", "the training process failed (exit 7): x"),
    ],
)
def test_how_a_child_ended_is_classified(
    code: int, kw: dict[str, object], state: str, reason: str
) -> None:
    assert _end(code, **kw) == (state, reason)


def test_out_of_memory_says_what_to_lower() -> None:
    state, reason = _end(ExitCode.OOM, last_error="CUDA out of memory")
    assert state == "failed" and reason.startswith("out of memory: CUDA out of memory")
    assert "batch_size" in reason

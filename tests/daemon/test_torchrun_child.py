"""The supervisor owns a torchrun job's whole process tree: torchrun and every rank (each
in a session of its own) end on cancel, on a timeout and when a restarted daemon finds
them; a rank that crashes fails the job with that rank's error."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from daemon.child import TimeLimit, TrainingChild, classify_exit, kill_orphan
from services.training.command import build_command
from services.training.config import resolve_config
from tests.services.training.training_helpers import REPO, write_dataset

LONG = {  # far more steps than a test waits for (10x the 400 a fast machine ran in 30 s)
    "learning_rate": 1e-3,
    "num_epochs": 1000,  # the most a config takes
    "batch_size": 2,
    "max_seq_length": 128,
    "save_steps": 10_000,
    "eval_steps": 10_000,
}


def _run_dir(root: Path, model: Path, tokenizer: Any, kind: str = "lora") -> Path:
    run_dir = root / "run"
    write_dataset(run_dir / "fine_tune_dataset.jsonl", tokenizer, n_train=16, n_eval=4)
    resolve_config(
        base_model=model,
        kind=kind,
        n_samples=20,
        mode=None,
        preset=None,
        job_args=LONG,
        etc_dir=REPO / "etc",
    ).write(run_dir)
    return run_dir


def _command(run_dir: Path, model: Path, kind: str = "lora") -> Any:
    def command(fd: int) -> list[str]:
        return build_command(
            run_dir=run_dir,
            kind=kind,
            base=str(model),
            cache_dir=run_dir.parent / "cache",
            progress_fd=fd,
            device="cpu",
            nproc_per_node=2,
        )

    return command


def _processes(run_dir: Path) -> list[int]:
    """Live processes (not zombies) whose command line trains ``run_dir``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(run_dir).encode() in argv and state != "Z":
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _ranks(run_dir: Path) -> list[int]:
    ranks = []
    for pid in _processes(run_dir):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(v.startswith(b"LOCAL_RANK=") for v in env):
            ranks.append(pid)
    return ranks


def _supervise(child: TrainingChild, progress: dict[str, Any], stop: threading.Event) -> Any:
    child.spawn()
    return child.supervise(progress, stop_requested=stop.is_set)


def _wait(predicate: Any, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not met")


def test_cancel_mid_run_leaves_no_process_of_any_rank(
    short_tmp: Path, tiny_model: Path, tiny_tokenizer: Any
) -> None:
    run_dir = _run_dir(short_tmp, tiny_model, tiny_tokenizer)
    child = TrainingChild(run_dir, _command(run_dir, tiny_model), time_limit=TimeLimit(600, 5))
    progress: dict[str, Any] = {}
    stop = threading.Event()
    result: list[Any] = []
    t = threading.Thread(target=lambda: result.append(_supervise(child, progress, stop)))
    t.start()
    _wait(lambda: progress.get("step", 0) >= 2)
    ranks = _ranks(run_dir)
    assert len(ranks) == 2  # two ranks train, each in a session of its own
    assert all(os.getsid(pid) == pid for pid in ranks)
    stop.set()
    t.join(60)
    end = result[0]
    outcome = classify_exit(
        end.returncode,
        done=end.done,
        last_error=end.last_error,
        cancelled=True,
        timed_out=end.timed_out,
        stopping=False,
    )
    assert outcome.state == "cancelled"
    assert _processes(run_dir) == []
    assert not (run_dir / "adapter").exists()


def test_a_timeout_ends_every_rank(short_tmp: Path, tiny_model: Path, tiny_tokenizer: Any) -> None:
    run_dir = _run_dir(short_tmp, tiny_model, tiny_tokenizer, "full")
    child = TrainingChild(
        run_dir, _command(run_dir, tiny_model, "full"), time_limit=TimeLimit(30, 2)
    )
    result: list[Any] = []
    t = threading.Thread(target=lambda: result.append(_supervise(child, {}, threading.Event())))
    t.start()
    ranks = _wait(lambda: len(r := _ranks(run_dir)) == 2 and r)
    t.join(90)
    assert result[0].timed_out == 30
    assert _processes(run_dir) == []
    assert not any(_alive(pid) for pid in ranks)


SITE = """
import os
if os.environ.get("RANK") == "1":
    from services.training.distributed import DistributedRecipe

    train_step = DistributedRecipe._backward

    def fail_at_step_3(self, batches):
        if self.tally.step == 2:
            raise RuntimeError("device lost on this rank")
        return train_step(self, batches)

    DistributedRecipe._backward = fail_at_step_3
"""


def test_a_crashing_rank_fails_the_job_with_its_own_error(
    short_tmp: Path, tiny_model: Path, tiny_tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rank 1 alone fails in its third step (a sitecustomize only its process acts on).
    site = short_tmp / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE)
    monkeypatch.setenv("PYTHONPATH", f"{site}{os.pathsep}{REPO}")
    run_dir = _run_dir(short_tmp, tiny_model, tiny_tokenizer)
    child = TrainingChild(run_dir, _command(run_dir, tiny_model), time_limit=TimeLimit(300, 5))
    end = _supervise(child, {}, threading.Event())
    outcome = classify_exit(
        end.returncode,
        done=end.done,
        last_error=end.last_error,
        cancelled=False,
        timed_out=None,
        stopping=False,
    )
    assert outcome.state == "failed"
    assert outcome.reason.endswith("rank 1: RuntimeError: device lost on this rank"), outcome
    assert _processes(run_dir) == []


def test_a_restarted_daemon_ends_every_rank_of_a_job_it_left(
    short_tmp: Path, tiny_model: Path, tiny_tokenizer: Any
) -> None:
    """The daemon was SIGKILLed: torchrun and its ranks ran on; the next start finds the
    job's pid and run dir in the ledger and ends them all."""
    run_dir = _run_dir(short_tmp, tiny_model, tiny_tokenizer)
    log = open(short_tmp / "out", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        _command(run_dir, tiny_model)(1),
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait(lambda: len(_ranks(run_dir)) == 2 and (run_dir / "progress.jsonl").exists())
        assert kill_orphan(proc.pid, str(run_dir))
        proc.wait(30)
        _wait(lambda: _processes(run_dir) == [], timeout=30)
    finally:
        log.close()
        if proc.poll() is None:
            proc.kill()

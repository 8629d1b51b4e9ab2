"""Warm generation workers (``services.generation_worker``, ``services.generation_pool``):
real ``python -m services.generation --serve`` processes on the tiny model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.generation_pool import WorkerPool
from services.generation_worker import AskError, GenerationWorker, WorkerSpec
from tests.services.training.training_helpers import REPO, conversation

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def prompt_of(tokenizer: Any, i: int) -> str:
    return str(
        tokenizer.apply_chat_template(
            conversation(i)[:-1], tokenize=False, add_generation_prompt=True
        )
    )


def one_shot(model: Path, prompt: str, tmp_path: Path, *extra: str) -> dict[str, Any]:
    """What the one-shot command prints for ``prompt``."""
    prompt_file = tmp_path / f"prompt-{abs(hash(prompt))}.txt"
    prompt_file.write_text(prompt)
    argv = [sys.executable, "-m", "services.generation", "--model", str(model)]
    argv += ["--cache-dir", str(model.parent / "cache"), "--prompt-file", str(prompt_file)]
    done = subprocess.run(
        [*argv, *extra], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(json.loads(done.stdout))


def ended(pid: int) -> bool:
    """The worker (a child of this process) has exited: it is reaped, or waitable (all of
    its threads are gone, not just the main one)."""
    try:
        found = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # reaped already
        return not Path(f"/proc/{pid}").exists()
    return found is not None


def spec_of(model: Path) -> WorkerSpec:
    return WorkerSpec(model=str(model), cache_dir=model.parent / "cache", env=ENV)


@pytest.fixture
def pool() -> Iterator[WorkerPool]:
    p = WorkerPool(idle_timeout_s=3600)
    yield p
    p.close()


def test_a_worker_answers_two_prompts_from_one_process_as_the_one_shot_command_does(
    tmp_path: Path, tiny_model: Path, tiny_tokenizer: Any
) -> None:
    prompts = [prompt_of(tiny_tokenizer, 1), prompt_of(tiny_tokenizer, 2)]
    worker = GenerationWorker(spec_of(tiny_model))
    try:
        ready = worker.wait_ready(180)
        assert ready["ready"] is True and ready["model"] == str(tiny_model)
        pid = worker.pid
        answers = [
            worker.generate(p, max_new_tokens=12, no_repeat_ngram=3, timeout=180) for p in prompts
        ]
        assert worker.pid == pid and worker.alive
    finally:
        worker.close()
    assert ended(pid)
    for prompt, (text, stopped) in zip(prompts, answers, strict=True):
        # Greedy decoding: the same answer, one process for all or one per answer.
        want = one_shot(
            tiny_model, prompt, tmp_path, "--max-new-tokens", "12", "--no-repeat-ngram", "3"
        )
        assert {"text": text, "stopped": stopped} == want and text


def test_stop_strings_end_the_answer_and_stopped_says_so(
    tiny_model: Path, tiny_tokenizer: Any, pool: WorkerPool
) -> None:
    spec = spec_of(tiny_model)
    prompt = prompt_of(tiny_tokenizer, 3)
    free = pool.generate(spec, prompt, max_new_tokens=16, timeout=180)
    assert free.stopped is False and len(free.text) > 6  # ran out of tokens
    assert free.warm is False  # this answer loaded the model
    stop = free.text[4:6]
    cut = pool.generate(spec, prompt, max_new_tokens=16, stop=["never said", stop], timeout=180)
    assert (cut.text, cut.stopped, cut.warm) == (free.text[: free.text.index(stop)], True, True)
    assert len(pool.pids()) == 1


def test_reap_ends_a_worker_idle_past_the_timeout_and_release_ends_all(
    tiny_model: Path, tiny_tokenizer: Any
) -> None:
    pool = WorkerPool(idle_timeout_s=60)
    try:
        spec = spec_of(tiny_model)
        pool.generate(spec, "hello", max_new_tokens=2, timeout=180)
        (pid,) = pool.pids()
        assert pool.reap() == 0 and pool.pids() == [pid]  # not idle long enough
        assert pool.reap(now=time.monotonic() + 61) == 1
        assert pool.pids() == [] and ended(pid)

        pool.generate(spec, "hello", max_new_tokens=2, timeout=180)
        (pid,) = pool.pids()
        assert pool.release() == 1
        assert pool.pids() == [] and ended(pid)
        # The pool still answers after a release (a new worker).
        again = pool.generate(spec, "hello", max_new_tokens=2, timeout=180)
        assert again.warm is False and pool.pids() not in ([], [pid])
    finally:
        pool.close()
    assert pool.pids() == []
    with pytest.raises(AskError, match="closed"):
        pool.generate(spec, "hello", max_new_tokens=2, timeout=180)


def test_a_killed_worker_is_replaced_at_the_next_request(
    tiny_model: Path, tiny_tokenizer: Any, pool: WorkerPool
) -> None:
    spec = spec_of(tiny_model)
    prompt = prompt_of(tiny_tokenizer, 4)
    first = pool.generate(spec, prompt, max_new_tokens=8, timeout=180)
    (pid,) = pool.pids()
    os.killpg(pid, signal.SIGKILL)  # an OOM kill, say
    deadline = time.monotonic() + 30
    while not ended(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    second = pool.generate(spec, prompt, max_new_tokens=8, timeout=180)
    assert (second.text, second.stopped) == (first.text, first.stopped)
    assert second.warm is False
    (new_pid,) = pool.pids()
    assert new_pid != pid and ended(pid)


def test_one_warm_worker_per_model_and_the_least_recently_used_makes_room(
    tmp_path: Path, tiny_model: Path
) -> None:
    other = tmp_path / "other-model"
    other.symlink_to(tiny_model, target_is_directory=True)
    pool = WorkerPool(idle_timeout_s=3600, max_workers=1)
    try:
        pool.generate(spec_of(tiny_model), "hi", max_new_tokens=2, timeout=180)
        (first,) = pool.pids()
        pool.generate(spec_of(tiny_model), "hi again", max_new_tokens=2, timeout=180)
        assert pool.pids() == [first]
        pool.generate(spec_of(other), "hi", max_new_tokens=2, timeout=180)
        (second,) = pool.pids()
        assert second != first and ended(first)
    finally:
        pool.close()
    assert ended(second)


def test_a_worker_that_cannot_start_or_answer_raises_ask_error_with_its_last_words(
    tmp_path: Path, tiny_model: Path
) -> None:
    dying = tmp_path / "dying-python"
    dying.write_text("#!/bin/sh\necho 'loading...' >&2\necho 'CUDA out of memory' >&2\nexit 1\n")
    dying.chmod(0o755)
    pool = WorkerPool()
    try:
        spec = WorkerSpec(model=str(tiny_model), cache_dir=tmp_path, python=str(dying))
        with pytest.raises(AskError, match="CUDA out of memory"):
            pool.generate(spec, "hello", timeout=60)
        assert pool.pids() == []
        missing = WorkerSpec(model=str(tmp_path / "nowhere"), cache_dir=tmp_path, env=ENV)
        with pytest.raises(AskError, match="no such file or directory"):
            pool.generate(missing, "hello", timeout=180)
        with pytest.raises(AskError, match="max_new_tokens"):
            pool.generate(spec_of(tiny_model), "hello", max_new_tokens=-1, timeout=180)
        (pid,) = pool.pids()  # a refused request leaves the worker in place
        assert not ended(pid)
    finally:
        pool.close()

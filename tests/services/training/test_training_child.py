"""The training child as a real subprocess on a tiny locally built model."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

from services.training.command import ExitCode, build_command
from services.training.config import resolve_config
from services.training.progress import (
    CheckpointEvent,
    DoneEvent,
    ErrorEvent,
    EvalEvent,
    ProgressParser,
    StartEvent,
    StepEvent,
)
from tests.services.training.training_helpers import REPO, run_child, write_dataset

FAST = {
    "learning_rate": 1e-2,
    "warmup_ratio": 0.0,
    "num_epochs": 2,
    "batch_size": 4,
    "gradient_accumulation_steps": 1,
    "max_seq_length": 128,
    "save_steps": 4,
    "save_total_limit": 2,
}


def events_of(stdout: str) -> tuple[list[Any], ProgressParser]:
    parser = ProgressParser()
    events = parser.feed(stdout.encode()) + parser.close()
    return events, parser


def prepare(tmp_path: Path, model: Path, tokenizer: Any, kind: str, **job: Any) -> Path:
    run_dir = tmp_path / "run"
    write_dataset(run_dir / "fine_tune_dataset.jsonl", tokenizer, n_train=32, n_eval=8)
    resolve_config(
        base_model=model,
        kind=kind,
        n_samples=40,
        mode=None,
        preset=None,
        job_args={**FAST, **job},
        etc_dir=REPO / "etc",
    ).write(run_dir)
    return run_dir


def check_common(run_dir: Path, stdout: str) -> DoneEvent:
    events, parser = events_of(stdout)
    assert parser.garbage == 0 and parser.oversized == 0
    assert isinstance(events[0], StartEvent)
    assert isinstance(events[-1], DoneEvent)
    total = events[0].total_steps
    assert total == 2 * 32 // 4
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert [e.step for e in steps] == list(range(1, total + 1))
    assert all(e.tokens_per_s > 0 and e.lr > 0 for e in steps)
    evals = [e for e in events if isinstance(e, EvalEvent)]
    assert evals[0].step == 0 and evals[-1].step == total
    checkpoints = [e for e in events if isinstance(e, CheckpointEvent)]
    assert [c.step for c in checkpoints] == [4, 8, 12]
    kept = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert len(kept) == 2  # save_total_limit
    done = events[-1]
    m = done.metrics
    assert m["eval_loss_initial"] == evals[0].eval_loss
    assert m["eval_loss"] < m["eval_loss_initial"]
    assert m["steps"] == total and m["n_train"] == 32 and m["n_eval"] == 8
    assert m["padding_share"] == 0.0  # one sample per pass on a CPU
    progress_file = (run_dir / "progress.jsonl").read_text()
    assert progress_file.splitlines() == stdout.strip().splitlines()
    assert "step" in (run_dir / "train.log").read_text()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["sources"]["learning_rate"] == "job"
    return done


def test_lora_run_writes_a_loadable_adapter_and_a_merged_model(
    tmp_path: Path, tiny_model: Path, tiny_tokenizer: Any
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir = prepare(tmp_path, tiny_model, tiny_tokenizer, "lora", **{"lora.r": 8})
    proc = run_child(run_dir, "lora", tiny_model, "--merge")
    assert proc.returncode == ExitCode.OK, proc.stderr[-3000:]
    done = check_common(run_dir, proc.stdout)
    adapter = run_dir / "adapter"
    assert done.artifact == str(adapter)
    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all("lora_" in k for k in keys)
    assert AutoTokenizer.from_pretrained(adapter).chat_template == tiny_tokenizer.chat_template

    ids = torch.tensor([tiny_tokenizer("The sky is blue")["input_ids"]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():
        before = base(input_ids=ids).logits
        peft_model = PeftModel.from_pretrained(base, adapter).eval()
        adapted = peft_model(input_ids=ids).logits
        merged_dir = Path(done.metrics["merged"])
        assert merged_dir == run_dir / "model"
        merged = AutoModelForCausalLM.from_pretrained(merged_dir)(input_ids=ids).logits
    assert not torch.allclose(before, adapted, atol=1e-4)  # the adapter changes the model
    assert torch.allclose(adapted, merged, atol=1e-4)  # and the merge keeps that change


def test_full_run_writes_a_loadable_model(
    tmp_path: Path, tiny_model: Path, tiny_tokenizer: Any
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir = prepare(tmp_path, tiny_model, tiny_tokenizer, "full", learning_rate=3e-3)
    proc = run_child(run_dir, "full", tiny_model)
    assert proc.returncode == ExitCode.OK, proc.stderr[-3000:]
    done = check_common(run_dir, proc.stdout)
    model_dir = run_dir / "model"
    assert done.artifact == str(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_model).parameters()
    )
    assert AutoTokenizer.from_pretrained(model_dir).chat_template == tiny_tokenizer.chat_template
    assert not (run_dir / "adapter").exists()


def test_the_best_checkpoint_becomes_the_artifact(
    tmp_path: Path, tiny_model: Path, tiny_tokenizer: Any
) -> None:
    """Eval answers that share only their start with the training answers, and a high constant
    learning rate: the eval loss falls, then rises as the model commits to the training
    answers. The artifact is the checkpoint with the lowest eval loss, not the final state."""
    run_dir = tmp_path / "run"
    write_dataset(run_dir / "fine_tune_dataset.jsonl", tiny_tokenizer, n_train=32, n_eval=8)
    lines = (run_dir / "fine_tune_dataset.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    for r in records:
        if r["split"] == "eval":
            head = r["completion"].partition(" is ")[0]
            r["completion"] = head + " is qzx vkj wpq jxz qzx vkj wpq jxz<|im_end|>\n"
    (run_dir / "fine_tune_dataset.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    job = {**FAST, "learning_rate": 1e-2, "lr_scheduler": "constant", "num_epochs": 3}
    resolve_config(
        base_model=tiny_model,
        kind="full",
        n_samples=40,
        mode=None,
        preset=None,
        job_args={**job, "save_steps": 2},
        etc_dir=REPO / "etc",
    ).write(run_dir)
    proc = run_child(run_dir, "full", tiny_model)
    assert proc.returncode == ExitCode.OK, proc.stderr[-3000:]
    events, _ = events_of(proc.stdout)
    evals = {e.step: e.eval_loss for e in events if isinstance(e, EvalEvent) and e.step > 0}
    done = events[-1]
    assert isinstance(done, DoneEvent)
    final = max(evals)
    best = min(evals, key=lambda s: (evals[s], -s))
    assert best < final and evals[best] < evals[final]
    assert (done.metrics["best_step"], done.metrics["eval_loss"]) == (best, evals[best])
    assert done.metrics["eval_loss_final"] == evals[final]
    kept = run_dir / "checkpoints" / f"step-{best}" / "model.safetensors"
    artifact = run_dir / "model" / "model.safetensors"
    assert kept.read_bytes() == artifact.read_bytes()
    assert len(list((run_dir / "checkpoints").iterdir())) == 2


def write_lines(run_dir: Path, lines: list[str]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "fine_tune_dataset.jsonl").write_text("".join(line + "\n" for line in lines))


GOOD = json.dumps({"prompt": "<|im_start|>user\nhi<|im_end|>\n", "completion": "yo<|im_end|>"})


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (None, "dataset not found"),
        ([], "dataset is empty"),
        ([GOOD, "{not json"], ":2: not JSON"),
        ([json.dumps({"prompt": "x", "completion": ""})], "empty completion"),
        ([json.dumps({"prompt": "x", "completion": "y", "weight": -1})], "'weight' must be"),
        ([json.dumps({"prompt": "x", "completion": "y", "split": "test"})], "'split' must be"),
        ([GOOD, GOOD], "2 training samples; at least 4 are required"),
    ],
)
def test_bad_datasets_fail_with_the_bad_input_code(
    tmp_path: Path, tiny_model: Path, lines: list[str] | None, message: str
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    if lines is not None:
        write_lines(run_dir, lines)
    proc = run_child(run_dir, "lora", tiny_model)
    assert proc.returncode == ExitCode.BAD_INPUT
    events, _ = events_of(proc.stdout)
    assert len(events) == 1 and isinstance(events[0], ErrorEvent)
    assert message in events[0].message
    assert events[0].code == ExitCode.BAD_INPUT
    assert message in (run_dir / "train.log").read_text()


def test_a_hub_base_missing_from_the_caches_while_offline_is_bad_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    run_dir = tmp_path / "run"
    write_lines(run_dir, [GOOD] * 4)
    proc = run_child(run_dir, "lora", "nobody/no-such-model")
    assert proc.returncode == ExitCode.BAD_INPUT
    events, _ = events_of(proc.stdout)
    assert isinstance(events[-1], ErrorEvent)
    assert events[-1].message == (
        "nobody/no-such-model is not in the local cache and HF_HUB_OFFLINE is set; download "
        "it with hf download nobody/no-such-model (on a machine online), or unset HF_HUB_OFFLINE"
    )


def test_sigterm_cancels_with_an_error_event_and_the_cancelled_code(
    tmp_path: Path, tiny_model: Path, tiny_tokenizer: Any
) -> None:
    run_dir = prepare(tmp_path, tiny_model, tiny_tokenizer, "lora", num_epochs=1000)
    argv = build_command(
        run_dir=run_dir, kind="lora", base=str(tiny_model), cache_dir=tmp_path, progress_fd=1
    )
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    parser = ProgressParser()
    seen: list[Any] = []
    while not any(isinstance(e, StepEvent) for e in seen):
        line = proc.stdout.readline()
        assert line, "the child ended before its first step"
        seen += parser.feed(line)
    proc.send_signal(signal.SIGTERM)
    rest = parser.feed(proc.stdout.read()) + parser.close()
    assert proc.wait(timeout=60) == ExitCode.CANCELLED
    assert isinstance(rest[-1], ErrorEvent)
    assert rest[-1].message == "cancelled by SIGTERM"
    assert not (run_dir / "adapter").exists()

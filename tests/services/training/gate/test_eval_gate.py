"""The evaluation gate: real training child runs on a tiny locally built model, whose
candidate passes or is rejected on held-out loss, regression loss or the tag probe."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from services.schemas import load_schema
from services.training.command import ExitCode, build_command
from services.training.config import resolve_config
from services.training.dataset_reader import read_dataset, select
from services.training.errors import BadInputError, TrainingConfigError
from services.training.gate import (
    GENERAL_SET,
    EvalSample,
    chat_renderer,
    evaluate_candidate,
    foreign_tags,
    probe_samples,
    read_eval_set,
    run_probe,
    tag_table,
)
from services.training.inference import generate, load_for_inference
from services.training.progress import DoneEvent, ProgressParser
from tests.services.training.training_helpers import REPO, run_child, write_dataset

FAST = {
    "learning_rate": 1e-2,
    "warmup_ratio": 0.0,
    "num_epochs": 2,
    "batch_size": 4,
    "gradient_accumulation_steps": 1,
    "max_seq_length": 128,
    "save_steps": 100,
}
DATASET_SUMMARY = {"status": "ok", "created": "2026-01-01T00:00:00+00:00", "dataset": {"n": 40}}


def prepare(run_dir: Path, model: Path, tokenizer: Any, kind: str, **job: Any) -> Path:
    """A run directory as the daemon leaves it: dataset, resolved config, run summary."""
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
    (run_dir / "run-summary.json").write_text(json.dumps(DATASET_SUMMARY))
    return run_dir


def done_of(proc: Any) -> DoneEvent:
    assert proc.returncode == ExitCode.OK, proc.stderr[-3000:]
    parser = ProgressParser()
    events = parser.feed(proc.stdout.encode()) + parser.close()
    assert parser.garbage == 0
    done = events[-1]
    assert isinstance(done, DoneEvent)
    return done


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def check_recorded(run_dir: Path, gate: dict[str, Any]) -> dict[str, Any]:
    """eval.json holds the verdict and the details; run-summary.json gained it, kept the rest."""
    evaluation = read_json(run_dir / "eval.json")
    assert {k: evaluation[k] for k in gate} == gate
    summary = read_json(run_dir / "run-summary.json")
    # a small profile's LoRA also records the share of its adapter it kept (lora.scale)
    kept = {"adapter_scale": summary["adapter_scale"]} if "adapter_scale" in summary else {}
    assert summary == {**DATASET_SUMMARY, "gate": gate, **kept}
    return dict(evaluation)


@pytest.fixture(scope="module")
def improved(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, tiny_tokenizer: Any
) -> tuple[Path, DoneEvent]:
    run_dir = prepare(
        tmp_path_factory.mktemp("improved") / "run", tiny_model, tiny_tokenizer, "lora"
    )
    return run_dir, done_of(run_child(run_dir, "lora", tiny_model))


def test_a_candidate_that_improves_passes_and_the_verdict_is_recorded(
    improved: tuple[Path, DoneEvent], tiny_model: Path
) -> None:
    run_dir, done = improved
    gate = done.metrics["gate"]
    assert gate["passed"] is True and gate["reasons"] == []
    assert gate["reference"] == {"source": "base", "model": str(tiny_model), "adapter": None}
    held = gate["heldout"]
    assert held["passed"] and held["candidate"] < held["reference"] == held["limit"]
    assert held["samples"] == 8
    assert f"held-out loss {held['candidate']:.4f} <= {held['limit']:.4f}" in gate["reason"]
    regression = gate["regression"]
    assert regression["passed"] and regression["samples"] == 30  # etc/eval/general.jsonl
    assert regression["limit"] == pytest.approx(regression["reference"] * 1.05)
    assert gate["probe"] == {"passed": True, "checked": 2, "foreign": []}
    evaluation = check_recorded(run_dir, gate)
    assert read_json(run_dir / "run-summary.json")["adapter_scale"] == done.metrics["adapter_scale"]
    assert done.metrics["adapter_scale"]["scale"] == 1.0  # it drifted little: kept whole
    assert evaluation["regression_sets"] == {"general": str(GENERAL_SET)}
    assert evaluation["candidate"]["artifact"] == str(run_dir / "adapter")
    # The gate scored the real artifact and the real base: unweighted, its numbers are the
    # training run's own eval losses of the untrained model and of the artifact.
    losses = evaluation["losses"]
    assert losses["reference"]["heldout"]["unweighted_loss"] == pytest.approx(
        done.metrics["eval_loss_initial"], rel=1e-4
    )
    assert losses["candidate"]["heldout"]["unweighted_loss"] == pytest.approx(
        done.metrics["eval_loss"], rel=1e-4
    )
    assert [o["mode"] for o in evaluation["probe_outputs"]] == ["emulation", "emulation"]


def test_the_gate_judges_a_lora_folded_into_its_base_as_ask_serves_it(
    improved: tuple[Path, DoneEvent], tiny_model: Path, tiny_tokenizer: Any
) -> None:
    import torch

    from services.training.gate.judge import Models

    run_dir, _ = improved
    models = Models("lora", tiny_model, run_dir / "adapter", run_dir, "cpu")
    served, _ = load_for_inference(
        tiny_model, adapter=run_dir / "adapter", cache_dir=run_dir, merge=True
    )
    kept_apart, _ = load_for_inference(tiny_model, adapter=run_dir / "adapter", cache_dir=run_dir)
    ids = tiny_tokenizer("the gate and ask answer alike", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = kept_apart(ids).logits
        for judged in (models.add_adapter(models.load_reference()[0]), models.load_candidate()):
            # A plain model (no adapter layers left to run at every token) that answers as
            # the trained adapter does.
            assert not any("lora" in name for name, _ in judged.named_modules())
            torch.testing.assert_close(judged(ids).logits, expected, rtol=1e-4, atol=1e-4)
            assert judged(ids).logits.equal(served(ids).logits)


def test_a_candidate_no_better_than_the_active_model_is_rejected(
    tmp_path: Path, improved: tuple[Path, DoneEvent], tiny_model: Path, tiny_tokenizer: Any
) -> None:
    active_run, active_done = improved
    run_dir = prepare(
        tmp_path / "run",
        tiny_model,
        tiny_tokenizer,
        "full",
        learning_rate=1e-6,
        max_steps=1,
        **{"gate.min_improvement": 0.5},
    )
    reference = ["--reference-model", str(tiny_model)]
    reference += ["--reference-adapter", str(active_run / "adapter")]
    gate = done_of(run_child(run_dir, "full", tiny_model, *reference)).metrics["gate"]
    assert gate["passed"] is False
    assert gate["reference"] == {
        "source": "active",
        "model": str(tiny_model),
        "adapter": str(active_run / "adapter"),
    }
    held = gate["heldout"]
    # The reference really is the active model: its held-out loss is the one that model
    # scored as a candidate on the same eval split.
    assert held["reference"] == pytest.approx(
        active_done.metrics["gate"]["heldout"]["candidate"], rel=1e-5
    )
    assert held["limit"] == pytest.approx(held["reference"] * 0.5)
    assert not held["passed"]
    assert gate["reasons"][0] == held["summary"]
    assert gate["reason"].startswith(
        f"held-out loss {held['candidate']:.4f} > {held['limit']:.4f} "
        f"(reference {held['reference']:.4f} x (1 - 0.5)"
    )
    check_recorded(run_dir, gate)
    assert (run_dir / "model" / "model.safetensors").is_file()  # the candidate stays


def test_the_regression_tolerance_rejects_a_candidate_that_regresses(
    tmp_path: Path, improved: tuple[Path, DoneEvent], tiny_model: Path, tiny_tokenizer: Any
) -> None:
    """The improved candidate judged again, with the daemon's ``regression.jsonl`` and
    ``gate.max_regression`` -0.9 (a regression loss 90% below the reference's): its
    held-out loss still passes, the regression check rejects it."""
    run_dir = tmp_path / "run"
    shutil.copytree(improved[0], run_dir)
    write_dataset(run_dir / "regression.jsonl", tiny_tokenizer, n_train=0, n_eval=6)
    resolved = resolve_config(
        base_model=tiny_model,
        kind="lora",
        n_samples=40,
        mode=None,
        preset=None,
        job_args={**FAST, "gate.max_regression": -0.9},
        etc_dir=REPO / "etc",
    )
    gate = evaluate_candidate(
        run_dir=run_dir,
        kind="lora",
        base_dir=tiny_model,
        artifact=run_dir / "adapter",
        resolved=resolved,
        selection=select(read_dataset(run_dir / "fine_tune_dataset.jsonl"), resolved.config),
        cache_dir=tmp_path / "cache",
    )
    assert gate["passed"] is False
    assert gate["heldout"]["passed"] is True
    regression = gate["regression"]
    assert regression["samples"] == 6 + 30  # regression.jsonl and the general set
    assert regression["limit"] == pytest.approx(regression["reference"] * 0.1)
    assert gate["reasons"] == [regression["summary"]]
    assert gate["reason"] == (
        f"regression loss {regression['candidate']:.4f} > {regression['limit']:.4f} "
        f"(reference {regression['reference']:.4f} x (1 + -0.9); "
        f"{regression['change_pct']:+.1f}%)"
    )
    evaluation = check_recorded(run_dir, gate)
    assert set(evaluation["regression_sets"]) == {"run", "general"}
    assert evaluation["losses"]["candidate"]["run"]["samples"] == 6


def test_without_eval_samples_the_held_out_check_is_skipped_and_said_so(
    tmp_path: Path, improved: tuple[Path, DoneEvent], tiny_model: Path
) -> None:
    """A dataset with no eval split: regression and the probe (on training prompts) decide."""
    run_dir = tmp_path / "run"
    shutil.copytree(improved[0], run_dir)
    path = run_dir / "fine_tune_dataset.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({**r, "split": "train"}) + "\n" for r in records))
    resolved = resolve_config(
        base_model=tiny_model,
        kind="lora",
        n_samples=40,
        mode=None,
        preset=None,
        job_args={**FAST, "eval_fraction": 0.0, "gate.probe_per_mode": 1},
        etc_dir=REPO / "etc",
    )
    selection = select(read_dataset(path), resolved.config)
    assert selection.eval == []
    gate = evaluate_candidate(
        run_dir=run_dir,
        kind="lora",
        base_dir=tiny_model,
        artifact=run_dir / "adapter",
        resolved=resolved,
        selection=selection,
        cache_dir=tmp_path / "cache",
    )
    assert gate["heldout"] is None
    assert "no eval samples: the held-out loss was not compared" in gate["warnings"]
    assert gate["passed"] is True and gate["regression"]["passed"] is True
    assert gate["reason"].startswith("regression loss ")
    evaluation = check_recorded(run_dir, gate)
    assert [o["id"] for o in evaluation["probe_outputs"]] == [records[0]["id"]]
    assert "heldout" not in evaluation["losses"]["candidate"]


def test_the_tag_probe_rejects_a_candidate_that_writes_another_modes_tags(
    tmp_path: Path, tiny_model: Path, tiny_tokenizer: Any
) -> None:
    """Emulation answers that open with dual's ``<thought>`` tag teach the model to write
    it; its held-out loss improves, the probe catches the tag."""
    run_dir = prepare(
        tmp_path / "run",
        tiny_model,
        tiny_tokenizer,
        "full",
        learning_rate=5e-3,
        lr_scheduler="constant",
        num_epochs=6,
        **{"gate.probe_per_mode": 1},
    )
    path = run_dir / "fine_tune_dataset.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for r in records:
        r["completion"] = "<thought>" + r["completion"]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    gate = done_of(run_child(run_dir, "full", tiny_model)).metrics["gate"]
    assert gate["passed"] is False and gate["heldout"]["passed"] is True
    first_eval = next(r["id"] for r in records if r["split"] == "eval")
    assert gate["probe"] == {
        "passed": False,
        "checked": 1,
        "foreign": [{"id": first_eval, "mode": "emulation", "tags": ["<thought>"]}],
    }
    assert gate["reasons"] == [f"tag probe: emulation sample {first_eval} wrote <thought>"]
    evaluation = check_recorded(run_dir, gate)
    assert "<thought>" in evaluation["probe_outputs"][0]["output"]


def test_a_reference_that_cannot_be_found_fails_before_training(
    tmp_path: Path, tiny_model: Path, tiny_tokenizer: Any
) -> None:
    run_dir = prepare(tmp_path / "run", tiny_model, tiny_tokenizer, "lora")
    missing = tmp_path / "models" / "v7"
    proc = run_child(run_dir, "lora", tiny_model, "--reference-model", str(missing))
    assert proc.returncode == ExitCode.BAD_INPUT
    assert str(missing) in proc.stdout and "no such file or directory" in proc.stdout
    proc = run_child(
        run_dir,
        "lora",
        tiny_model,
        "--reference-model",
        str(tiny_model),
        "--reference-adapter",
        str(tmp_path),
    )
    assert proc.returncode == ExitCode.BAD_INPUT
    assert "not a LoRA adapter directory" in proc.stdout
    assert not (run_dir / "adapter").exists() and not (run_dir / "eval.json").exists()


def test_a_disabled_gate_passes_without_scoring(
    tmp_path: Path, tiny_model: Path, tiny_tokenizer: Any
) -> None:
    run_dir = prepare(
        tmp_path / "run", tiny_model, tiny_tokenizer, "lora", **{"gate.enabled": False}
    )
    resolved = resolve_config(
        base_model=tiny_model,
        kind="lora",
        n_samples=40,
        mode=None,
        preset=None,
        job_args={"gate.enabled": False},
        etc_dir=REPO / "etc",
    )
    selection = select(read_dataset(run_dir / "fine_tune_dataset.jsonl"), resolved.config)
    gate = evaluate_candidate(
        run_dir=run_dir,
        kind="lora",
        base_dir=tiny_model,
        artifact=run_dir / "adapter",  # never loaded
        resolved=resolved,
        selection=selection,
        cache_dir=tmp_path / "cache",
    )
    assert gate["passed"] is True and "gate disabled" in gate["reason"]
    check_recorded(run_dir, gate)


@pytest.mark.parametrize(
    ("text", "mode", "found"),
    [
        ("<thought>I wonder</thought>", "emulation", ["<thought>"]),
        ("fine < /World > then <ACTION>", "emulation", ["<world>", "<action>"]),
        ("<user>hi</user><assistant>hello</assistant>", "emulation", []),
        ("<user>hi</user>", "agent", ["<user>"]),
        ("<world>x</world><instruction>", "agent", ["<world>"]),
        ("<thoughtful> <userland> plain text", "emulation", []),
    ],
)
def test_foreign_tags_are_the_other_modes_tags(text: str, mode: str, found: list[str]) -> None:
    assert foreign_tags(text, mode, tag_table()) == found


def test_the_probe_generates_from_each_modes_prompts(tiny_model: Path, tiny_tokenizer: Any) -> None:
    model, tokenizer = load_for_inference(tiny_model, cache_dir=tiny_model.parent / "cache")
    prompt = str(
        tiny_tokenizer.apply_chat_template(
            [{"role": "user", "content": "What colour is the sky?"}],
            tokenize=False,
            add_generation_prompt=True,
        )
    )
    samples = [
        EvalSample("a1", "agent", prompt, "x"),
        EvalSample("e1", "emulation", prompt, "x"),
        EvalSample("e2", "emulation", "", "prose has no prompt"),
        EvalSample("a2", "agent", prompt + "Hm", "x"),
        EvalSample("a3", "agent", prompt, "x"),
        EvalSample("n1", None, prompt, "x"),
    ]
    chosen = probe_samples(samples, per_mode=2)
    assert [s.id for s in chosen] == ["a1", "e1", "a2"]
    # Greedy: each probe output is what generate writes for that prompt, judged by its mode.
    out = generate(model, tokenizer, prompt, max_new_tokens=8)
    result = run_probe(model, tokenizer, chosen[:2], 8, tag_table())
    assert [o["output"] for o in result["outputs"]] == [out, out]
    assert result["checked"] == 2
    assert result["passed"] == (
        not foreign_tags(out, "agent", tag_table())
        and not foreign_tags(out, "emulation", tag_table())
    )


def test_the_general_set_renders_in_the_runs_chat_format(
    tmp_path: Path, tiny_tokenizer: Any
) -> None:
    samples = read_eval_set(GENERAL_SET, chat_renderer(tmp_path, tiny_tokenizer))
    assert len(samples) >= 25 and len({s.id for s in samples}) == len(samples)
    lines = [json.loads(line) for line in GENERAL_SET.read_text().splitlines()]
    for sample, line in zip(samples, lines, strict=True):
        assert sample.mode == "emulation" and sample.weight == 1.0
        full = tiny_tokenizer.apply_chat_template(line["messages"], tokenize=False)
        assert sample.prompt + sample.completion == full
        assert sample.prompt.endswith("<|im_start|>assistant\n")
        assert sample.completion.startswith("<assistant>")
        assert sample.completion.endswith("</assistant><|im_end|>\n")
        assert foreign_tags(full, "emulation", tag_table()) == []

    # With the dataset's schema_applied.json, the run's template renders them: here
    # SmolLM2's, which opens with its default system prompt.
    smollm = load_schema("smollm")
    applied = {"family": "smollm", "chat_template": smollm.chat_template, "eos_token": "<|im_end|>"}
    (tmp_path / "schema_applied.json").write_text(json.dumps(applied))
    first = read_eval_set(GENERAL_SET, chat_renderer(tmp_path, tiny_tokenizer))[0]
    assert first.prompt.startswith(
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM"
    )


def test_a_bad_regression_line_names_its_file_and_line(tmp_path: Path, tiny_tokenizer: Any) -> None:
    path = tmp_path / "regression.jsonl"
    good = json.dumps({"prompt": "p", "completion": "c"})
    path.write_text(good + "\n" + json.dumps({"id": "x", "weight": 1}) + "\n")
    with pytest.raises(BadInputError, match=rf"{path}:2: needs 'prompt' and 'completion'"):
        read_eval_set(path, chat_renderer(tmp_path, tiny_tokenizer))


def test_gate_settings_resolve_in_layers_and_are_validated(
    tmp_path: Path, tiny_model: Path
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "fine-tune-config.json").write_text(
        json.dumps({"training": {"gate": {"max_regression": 0.1, "probe_tokens": 8}}})
    )

    def resolve(**job: Any) -> Any:
        return resolve_config(
            base_model=tiny_model,
            kind="lora",
            n_samples=40,
            mode=None,
            preset=None,
            job_args=job,
            etc_dir=etc,
        )

    r = resolve(**{"gate.min_improvement": 0.01})
    assert r.config.gate.model_dump() == {
        "enabled": True,
        "min_improvement": 0.01,
        "max_regression": 0.1,
        "probe_tokens": 8,
        "probe_per_mode": 2,
        "fidelity_probes": 8,
        "fidelity_tokens": 48,
        "fidelity_tolerance": 0.1,
    }
    assert r.sources["gate.max_regression"] == "global"
    assert r.sources["gate.min_improvement"] == "job"
    with pytest.raises(TrainingConfigError, match=r"gate\.min_improvement"):
        resolve(**{"gate.min_improvement": 1.5})
    with pytest.raises(TrainingConfigError, match=r"gate\.probe_tokens"):
        resolve(**{"gate.probe_tokens": -1})
    with pytest.raises(TrainingConfigError, match=r"gate\.colour"):
        resolve(**{"gate.colour": "blue"})


def test_the_child_command_carries_the_reference(tmp_path: Path) -> None:
    argv = build_command(
        run_dir=tmp_path,
        kind="lora",
        base="embedded:smollm2",
        cache_dir=tmp_path,
        reference_model="/models/base",
        reference_adapter=Path("/models/v3"),
    )
    assert argv[-4:] == ["--reference-model", "/models/base", "--reference-adapter", "/models/v3"]
    with pytest.raises(ValueError, match="reference_model"):
        build_command(
            run_dir=tmp_path,
            kind="lora",
            base="embedded:smollm2",
            cache_dir=tmp_path,
            reference_adapter=Path("/models/v3"),
        )

"""``python -m services.training.gate.evaluate_version``: a published version's persona
fidelity against its base, on the tiny model, in a real child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.schemas import load_schema
from services.training.command import ExitCode
from tests.daemon_process import REPO
from tests.fakes.ollama_server import FakeOllama

PROBES = [
    {
        "id": "own-1",
        "profile": "alice",
        "question": "Where did you grow up?",
        "reference": "I grew up in Tromsø, by the fjord, with my grandmother.",
        "source": "probes",
        "memories": ["I grew up in Tromsø with my grandmother."],
    },
    {
        "id": "m2",
        "profile": "alice",
        "question": "What do you do on Sundays?",
        "reference": "On Sundays I bake cardamom buns and walk the dog.",
        "source": "held-out",
        "memories": [],
    },
]


def _run_dir(root: Path) -> Path:
    run = root / "eval-v1"
    run.mkdir()
    smollm = load_schema("smollm")
    applied = {"family": "smollm", "chat_template": smollm.chat_template, "eos_token": "<|im_end|>"}
    (run / "schema_applied.json").write_text(json.dumps(applied))
    (run / "fidelity_probes.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PROBES))
    return run


def _child(run: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    argv = [sys.executable, "-m", "services.training.gate.evaluate_version", "--run-dir", str(run)]
    return subprocess.run(
        [*argv, "--cache-dir", str(run.parent / "cache"), "--device", "cpu", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def lora_adapter(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """A LoRA adapter of the tiny model with random (non-zero) weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    out = tmp_path_factory.mktemp("adapter")
    config = LoraConfig(
        r=4, target_modules="all-linear", task_type="CAUSAL_LM", init_lora_weights=False
    )
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model), config).save_pretrained(
        str(out)
    )
    return out


@pytest.mark.slow
def test_the_child_scores_the_version_and_its_base(
    tmp_path: Path, tiny_model: Path, lora_adapter: Path
) -> None:
    run = _run_dir(tmp_path)
    with FakeOllama(models=["judge:7b"]) as judge:  # eval.judge_model, answering 7 and "A"
        judge.set_reply(lambda r: '{"score": 7}' if "to judge:" in r.user else '{"better": "A"}')
        done = _child(
            run,
            "--model",
            str(tiny_model),
            "--adapter",
            str(lora_adapter),
            "--base",
            str(tiny_model),
            "--version",
            "v1",
            "--max-new-tokens",
            "8",
            "--judge-model",
            "judge:7b",
            "--judge-host",
            judge.url,
        )
    assert done.returncode == ExitCode.OK, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout  # stdout holds the result line only
    result = json.loads(lines[0])
    printed = result["fidelity"]

    saved = json.loads((run / "fidelity.json").read_text())
    assert saved["fidelity"] == printed
    # The judge's record, printed and saved beside the scores: 2 probes x 2 settings x
    # (2 scores + the pair in both orders); a judge always saying "A" decides no pair.
    assert saved["fidelity_judge"] == result["fidelity_judge"]
    judged = result["fidelity_judge"]
    assert judged["error"] is None and judged["requests"] == 16 and judged["against"] == "base"
    pairwise = judged["settings"]["with_retrieval"]["pairwise"]
    assert pairwise["tie"] == pairwise["disagreed"] == 2
    assert saved["version"] == "v1" and saved["base"] == str(tiny_model)
    assert saved["model"] == str(tiny_model) and saved["adapter"] == str(lora_adapter)
    assert printed["probes"] == 2 and printed["sources"] == ["held-out", "probes"]
    assert printed["transfer_against"] == "base"
    assert isinstance(printed["passed"], bool) and printed["summary"]
    for model in ("reference", "candidate"):
        for setting in ("without_retrieval", "with_retrieval"):
            scores = printed[model][setting]
            assert scores["hygiene"]["answers"] == 2
            assert scores["recall"]["scored"] + scores["recall"]["unscored"] == 2
            # Style is compared with the base: only the version has it.
            assert (scores["transfer"] is None) == (model == "reference")
    assert [o["id"] for o in saved["outputs"]] == ["own-1", "m2"]
    for o in saved["outputs"]:
        assert set(o["answers"]) == {"base", "version"}
        for answers in o["answers"].values():
            assert set(answers) == {"without_retrieval", "with_retrieval"}
            assert all(isinstance(t, str) for t in answers.values())
    # The random adapter changes what the model says.
    base = [o["answers"]["base"]["without_retrieval"] for o in saved["outputs"]]
    version = [o["answers"]["version"]["without_retrieval"] for o in saved["outputs"]]
    assert base != version


@pytest.mark.slow
def test_bad_input_is_exit_3_with_an_error_line(tmp_path: Path, tiny_model: Path) -> None:
    run = tmp_path / "empty"
    run.mkdir()
    done = _child(run, "--model", str(tiny_model), "--base", str(tiny_model))
    assert done.returncode == ExitCode.BAD_INPUT, done.stderr[-3000:]
    assert "no fidelity probes" in json.loads(done.stdout.strip())["error"]
    assert not (run / "fidelity.json").exists()

    run = _run_dir(tmp_path)
    done = _child(run, "--model", str(tmp_path / "nowhere"), "--base", str(tiny_model))
    assert done.returncode == ExitCode.BAD_INPUT, done.stderr[-3000:]
    assert "nowhere" in json.loads(done.stdout.strip())["error"]

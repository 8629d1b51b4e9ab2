"""The optional LLM judge in the gate: real gate runs on the tiny model, the judge served by
the fake Ollama server. Its record goes to ``eval.json`` apart from the verdict, which it
never changes; without ``eval.judge_model`` nothing is asked."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.fidelity.judge import JudgeConfig
from services.training.config import resolve_config
from services.training.dataset_reader import read_dataset, select
from services.training.gate import evaluate_candidate
from tests.fakes.ollama_server import FakeOllama, Generation
from tests.services.training.gate.test_eval_gate import FAST, prepare
from tests.services.training.training_helpers import REPO

JUDGE = "judge:7b"
PROBES = [
    {
        "id": "own-1",
        "profile": "alice",
        "question": "What colour is the sea?",
        "reference": "The sea is teal, as always.",
        "source": "probes",
        "memories": ["The sea by the cabin is teal."],
    },
    {
        "id": "own-2",
        "profile": "alice",
        "question": "What colour is a plum?",
        "reference": "A plum is purple.",
        "source": "probes",
        "memories": [],
    },
]


def random_adapter(path: Path, tiny_model: Path, tiny_tokenizer: Any, seed: int) -> Path:
    """A LoRA adapter with random, non-zero weights and the tokenizer beside it: a model
    that answers differently from the tiny base, untrained."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = LoraConfig(
        r=4, target_modules="all-linear", task_type="CAUSAL_LM", init_lora_weights=False
    )
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model), config)
    model.save_pretrained(str(path))
    tiny_tokenizer.save_pretrained(str(path))
    return path


def probed_run(run_dir: Path, tiny_model: Path, tiny_tokenizer: Any) -> Path:
    """A run directory with fidelity probes and a random LoRA adapter as its artifact."""
    run_dir = prepare(run_dir, tiny_model, tiny_tokenizer, "lora")
    (run_dir / "fidelity_probes.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PROBES))
    random_adapter(run_dir / "adapter", tiny_model, tiny_tokenizer, seed=5)
    return run_dir


@pytest.fixture(scope="module")
def candidate(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, tiny_tokenizer: Any
) -> Path:
    """A run directory with fidelity probes and a LoRA adapter (random, non-zero weights,
    with the tokenizer beside it) as its artifact: a candidate to judge, untrained."""
    return probed_run(tmp_path_factory.mktemp("judged") / "run", tiny_model, tiny_tokenizer)


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama(models=[JUDGE]) as server:
        yield server


def gate_run(
    run_dir: Path, tiny_model: Path, judge: JudgeConfig | None, **reference: Any
) -> dict[str, Any]:
    """The gate on a :func:`probed_run` (``reference``: ``reference_model`` and
    ``reference_adapter`` of an active version)."""
    resolved = resolve_config(
        base_model=tiny_model,
        kind="lora",
        n_samples=40,
        mode=None,
        preset=None,
        job_args={**FAST, "gate.fidelity_tokens": 6, "gate.probe_tokens": 6},
        etc_dir=REPO / "etc",
    )
    selection = select(read_dataset(run_dir / "fine_tune_dataset.jsonl"), resolved.config)
    return evaluate_candidate(
        run_dir=run_dir,
        kind="lora",
        base_dir=tiny_model,
        artifact=run_dir / "adapter",
        resolved=resolved,
        selection=selection,
        cache_dir=run_dir.parent / "cache",
        general_set=None,
        judge=judge,
        **reference,
    )


def _read(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    evaluation = json.loads((run_dir / "eval.json").read_text())
    summary = json.loads((run_dir / "run-summary.json").read_text())
    return evaluation, summary


def _verdict(gate: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in gate.items() if k != "seconds"}


def test_the_judge_is_recorded_apart_and_never_changes_the_verdict(
    candidate: Path, tiny_model: Path, fake: FakeOllama, tmp_path: Path
) -> None:
    def policy(request: Generation) -> str:
        if "An answer to judge:" in request.user:
            return '{"score": 6}'
        return '{"better": "B"}'  # always the second: an order bias, cancelled

    fake.set_reply(policy)
    runs = {}
    for name, judge in (
        ("off", None),
        ("judged", JudgeConfig(JUDGE, fake.url)),
        ("missing", JudgeConfig("absent:1b", fake.url)),
    ):
        run_dir = tmp_path / name
        shutil.copytree(candidate, run_dir)
        runs[name] = (gate_run(run_dir, tiny_model, judge), *_read(run_dir))
        if name == "off":
            assert fake.requests == []  # no judge: nothing asked

    off, judged, missing = runs["off"], runs["judged"], runs["missing"]
    assert off[0]["fidelity"] is not None and off[0]["fidelity"]["probes"] == 2
    assert _verdict(judged[0]) == _verdict(off[0]) == _verdict(missing[0])
    assert off[1]["fidelity_judge"] is None

    record = judged[1]["fidelity_judge"]
    assert record["error"] is None and record["model"] == JUDGE and record["against"] == "base"
    assert record["requests"] == 2 * 2 * 4
    for setting in ("without_retrieval", "with_retrieval"):
        values = record["settings"][setting]
        assert values["match"]["candidate"] == {"mean": 6.0, "scored": 2, "unparsable": 0}
        assert values["pairwise"]["tie"] == values["pairwise"]["disagreed"] == 2
    # The judge read the answers eval.json records.
    asked = fake.generations()[1].user
    answer = judged[1]["fidelity_outputs"][0]["answers"]["candidate"]["without_retrieval"]
    assert f"An answer to judge: {answer or '(empty)'}\n" in asked
    # Apart: neither in the verdict nor in run-summary.json.
    assert "fidelity_judge" not in judged[0] and "fidelity_judge" not in judged[2]["gate"]

    error = missing[1]["fidelity_judge"]["error"]
    assert "has no model 'absent:1b'" in error

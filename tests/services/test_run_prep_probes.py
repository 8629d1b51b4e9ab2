"""A training run's fidelity probes: the person's own first, then held-out samples, each
with the memories ask would retrieve, never the sample's own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.curation import CurationError, load_rules
from services.ingest import Ingestor, make_curator
from services.ledger import Ledger
from services.run_prep import PROBES_FILE, own_probes, prepare_training_run


def _ingest(ledger: Ledger, root: Path, n: int = 60) -> Path:
    path = root / "profiles" / "alice" / "memory" / "pc.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "\n".join(
            json.dumps(
                {
                    "prompt": f"What about thing number {i}?",
                    "completion": f"Thing {i} is a lovely thing, I think about it often.",
                    "quality_score": 9,
                }
            )
            for i in range(n)
        )
    )
    Ingestor(ledger, None, max_file_bytes=10**7, curate=make_curator(load_rules())).ingest_file(
        "alice", path
    )
    return path


def prepare_alice(ledger: Ledger, run_dir: Path, model: Path, **options: Any) -> Path:
    """``prepare_training_run`` of alice's LoRA (or ``kind=``) on ``model`` in the smollm
    format with the shipped rules, into ``run_dir``."""
    prepare_training_run(
        ledger,
        "alice",
        run_dir,
        **{"kind": "lora", **options},
        base_model=str(model),
        family="smollm",
        rules=load_rules(),
    )
    return run_dir


def test_probes_are_written_with_retrieved_memories_but_never_their_own(
    tmp_path: Path, tiny_model: Path
) -> None:
    own = tmp_path / "probes.jsonl"
    own.write_text(json.dumps({"question": "What is my dog called?", "reference": "Biscotte."}))
    asked: list[tuple[str, str, int]] = []

    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        _ingest(ledger, tmp_path)
        memories = {m.id: m.text for m in ledger.memories("alice")}

        def retrieve(profile: str, question: str, k: int) -> list[tuple[str, str]]:
            asked.append((profile, question, k))
            # The closest first: pretend the held-out sample's own memory is the best hit.
            found = [(mid, text) for mid, text in memories.items() if question in text]
            rest = [(mid, text) for mid, text in memories.items() if question not in text]
            return (found + rest)[:k]

        run_dir = prepare_alice(
            ledger, tmp_path / "run", tiny_model, retrieve=retrieve, probes_file=own
        )
    probes = [json.loads(line) for line in (run_dir / PROBES_FILE).read_text().splitlines()]
    assert probes[0]["source"] == "probes" and probes[0]["question"] == "What is my dog called?"
    held = probes[1:]
    assert held and all(p["source"] == "held-out" for p in held)
    assert len(probes) <= 8  # gate.fidelity_probes
    rows = [json.loads(x) for x in (run_dir / "fine_tune_dataset.jsonl").read_text().splitlines()]
    eval_ids = {r["id"] for r in rows if r["split"] == "eval"}
    for p in held:
        assert p["id"] in eval_ids
        assert p["question"].startswith("What about thing number")  # tags taken off
        assert not p["reference"].startswith("<assistant>")
        assert len(p["memories"]) == 4
        assert memories[p["id"]] not in p["memories"]
        assert p["profile"] == "alice"
    assert all(k == 5 for _, _, k in asked)


def test_the_persons_own_probes_file_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "probes.jsonl"
    assert own_probes(path) == []
    path.write_text('{"question": "q?", "reference": "a."}\n\n{"question": ""}\n')
    with pytest.raises(CurationError, match=r"probes\.jsonl:3: needs 'question'"):
        own_probes(path)
    # A reference in the person's voice names the facts it holds apart.
    path.write_text('{"question": "q?", "reference": "Well, Brest, voila.", "facts": "Brest"}\n')
    assert own_probes(path) == [
        {"id": f"{path}:1", "question": "q?", "reference": "Well, Brest, voila.", "facts": "Brest"}
    ]
    path.write_text('{"question": "q?", "reference": "a.", "facts": 3}\n')
    with pytest.raises(CurationError, match="'facts' must be a string"):
        own_probes(path)

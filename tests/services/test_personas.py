"""The fidelity personas: every probe is held out (its question is in no memory) and
answerable (its key terms are in the memories), and the files ingest without rejects."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.demo_persona import write_persona as write_maren
from services.fidelity import key_terms, words
from services.memories import read_memory_file
from services.personas import MAREN_PROBES, ODILE, Probe, write_memories


def _memories(tmp_path: Path, name: str) -> list[str]:
    root = tmp_path / name
    count = write_memories(ODILE, root) if name == "odile" else write_maren(root)
    texts: list[str] = []
    rejects = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        result, _sha = read_memory_file(path)
        rejects += result.problems
        texts += [f"{m.prompt} {m.response}" for m in result.memories]
    assert not rejects
    assert len(texts) == count
    return texts


@pytest.mark.parametrize(("name", "probes"), [("odile", ODILE.probes), ("maren", MAREN_PROBES)])
def test_probes_are_held_out_and_answerable(tmp_path: Path, name: str, probes: list[Probe]) -> None:
    texts = _memories(tmp_path, name)
    assert len(probes) >= 10
    vocabulary = {w for t in texts for w in words(t)}
    for probe in probes:
        assert not any(probe.question.lower() in t.lower() for t in texts), probe.question
        terms = key_terms(probe.facts or probe.reference, probe.question)
        assert terms, probe.reference
        assert set(terms) <= vocabulary, (probe.reference, set(terms) - vocabulary)
        # The facts are what the person says: every key term of them is in the reference.
        assert set(terms) <= set(words(probe.reference)), probe


def test_odile_speaks_in_her_own_voice(tmp_path: Path) -> None:
    texts = _memories(tmp_path, "odile")
    assert len(texts) >= 80
    assert sum("voilà" in t for t in texts) / len(texts) > 0.8
    # Her probes' references are her own answers, in her voice; their facts apart.
    assert all("voilà" in p.reference and "voilà" not in p.facts for p in ODILE.probes)

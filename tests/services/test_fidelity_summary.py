"""What status, versions and reports say of a version's fidelity."""

from __future__ import annotations

from services.fidelity.summary import describe, version_fidelity
from tests.fidelity_scores import fidelity_scores


def test_a_verdict_becomes_a_short_summary() -> None:
    verdict = {
        "fidelity": {
            "passed": True,
            "probes": 10,
            "transfer_against": "base",
            "candidate": fidelity_scores(0.7, 0.9, 0.8, 0),
            "reference": fidelity_scores(0.0, 0.2, None, 0),
        }
    }
    summary = version_fidelity(verdict)
    assert summary is not None
    assert summary["recall"] == 0.7 and summary["recall_with_retrieval"] == 0.9
    assert summary["transfer"] == 0.8 and summary["stray_tags"] == 0
    assert summary["reference"]["recall"] == 0.0
    assert describe(summary) == "recall 70% (with memories 90%), style 80%, 0 with stray tags"


def test_without_fidelity_it_says_so() -> None:
    assert version_fidelity({"passed": True}) is None
    assert describe(None) == "no fidelity measured"

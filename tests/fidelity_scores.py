"""A gate verdict's fidelity scores, as the tests of its readers need them."""

from __future__ import annotations

from typing import Any


def fidelity_scores(
    recall: float, with_memories: float, transfer: float | None, stray: int = 0
) -> dict[str, Any]:
    """One model's ``SCORES`` (docs/ARCHITECTURE.md, the run directory): the recall without
    and with memories, the transfer score and the answers with stray tags."""
    return {
        setting: {
            "recall": {"mean": value},
            "hygiene": {"with_stray_tags": stray, "stopped_share": 1.0},
            "transfer": transfer,
        }
        for setting, value in (("without_retrieval", recall), ("with_retrieval", with_memories))
    }

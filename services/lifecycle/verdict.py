"""What becomes of a trained candidate: the gate's verdict."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Verdict:
    """``rejected``: why the candidate is not published (None: it is). ``new_base``: the
    candidate (a full fine-tune) becomes the profile's base for later LoRAs."""

    rejected: str | None = None
    new_base: bool = False

    @property
    def publish(self) -> bool:
        return self.rejected is None


def judge(kind: str, metrics: Mapping[str, Any] | None) -> Verdict:
    """A candidate whose gate did not pass is rejected with the gate's reason and stays in
    its run directory; any other is published, and a full fine-tune becomes the base."""
    gate = (metrics or {}).get("gate")
    if isinstance(gate, dict) and not gate.get("passed", False):
        return Verdict(rejected=f"gate: {gate.get('reason')}")
    return Verdict(new_base=kind == "full")

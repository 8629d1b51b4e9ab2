"""A LoRA is published only onto the base it was trained on while that is still current;
one trained on a base its job named stays on that base."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.ledger import Ledger
from services.publish.release import StaleBase, check_base_current


def test_a_lora_on_a_replaced_base_is_stale_unless_its_job_named_the_base(
    tmp_path: Path,
) -> None:
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        ledger.ensure_profile("alice")
        check_base_current(ledger, "alice", "lora", {"base": "org/base", "base_job": None})
        ledger.set_current_base("alice", "/runs/full/model", 7)
        with pytest.raises(StaleBase, match="replaced by the full fine-tune of job 7"):
            check_base_current(ledger, "alice", "lora", {"base": "org/base", "base_job": None})
        named = {"base": "org/other", "base_job": None, "base_requested": True}
        check_base_current(ledger, "alice", "lora", named)  # stays on org/other
        check_base_current(ledger, "alice", "full", {"base": "org/base"})

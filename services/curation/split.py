"""The deterministic train/eval split."""

from __future__ import annotations

import hashlib


def split_fraction(memory_id: str) -> float:
    """A stable number in [0, 1) from the memory id (the first 64 bits of a sha256)."""
    digest = hashlib.sha256(f"split:{memory_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(memory_id: str, eval_share: float) -> str:
    """ "eval" for about ``eval_share`` of ids, "train" for the rest; always the same."""
    return "eval" if split_fraction(memory_id) < eval_share else "train"

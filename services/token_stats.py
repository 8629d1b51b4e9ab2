"""Token statistics of a dataset by the base model's own tokenizer.

The tokenizer is the model's ``tokenizer.json`` (the ``tokenizers`` library: no torch,
no transformers): in the model directory, or for a GGUF base in its converted directory
under the base-model cache once a training child has converted it. Without one the counts
are estimated as words x 4/3 (what ingest uses to cut prose) and say so.

``token_stats`` gives ``{"tokenizer", "samples", "min", "avg", "max"}`` over each line's
full training text (prompt and completion), and a warning per prose chunk (a
continuation sample) whose text is outside the ``prose_tokens`` range (700-2,000).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.gguf_file import is_gguf

ESTIMATE = "estimate (words x 4/3)"


@dataclass(frozen=True)
class TokenCounter:
    """Counts a text's tokens; ``source`` names the tokenizer file, or :data:`ESTIMATE`."""

    count: Callable[[str], int]
    source: str


def estimate_tokens(text: str) -> int:
    return round(len(text.split()) * 4 / 3)


def _tokenizer_file(location: Path, cache_dir: Path | None) -> Path | None:
    if location.is_dir() and (location / "tokenizer.json").is_file():
        return location / "tokenizer.json"
    if is_gguf(location) and cache_dir is not None and cache_dir.is_dir():
        converted = sorted(cache_dir.glob(f"{location.stem}-*/tokenizer.json"))
        if converted:
            return converted[0]
    if location.is_file() and (location.parent / "tokenizer.json").is_file():
        return location.parent / "tokenizer.json"
    return None


def token_counter(location: Path, cache_dir: Path | None = None) -> TokenCounter:
    """The base model's tokenizer at ``location`` (a model directory or a GGUF file),
    else the estimate."""
    path = _tokenizer_file(Path(location), cache_dir)
    if path is None:
        return TokenCounter(estimate_tokens, ESTIMATE)
    try:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(path))
    except Exception:  # an unreadable or foreign tokenizer file: count as the estimate
        return TokenCounter(estimate_tokens, f"{ESTIMATE}; {path} could not be read")

    def count(text: str) -> int:
        return len(tok.encode(text, add_special_tokens=False).ids)

    return TokenCounter(count, str(path))


def token_stats(
    lines: Sequence[Mapping[str, Any]], counter: TokenCounter, prose_tokens: tuple[int, int]
) -> tuple[dict[str, Any], list[str]]:
    """(statistics, warnings) of a dataset's lines (``fine_tune_dataset.jsonl`` records)."""
    counts = [counter.count(str(line.get("text", ""))) for line in lines]
    stats: dict[str, Any] = {
        "tokenizer": counter.source,
        "samples": len(counts),
        "min": min(counts) if counts else None,
        "avg": round(sum(counts) / len(counts), 1) if counts else None,
        "max": max(counts) if counts else None,
    }
    lo, hi = prose_tokens
    outside = [
        (str(line.get("id")), n)
        for line in lines
        if line.get("kind") == "continuation"
        and not lo <= (n := counter.count(str(line.get("completion", "")))) <= hi
    ]
    warnings = []
    if outside:
        shown = ", ".join(f"{mid[:12]} ({n})" for mid, n in outside[:5])
        more = f" and {len(outside) - 5} more" if len(outside) > 5 else ""
        warnings.append(f"{len(outside)} prose chunk(s) outside {lo}-{hi} tokens: {shown}{more}")
    stats["prose_outside"] = len(outside)
    return stats, warnings

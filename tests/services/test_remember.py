"""remember: one pair becomes a memory file the parser reads back as the same memory."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.curation import load_rules
from services.memories import read_memory_file
from services.remember import FOLDER, RememberError, remember

NOW = datetime(2026, 11, 29, 6, 30, tzinfo=UTC)


def test_a_pair_becomes_a_file_the_ingest_reads_as_the_same_memory(tmp_path: Path) -> None:
    done = remember(
        tmp_path / "memory",
        prompt="Where do you sail?",
        completion="Out past the Bugio lighthouse when the wind is from the north.",
        quality=9,
        metadata={"topic": "sailing"},
        rules=load_rules(),
        now=NOW,
    )
    assert done.path.parent == tmp_path / "memory" / FOLDER
    assert done.path.name.startswith("20261129T063000-") and done.path.suffix == ".json"
    assert [p.name for p in done.path.parent.iterdir()] == [done.path.name]  # no temp left
    record = json.loads(done.path.read_text())
    assert record == {
        "prompt": "Where do you sail?",
        "completion": "Out past the Bugio lighthouse when the wind is from the north.",
        "timestamp": "2026-11-29T06:30:00Z",
        "quality_score": 9,
        "metadata": {"topic": "sailing"},
    }
    parsed, _ = read_memory_file(done.path)
    assert [m.id for m in parsed.memories] == [done.memory_id]
    assert (done.eligible, done.quality, done.excluded) == (True, 9.0, None)


@pytest.mark.parametrize(
    ("prompt", "completion", "quality", "metadata", "message"),
    [
        ("", "an answer of words", None, None, "the prompt is empty"),
        ("q?", "   ", None, None, "the completion is empty"),
        ("q?", "an answer", 10.5, None, "from 0 to 10"),
        ("q?", "an answer", True, None, "from 0 to 10"),
        ("q?", "an answer", None, ["topic"], "metadata must be a JSON object"),
        (3, "an answer", None, None, "the prompt is empty"),
    ],
)
def test_bad_pairs_are_refused_and_nothing_is_written(
    tmp_path: Path,
    prompt: object,
    completion: object,
    quality: object,
    metadata: object,
    message: str,
) -> None:
    with pytest.raises(RememberError, match=message):
        remember(
            tmp_path / "memory",
            prompt=prompt,
            completion=completion,
            quality=quality,
            metadata=metadata,
            rules=load_rules(),
        )
    assert not (tmp_path / "memory").exists()


def test_a_short_answer_is_remembered_but_not_trained_on(tmp_path: Path) -> None:
    done = remember(
        tmp_path / "memory", prompt="Tea?", completion="Yes.", rules=load_rules(), now=NOW
    )
    assert done.path.is_file() and done.eligible is False and done.excluded

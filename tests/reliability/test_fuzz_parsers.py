"""Fuzzing the memory parsers, in process and through a real daemon's watched folder."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest

from services.memories import SUPPORTED_EXTENSIONS, parse_bytes
from tests.reliability.fuzz import (
    check_parse,
    fuzz_daemon,
    fuzz_daemon_folder,
    fuzz_parsers,
    sample_files,
)
from tests.reliability.fuzz_inputs import huge_input


def test_generated_files_get_memories_or_reasons_and_never_crash() -> None:
    figures = fuzz_parsers(800, seed=0, strict=True)
    assert figures["inputs"] == 800
    assert figures["crashes"] == 0 and figures["violations"] == []
    # The inputs reached every format and both outcomes.
    assert set(SUPPORTED_EXTENSIONS) <= set(figures["by_extension"])
    assert figures["files_with_memories"] > 50
    assert figures["files_rejected"] > 50


@pytest.mark.parametrize(
    ("kind", "extension"),
    [
        ("deep_array", ".json"),
        ("deep_array", ".jsonl"),
        ("deep_object", ".json"),
        ("deep_object", ".ndjson"),
        ("deep_unclosed", ".json"),
        ("deep_in_record", ".json"),
        ("deep_in_record", ".jsonl"),
        ("deep_in_event", ".json"),
        ("deep_in_chat", ".json"),
    ],
)
def test_hundred_thousand_levels_of_nesting_are_a_reject(kind: str, extension: str) -> None:
    _, data = huge_input(kind, 100_000)
    check = check_parse(f"deep{extension}", data)
    assert check.violations == []
    result = parse_bytes(f"deep{extension}", data)
    assert result.memories == []
    assert any("nested too deeply" in p.reason for p in result.problems), result.problems


def test_deep_metadata_in_a_csv_cell_is_a_reject_of_its_row() -> None:
    _, data = huge_input("deep_csv_metadata", 60_000)
    result = parse_bytes("deep.csv", data)
    assert result.memories == []
    assert [p.locator for p in result.problems] == ["row 1"]
    assert "metadata cell is not a JSON object" in result.problems[0].reason


@pytest.mark.parametrize("where", ["metadata", "entities", "content"])
def test_nesting_around_the_recursion_limit_never_crashes(where: str) -> None:
    """Depths that json.loads still reads but hashing the record may not."""
    for depth in range(850, 1_050, 3):
        deep = "[" * depth + "]" * depth
        if where == "metadata":
            text = f'{{"prompt": "p", "response": "r", "metadata": {{"a": {deep}}}}}'
        elif where == "entities":
            text = f'{{"content": "c", "type": "t", "entities": {deep}}}'
        else:
            turns = (
                f'{{"role": "user", "content": "q"}}, {{"role": "assistant", "content": {deep}}}'
            )
            text = f'{{"messages": [{turns}]}}'
        check = check_parse("near-limit.json", text.encode())
        assert check.violations == [], (depth, check.violations)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("score.json", b'{"prompt": "a", "response": "b", "quality_score": ' + b"9" * 1000 + b"}"),
        ("score.jsonl", b'{"prompt": "a", "completion": "b", "quality_score": -' + b"9" * 500),
        ("event.json", b'{"content": "c", "id": "e1", "importance": ' + b"9" * 1000 + b"}"),
        ("chat.json", b'{"messages": [], "quality_score": ' + b"9" * 1000 + b"}"),
    ],
)
def test_integers_too_big_for_a_float_are_a_reject(name: str, data: bytes) -> None:
    if name.endswith(".jsonl"):
        data += b"}\n"
    result = parse_bytes(name, data)
    assert result.memories == []
    [problem] = result.problems
    assert "must be a number from" in problem.reason, problem.reason


@pytest.mark.parametrize(
    ("kind", "extension"),
    [("heading_blanks", ".md"), ("heading_blanks", ".txt"), ("csv_columns", ".csv")],
)
def test_a_megabyte_line_is_parsed_in_linear_time(kind: str, extension: str) -> None:
    # A lazy heading pattern and a per-column count used to make these take hours.
    _, data = huge_input(kind, 1_000_000)
    started = time.monotonic()
    check = check_parse(f"long{extension}", data)
    assert time.monotonic() - started < 5.0
    assert check.violations == []


def test_heading_titles_lose_closing_hashes_and_blanks() -> None:
    text = b"# A day at the lake ##  \n\nWe swam." + b" " * 50_000
    [memory] = parse_bytes("day.md", text).memories
    assert memory.metadata["title"] == "A day at the lake"
    [memory] = parse_bytes("hashes.md", b"# ###\n\nBody text.").memories
    assert memory.metadata["title"] == "#"


def test_fuzzed_files_dropped_into_a_running_daemon() -> None:
    root = Path(tempfile.mkdtemp(prefix="pdfz-"))
    try:
        files = sample_files(40, seed=1)
        assert len(files) == 40
        with fuzz_daemon(root) as daemon:
            figures = fuzz_daemon_folder(daemon, files, strict=True)
            assert figures["recorded"] == 40
            assert figures["violations"] == [] and figures["daemon_alive"]
            assert figures["files_with_memories"] > 0 and figures["files_with_rejects"] > 0
            assert daemon.stop() == 0
    finally:
        shutil.rmtree(root, ignore_errors=True)

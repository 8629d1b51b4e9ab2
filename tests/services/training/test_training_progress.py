"""The progress protocol: the child's writer and the daemon's tolerant parser."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from services.training.progress import (
    CheckpointEvent,
    DoneEvent,
    ErrorEvent,
    EvalEvent,
    ProgressParser,
    ProgressWriter,
    StartEvent,
    StepEvent,
    parse_line,
)

LINES = [
    b'{"event": "start", "total_steps": 10, "n_train": 40}',
    b'{"event": "step", "step": 1, "loss": 2.5, "lr": 0.0001, "tokens_per_s": 300.0, "eta_s": 9}',
    b'{"event": "eval", "step": 0, "eval_loss": 3.1}',
    b'{"event": "checkpoint", "step": 5, "path": "/r/checkpoints/step-5", "eval_loss": 2.0}',
    b'{"event": "done", "metrics": {"eval_loss": 1.9}, "artifact": "/r/adapter"}',
    b'{"event": "error", "message": "boom", "code": 4}',
]


def test_every_event_type_parses() -> None:
    events = [parse_line(line) for line in LINES]
    assert events == [
        StartEvent(10),
        StepEvent(1, 2.5, 0.0001, 300.0, 9.0),
        EvalEvent(0, 3.1),
        CheckpointEvent(5, "/r/checkpoints/step-5"),
        DoneEvent({"eval_loss": 1.9}, "/r/adapter"),
        ErrorEvent("boom", 4),
    ]
    assert events[0] is not None and events[0].raw["n_train"] == 40


def test_garbage_and_invalid_events_are_counted_not_raised() -> None:
    parser = ProgressParser()
    stream = b"\n".join(
        [
            b"Loading weights: 100%|####| 272/272",
            b"\xff\xfe not utf-8",
            b'{"event": "step", "step": "one", "loss": 1, "lr": 1, "tokens_per_s": 1, "eta_s": 1}',
            b'{"event": "telemetry"}',
            b"[1, 2]",
            b"",
            LINES[0],
        ]
    )
    events = parser.feed(stream + b"\n")
    assert events == [StartEvent(10)]
    assert parser.garbage == 5


def test_lines_split_across_reads_are_joined() -> None:
    parser = ProgressParser()
    data = b"\n".join(LINES) + b"\n"
    events = []
    for i in range(len(data)):
        events += parser.feed(data[i : i + 1])
    assert [type(e) for e in events] == [type(parse_line(line)) for line in LINES]
    assert parser.garbage == 0


def test_oversized_lines_are_dropped_and_counted() -> None:
    parser = ProgressParser(max_line=1024)
    huge = b'{"event": "error", "message": "' + b"x" * 5000 + b'"}'
    events = parser.feed(LINES[0] + b"\n" + huge[:3000])
    events += parser.feed(huge[3000:] + b"\n" + LINES[2] + b"\n")
    assert events == [StartEvent(10), EvalEvent(0, 3.1)]
    assert parser.oversized == 1


def test_a_final_line_without_newline_is_parsed_at_close() -> None:
    parser = ProgressParser()
    assert parser.feed(LINES[4]) == []
    assert parser.close() == [DoneEvent({"eval_loss": 1.9}, "/r/adapter")]


@given(st.lists(st.integers(min_value=1, max_value=40), max_size=30))
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    data = b"\n".join([*LINES, b"garbage", LINES[1]]) + b"\n"
    whole = ProgressParser()
    expected = whole.feed(data)
    parser = ProgressParser()
    events, at = [], 0
    for cut in cuts:
        events += parser.feed(data[at : at + cut])
        at += cut
    events += parser.feed(data[at:]) + parser.close()
    assert events == expected
    assert parser.garbage == whole.garbage == 1


def test_the_writer_feeds_the_parser_and_the_file(tmp_path: Path) -> None:
    read_fd, write_fd = os.pipe()
    writer = ProgressWriter(tmp_path / "progress.jsonl", write_fd)
    writer.emit("start", total_steps=3)
    writer.emit("step", step=1, loss=float("nan"), lr=1e-4, tokens_per_s=10.0, eta_s=2.0)
    writer.emit("done", metrics={"eval_loss": float("inf")}, artifact="/r/model")
    writer.close()
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        piped = f.read()
    parser = ProgressParser()
    events = parser.feed(piped) + parser.close()
    assert events == [
        StartEvent(3),
        StepEvent(1, None, 1e-4, 10.0, 2.0),
        DoneEvent({"eval_loss": None}, "/r/model"),
    ]
    assert parser.garbage == 0
    lines = (tmp_path / "progress.jsonl").read_bytes().splitlines()
    assert lines == piped.splitlines()
    assert all("ts" in json.loads(line) for line in lines)


def test_a_closed_pipe_does_not_stop_the_file(tmp_path: Path) -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    writer = ProgressWriter(tmp_path / "progress.jsonl", write_fd)
    writer.emit("start", total_steps=1)
    writer.emit("eval", step=0, eval_loss=1.0)
    writer.close()
    os.close(write_fd)
    assert len((tmp_path / "progress.jsonl").read_text().splitlines()) == 2

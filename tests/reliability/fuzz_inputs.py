"""Hypothesis strategies for the fuzzers: memory files as (name, bytes), and sessions of
request lines for the control socket."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from datetime import UTC
from typing import Any, TypeVar

from hypothesis import strategies as st

from services.memories import SUPPORTED_EXTENSIONS

T = TypeVar("T")

# The daemon's control commands (daemon/commands.py, Commands.handlers).
KNOWN_COMMANDS = (
    "ask",
    "cancel",
    "dashboard",
    "eval",
    "jobs",
    "pause",
    "ping",
    "rejects",
    "reindex",
    "remember",
    "resume",
    "rollback",
    "run_info",
    "search",
    "stats",
    "status",
    "train",
    "versions",
)
UNSUPPORTED_EXTENSIONS = (".bin", ".json.gz", ".yaml", "")
FIELD_NAMES = (
    "content",
    "messages",
    "prompt",
    "response",
    "completion",
    "instruction",
    "input",
    "output",
    "id",
    "type",
    "timestamp",
    "metadata",
    "quality_score",
    "importance",
    "tags",
    "entities",
)
HUGE_SIZES = (1_000, 10_000, 100_000)


def mostly(good: st.SearchStrategy[T], bad: st.SearchStrategy[Any], odds: int = 3) -> Any:
    """``good`` ``odds`` times out of ``odds + 1``, else ``bad`` (shrinks towards good)."""
    return st.integers(0, odds).flatmap(lambda n: bad if n == odds else good)


# ---- values ---------------------------------------------------------------------------

ODD_TEXTS = (
    "",
    " ",
    "\n",
    "\t \r\n ",
    "\ud800",
    "a\udfffb",
    "\x00",
    "\u2028\u2029",
    "\ufeff",
    "Q: q\nA: a",
    "# heading",
    '"quoted", with comma',
    "é" * 3,
    "\U0001f642",
)


def texts(max_size: int = 60) -> st.SearchStrategy[str]:
    return st.one_of(st.text(min_size=1, max_size=max_size), st.sampled_from(ODD_TEXTS))


SCALARS: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**4000), max_value=10**4000),
    st.floats(),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 2**63, 5e-324, -0.0]),
    texts(),
)
JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


def text_field() -> Any:
    return mostly(texts(), JSON_VALUES)


NUMBERS = mostly(
    st.one_of(st.floats(0, 10), st.integers(0, 10)),
    st.one_of(st.floats(), st.integers(-(10**30), 10**30), JSON_VALUES),
    odds=1,
)
TIMESTAMPS = mostly(
    st.one_of(
        st.datetimes(timezones=st.sampled_from([None, UTC])).map(lambda d: d.isoformat()),
        st.integers(0, 4_000_000_000),
        st.floats(0, 4e9),
    ),
    st.one_of(
        st.sampled_from(["2025-13-45", "yesterday", "", "1e400", "2025-01-01T25:00"]),
        st.sampled_from([1e20, -1e20, math.nan, math.inf, 10**30, -(10**30)]),
        JSON_VALUES,
    ),
    odds=1,
)
METADATA = mostly(
    st.dictionaries(st.sampled_from(["cognitiveMode", "source", "processed"]), JSON_VALUES),
    JSON_VALUES,
    odds=1,
)
COMMON = {"quality_score": NUMBERS, "metadata": METADATA, "timestamp": TIMESTAMPS}

PARTS = st.one_of(
    texts(),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "image_url"])}, optional={"text": text_field()}
    ),
    JSON_VALUES,
)
CONTENTS = mostly(texts(), st.one_of(st.none(), st.lists(PARTS, max_size=3), JSON_VALUES))
ROLES = mostly(st.sampled_from(["user", "assistant", "system", "tool", " USER "]), JSON_VALUES)
MESSAGES = mostly(
    st.lists(
        mostly(st.fixed_dictionaries({"role": ROLES}, optional={"content": CONTENTS}), JSON_VALUES),
        max_size=8,
    ),
    JSON_VALUES,
)
EVENT_CONTENTS = mostly(
    texts(),
    st.one_of(
        st.fixed_dictionaries(
            {}, optional={"userMessage": text_field(), "assistantMessage": text_field()}
        ),
        JSON_VALUES,
    ),
)

RECORDS: st.SearchStrategy[Any] = st.one_of(
    st.fixed_dictionaries({"prompt": text_field(), "response": text_field()}, optional=COMMON),
    st.fixed_dictionaries({"prompt": text_field(), "completion": text_field()}, optional=COMMON),
    st.fixed_dictionaries(
        {"instruction": text_field(), "output": text_field()},
        optional={"input": text_field(), **COMMON},
    ),
    st.fixed_dictionaries({"messages": MESSAGES}, optional=COMMON),
    st.fixed_dictionaries(
        {"content": EVENT_CONTENTS},
        optional={
            "id": mostly(st.text(max_size=12), JSON_VALUES),
            "type": mostly(st.sampled_from(["observation", "conversation", " "]), JSON_VALUES),
            "timestamp": TIMESTAMPS,
            "metadata": METADATA,
            "importance": mostly(st.floats(0, 1), JSON_VALUES, odds=1),
            "tags": mostly(st.lists(st.text(max_size=8), max_size=3), JSON_VALUES, odds=1),
            "entities": JSON_VALUES,
            "response": text_field(),
            "userId": JSON_VALUES,
            "links": JSON_VALUES,
        },
    ),
    st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=6), JSON_VALUES, max_size=6),
    JSON_VALUES,
)


# ---- containers -----------------------------------------------------------------------


def _dumps(value: Any, ascii_only: bool, indent: int | None) -> str:
    return json.dumps(value, ensure_ascii=ascii_only, indent=indent)


ONE_LINE = st.builds(_dumps, RECORDS, st.booleans(), st.none())
JSON_DOCUMENTS = st.tuples(
    st.just(".json"),
    st.builds(
        _dumps,
        st.one_of(RECORDS, st.lists(RECORDS, max_size=5)),
        st.booleans(),
        st.sampled_from([None, 2]),
    ),
)
JUNK_LINES = st.one_of(
    st.text(max_size=40).map(lambda t: t.replace("\n", " ")),
    ONE_LINE.flatmap(lambda line: st.integers(0, len(line)).map(lambda n: line[:n])),
)
JSON_LINES = st.tuples(
    st.sampled_from([".jsonl", ".ndjson"]),
    st.one_of(
        st.lists(mostly(ONE_LINE, st.one_of(JUNK_LINES, st.just(""))), min_size=1, max_size=8).map(
            "\n".join
        ),
        st.builds(_dumps, st.lists(RECORDS, max_size=4), st.booleans(), st.just(2)),
    ),
)

CSV_COLUMNS = (
    "prompt",
    "response",
    "completion",
    "instruction",
    "input",
    "output",
    "quality_score",
    "timestamp",
    "metadata",
    " Prompt ",
    "RESPONSE",
)
CELLS = st.one_of(
    texts(),
    st.sampled_from(['"unbalanced', "a,b", "line\nbreak", '""', "7", "-1", "nan", "1e400"]),
    st.sampled_from(['{"a": 1}', "[1]", "{", '{"cognitiveMode": "agent"}', "2025-01-01"]),
    st.integers().map(str),
)


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[str, str]:
    header = draw(
        st.one_of(
            st.sampled_from([["prompt", "response"], ["prompt", "completion"]]).flatmap(
                lambda base: st.lists(st.sampled_from(CSV_COLUMNS), max_size=3).map(
                    lambda more: base + more
                )
            ),
            st.just(["instruction", "input", "output", "quality_score"]),
            st.lists(st.sampled_from(CSV_COLUMNS) | st.text(max_size=8), min_size=1, max_size=6),
        )
    )
    rows = draw(
        st.lists(
            mostly(
                st.lists(CELLS, min_size=len(header), max_size=len(header)),
                st.lists(CELLS, max_size=len(header) + 2),
            ),
            max_size=6,
        )
    )
    if draw(st.booleans()):
        out = io.StringIO()
        writer = csv.writer(out, quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])))
        writer.writerow(header)
        writer.writerows(rows)
        return ".csv", out.getvalue()
    # Written by hand: commas and quotes inside cells break the rows on purpose.
    return ".csv", "\n".join(",".join(row) for row in [header, *rows])


QA_LINES = st.one_of(
    st.builds("Q: {}".format, st.text(max_size=30)),
    st.builds("A: {}".format, st.text(max_size=30)),
    st.sampled_from(["Q:", "A:", "  Q :x", "a: lower", "Q:Q:", "A: A:", ""]),
    st.text(max_size=40),
)
QA_FILES = st.tuples(
    st.just(".txt"), st.lists(QA_LINES, max_size=10).map(lambda lines: "\n".join(lines))
)
PARAGRAPHS = st.one_of(
    st.text(max_size=300),
    st.builds("#{} {}".format, st.sampled_from(["", "#", "###"]), st.text(max_size=30)),
    st.lists(st.sampled_from(["word", "Sentence.", "end!", "why?", "\n", "  "]), max_size=80).map(
        " ".join
    ),
)
PROSE_FILES = st.tuples(
    st.sampled_from([".md", ".markdown", ".txt"]),
    st.lists(PARAGRAPHS, max_size=8).map("\n\n".join),
)

TEXT_FILES = st.one_of(JSON_DOCUMENTS, JSON_LINES, csv_files(), QA_FILES, PROSE_FILES)


# ---- bytes ----------------------------------------------------------------------------

ENCODINGS = ("utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32", "latin-1", "crlf")


def encode(text: str, encoding: str) -> bytes:
    """The text in ``encoding`` (lone surrogates kept as the invalid bytes they make)."""
    if encoding == "crlf":
        return text.replace("\n", "\r\n").encode("utf-8", "surrogatepass")
    if encoding == "latin-1":
        return text.encode("latin-1", "replace")
    return text.encode(encoding, "surrogatepass")


MUTATIONS = st.tuples(
    st.sampled_from(["insert", "delete", "truncate", "replace"]),
    st.floats(0, 1),
    st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\r", b"\n", b'"', b"{"])
    | st.binary(min_size=1, max_size=4),
)


def mutate(data: bytes, mutations: list[tuple[str, float, bytes]]) -> bytes:
    for op, where, chunk in mutations:
        at = int(where * len(data))
        if op == "insert":
            data = data[:at] + chunk + data[at:]
        elif op == "delete":
            data = data[:at] + data[at + len(chunk) :]
        elif op == "truncate":
            data = data[:at]
        else:
            data = data[:at] + chunk + data[at + len(chunk) :]
    return data


@st.composite
def encoded_files(draw: st.DrawFn) -> tuple[str, bytes]:
    extension, text = draw(TEXT_FILES)
    encoding = draw(mostly(st.just("utf-8"), st.sampled_from(ENCODINGS)))
    data = mutate(
        encode(text, encoding), draw(mostly(st.just([]), st.lists(MUTATIONS, max_size=3)))
    )
    return extension, data


def _deep(depth: int, opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    return opener * depth + closer * depth


def huge_input(kind: str, n: int) -> tuple[tuple[str, ...], bytes]:
    """(extensions, bytes) of one pathological input of size about ``n``."""
    json_exts = (".json", ".jsonl", ".ndjson")
    prose_exts = (".md", ".markdown", ".txt")
    if kind == "deep_array":
        return json_exts, _deep(n)
    if kind == "deep_object":
        return json_exts, b'{"a":' * n + b"1" + b"}" * n
    if kind == "deep_unclosed":
        return json_exts, b"[" * n
    if kind == "deep_in_record":
        return json_exts, b'{"prompt":"p","response":"r","metadata":{"a":' + _deep(n) + b"}}"
    if kind == "deep_in_event":
        return json_exts, b'{"content":"c","type":"t","entities":' + _deep(n) + b"}"
    if kind == "deep_in_chat":
        return json_exts, (
            b'{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":'
            + _deep(n)
            + b"}]}"
        )
    if kind == "deep_csv_metadata":
        return (".csv",), b'prompt,response,metadata\np,r,"' + _deep(min(n, 60_000)) + b'"\n'
    if kind == "heading_blanks":
        return prose_exts, b"# a" + b" " * n + b"b\n\nText."
    if kind == "one_word":
        return prose_exts, b"a" * n
    if kind == "sentences":
        return prose_exts, b"Go. " * (n // 4)
    if kind == "blank_lines":
        return (*prose_exts, *json_exts, ".csv"), b" \n\t\r\n" * (n // 5)
    if kind == "csv_columns":
        header = b"prompt,response," + b",".join(b"c%d" % i for i in range(n // 6))
        return (".csv",), header + b"\n" + b"p,r" + b"," * (n // 6) + b"\n"
    if kind == "csv_field":
        return (".csv",), b'prompt,response\n"' + b"x" * n + b'",r\n'
    if kind == "json_string":
        return json_exts, b'{"prompt":"' + b"x" * n + b'","response":"y"}'
    if kind == "qa_long":
        return (".txt",), b"Q: " + b"x" * n + b"\nA: " + b"y " * (n // 2)
    if kind == "many_lines":
        return json_exts, b'{"prompt":"p","completion":"c"}\n' * (n // 32)
    if kind == "big_number":
        return json_exts, b'{"prompt":"a","response":"b","quality_score":' + b"9" * n + b"}"
    if kind == "long_chat":
        turns = min(n // 50, 200)
        messages = [{"role": ("user", "assistant")[i % 2], "content": "x"} for i in range(turns)]
        return json_exts, json.dumps({"messages": messages}).encode()
    raise ValueError(kind)


HUGE_KINDS = (
    "deep_array",
    "deep_object",
    "deep_unclosed",
    "deep_in_record",
    "deep_in_event",
    "deep_in_chat",
    "deep_csv_metadata",
    "heading_blanks",
    "one_word",
    "sentences",
    "blank_lines",
    "csv_columns",
    "csv_field",
    "json_string",
    "qa_long",
    "many_lines",
    "big_number",
    "long_chat",
)


@st.composite
def huge_files(draw: st.DrawFn) -> tuple[str, bytes]:
    extensions, data = huge_input(
        draw(st.sampled_from(HUGE_KINDS)), draw(st.sampled_from(HUGE_SIZES))
    )
    extension = draw(mostly(st.sampled_from(extensions), st.sampled_from(SUPPORTED_EXTENSIONS)))
    return extension, data


RANDOM_BYTES = st.tuples(
    st.sampled_from(SUPPORTED_EXTENSIONS + UNSUPPORTED_EXTENSIONS), st.binary(max_size=2000)
)


@st.composite
def memory_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """A memory file's name and bytes: mostly records of every format with wrong types,
    broken encodings and byte mutations; some random bytes; some huge or deeply nested."""
    extension, data = draw(
        st.one_of(
            mostly(encoded_files(), huge_files(), odds=8),
            RANDOM_BYTES,
        )
    )
    extension = draw(
        mostly(
            st.just(extension),
            st.sampled_from([extension.upper(), *UNSUPPORTED_EXTENSIONS]),
            odds=12,
        )
    )
    stem = draw(st.sampled_from(["memories", "Notes from Ünïcode", "a.b", "-", "x" * 200]))
    return stem + extension, data


# ---- control-socket sessions --------------------------------------------------------


def _one_line(data: bytes) -> bytes:
    return data.replace(b"\n", b" ")


def _line(value: Any) -> bytes:
    return json.dumps(value).encode()


ARG_NAMES = st.sampled_from(
    [
        "profile",
        "query",
        "k",
        "limit",
        "job",
        "kind",
        "mode",
        "preset",
        "config",
        "force",
        "question",
        "compare_base",
        "to",
    ]
)
ARG_VALUES = st.one_of(
    JSON_VALUES,
    st.sampled_from(["no-such-profile", "", "lora", "full", "dual", "quick", 0, 5, -1, 10**20]),
)
REQUESTS = st.fixed_dictionaries(
    {},
    optional={
        "id": mostly(st.integers(), JSON_VALUES, odds=1),
        "cmd": mostly(
            st.sampled_from(KNOWN_COMMANDS), st.one_of(st.text(max_size=30), JSON_VALUES)
        ),
        "args": mostly(st.dictionaries(ARG_NAMES | st.text(max_size=6), ARG_VALUES), JSON_VALUES),
        "extra": JSON_VALUES,
    },
).map(_line)


def _deep_request(depth: int, where: str) -> bytes:
    deep = _deep(depth).decode()
    if where == "bare":
        return deep.encode()
    if where == "id":
        return f'{{"id": {deep}, "cmd": "ping"}}'.encode()
    if where == "args":
        return f'{{"id": 1, "cmd": "status", "args": {{"a": {deep}}}}}'.encode()
    return f'{{"id": 2, "cmd": {deep}}}'.encode()


def _huge_request(cmd: str, size: int, where: str) -> bytes:
    if where == "cmd":
        return _line({"id": 3, "cmd": "x" * size})
    return _line({"id": 4, "cmd": cmd, "args": {"profile": "no-such-profile", "query": "q" * size}})


LINES = st.one_of(
    REQUESTS,
    JSON_VALUES.map(_line),
    st.binary(max_size=300).map(_one_line),
    st.text(max_size=200).map(lambda t: _one_line(t.encode())),
    st.builds(
        lambda head, junk: _one_line(b'{"cmd": "' + head + junk + b'"}'),
        st.sampled_from([b"ping", b"status", b""]),
        st.sampled_from([b"\xff", b"\xc3(", b"\xed\xa0\x80", b"\x80\x80", b"\xf5"]),
    ),
    st.builds(
        _deep_request,
        st.one_of(st.sampled_from([1_000, 5_000, 30_000]), st.integers(800, 1_100)),
        st.sampled_from(["bare", "id", "args", "cmd"]),
    ),
    st.builds(
        lambda digits, body: body.replace(b"N", b"9" * digits),
        st.sampled_from([4_000, 4_300, 4_301, 20_000]),
        st.sampled_from([b'{"id": N, "cmd": "ping"}', b'{"cmd": "jobs", "args": {"limit": N}}']),
    ),
    st.sampled_from([b'{"cmd": "cancel", "args": {"job": 1e999}}', b'{"id": NaN, "cmd": "ping"}']),
    st.builds(
        _huge_request,
        st.sampled_from([*KNOWN_COMMANDS, "no-such-command"]),
        st.integers(1_000, 60_000),
        st.sampled_from(["args", "cmd"]),
    ),
    st.sampled_from([b"", b"   ", b"\t", b"\r", b"\x0b\x0c"]),
)


@dataclass(frozen=True)
class Session:
    """Request lines (without their newline) sent on one connection, all at once
    (pipelined) or one at a time, then an ending: ``close`` after the answers,
    ``half_close`` (shut down writing), ``partial`` (a last line without newline, then
    half-close) or ``oversize`` (a line over the cap)."""

    lines: tuple[bytes, ...]
    pipelined: bool
    ending: str
    tail: bytes = b""

    def __repr__(self) -> str:  # keeps Hypothesis' reports readable
        shown = [line if len(line) <= 120 else line[:120] + b"..." for line in self.lines]
        return (
            f"Session(lines={shown!r}, pipelined={self.pipelined}, ending={self.ending!r}, "
            f"tail={len(self.tail)} bytes)"
        )


@st.composite
def sessions(draw: st.DrawFn, max_line_bytes: int) -> Session:
    lines = tuple(draw(st.lists(LINES, max_size=8)))
    ending = draw(st.sampled_from(["close", "half_close", "partial", "oversize"]))
    tail = b""
    if ending == "partial":
        tail = _one_line(draw(st.binary(min_size=1, max_size=200)))
    elif ending == "oversize":
        size = draw(st.integers(max_line_bytes + 16, 3 * max_line_bytes))
        tail = draw(
            st.sampled_from(
                [
                    b"x" * size + b"\n",
                    b"x" * size,
                    b'{"cmd": "ping", "pad": "' + b"y" * size + b'"}\n',
                ]
            )
        )
    return Session(lines, draw(st.booleans()), ending, tail)

"""parse_bytes never raises, whatever the bytes or JSON values."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.memories import SUPPORTED_EXTENSIONS, Memory, ParseResult, Problem, parse_bytes

NAMES = st.sampled_from([f"f{ext}" for ext in SUPPORTED_EXTENSIONS] + ["f.bin", "f"])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)

# Values shaped like the formats, with fields of any type, to reach the field checks.
KEYS = [
    "id",
    "timestamp",
    "type",
    "content",
    "response",
    "tags",
    "entities",
    "importance",
    "metadata",
    "prompt",
    "completion",
    "quality_score",
    "instruction",
    "input",
    "output",
    "messages",
    "role",
    "userMessage",
    "assistantMessage",
]
shaped_values = st.recursive(
    json_values,
    lambda children: (
        st.dictionaries(st.sampled_from(KEYS), children, max_size=8)
        | st.lists(children, max_size=4)
    ),
    max_leaves=30,
)


def check(result: ParseResult) -> None:
    assert isinstance(result, ParseResult)
    assert all(isinstance(m, Memory) for m in result.memories)
    assert all(isinstance(p, Problem) for p in result.problems)
    assert result.memories or result.problems
    for problem in result.problems:
        assert isinstance(problem.reason, str) and problem.reason
        assert "internal error" not in problem.reason
    for memory in result.memories:
        assert len(memory.id) == 64
        json.dumps(memory.to_record())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=NAMES, data=st.binary(max_size=2000))
def test_arbitrary_bytes(name, data):
    check(parse_bytes(name, data))


@settings(max_examples=300, deadline=None)
@given(name=NAMES, value=shaped_values)
def test_arbitrary_json_values(name, value):
    check(parse_bytes(name, json.dumps(value).encode()))


@settings(max_examples=120, deadline=None)
@given(values=st.lists(shaped_values, max_size=6), ext=st.sampled_from([".jsonl", ".ndjson"]))
def test_arbitrary_json_lines(values, ext):
    data = "\n".join(json.dumps(v) for v in values).encode()
    check(parse_bytes(f"f{ext}", data))


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(st.lists(st.text(max_size=20), max_size=4), max_size=6),
    header=st.sampled_from(
        ["prompt,response", "prompt,completion,quality_score", "instruction,input,output"]
    ),
)
def test_arbitrary_csv(rows, header):
    import csv
    import io

    out = io.StringIO()
    csv.writer(out).writerows(rows)
    check(parse_bytes("f.csv", (header + "\n" + out.getvalue()).encode()))


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("QA: \n\tx#.")), max_size=300))
def test_arbitrary_text(text):
    check(parse_bytes("f.txt", text.encode()))
    check(parse_bytes("f.md", text.encode()))

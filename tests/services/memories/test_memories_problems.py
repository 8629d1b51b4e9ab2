"""File-level and record-level problems, with reasons a person can act on."""

from __future__ import annotations

import json

import pytest

from services.memories import SUPPORTED_EXTENSIONS, Problem, parse_bytes


def file_problem(name: str, data: bytes) -> str:
    result = parse_bytes(name, data)
    assert result.memories == []
    assert len(result.problems) == 1
    (problem,) = result.problems
    assert problem.locator == ""
    return problem.reason


# ---- file level ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a.json", "a.jsonl", "a.csv", "a.txt", "a.md"])
def test_empty_file(name):
    assert "empty" in file_problem(name, b"")
    assert "empty" in file_problem(name, b" \n\r\n\t")


def test_invalid_utf8_names_the_offset_and_the_fix():
    data = b"Q: caf\xe9?\nA: yes\n"
    reason = file_problem("a.txt", data)
    assert "not valid UTF-8" in reason
    assert "0xe9 at offset 6" in reason
    assert "line 1" in reason
    assert "re-save the file as UTF-8" in reason


def test_invalid_utf8_offset_counts_the_bom():
    reason = file_problem("a.md", b"\xef\xbb\xbfok\n\xff")
    assert "offset 6" in reason and "line 2" in reason


def test_invalid_utf16():
    reason = file_problem("a.txt", b"\xff\xfea\x00\x00\xd8")  # BOM, "a", lone surrogate
    assert "not valid UTF-16" in reason and "UTF-8" in reason


def test_binary_content():
    reason = file_problem("photo.json", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    assert "binary content" in reason and "NUL byte at offset 8" in reason


def test_utf16_without_bom_is_binary_with_a_hint():
    reason = file_problem("a.txt", "hello".encode("utf-16-le"))
    assert "binary content" in reason and "UTF-16" in reason


def test_invalid_json_document():
    reason = file_problem("a.json", b'{"prompt": "a", "response": "b",}')
    assert reason.startswith("invalid JSON: ")
    assert "line 1, column 33" in reason
    assert "fix the file" in reason


@pytest.mark.parametrize(
    ("data", "expected"),
    [(b"42", "a number"), (b'"text"', "a string"), (b"null", "null")],
)
def test_json_document_of_the_wrong_kind(data, expected):
    reason = file_problem("a.json", data)
    assert expected in reason and "expected an object or an array of objects" in reason


def test_unsupported_extension_lists_the_supported_ones():
    reason = file_problem("notes.docx", b"PK\x03\x04")
    assert "unsupported file type '.docx'" in reason
    for ext in SUPPORTED_EXTENSIONS:
        assert ext in reason
    assert "(none)" in file_problem("README", b"hello")


def test_no_records_found():
    assert "no records found" in file_problem("a.json", b"[]")
    assert "no records found" in file_problem("a.csv", b"prompt,response\n")
    assert "no records found" in file_problem("a.csv", b"prompt,response\n,\n\n")


def test_csv_without_a_known_header():
    reason = file_problem("a.csv", b"question,answer\nwho,me\n")
    assert "prompt,response" in reason and "found: question, answer" in reason


def test_too_deeply_nested_json_is_a_problem_not_a_crash():
    reason = file_problem("a.json", b"[" * 100_000 + b"]" * 100_000)
    assert "nested too deeply" in reason


# ---- record level ----------------------------------------------------------------------

GOOD = '{"prompt": "good", "response": "record"}'


def check(name: str, text: str, locator: str, *fragments: str, good: int = 1) -> Problem:
    result = parse_bytes(name, text.encode())
    assert len(result.memories) == good, result
    matching = [p for p in result.problems if p.locator == locator]
    assert len(matching) == 1, result.problems
    (problem,) = matching
    assert problem.reason.startswith(f"{locator}: ") or not locator
    for fragment in fragments:
        assert fragment in problem.reason, problem.reason
    return problem


def test_bad_jsonl_line_keeps_the_rest():
    text = f'{GOOD}\n{GOOD[:-1]}\n{{"prompt": "x" "response": "y"}}\n{GOOD}\n'
    result = parse_bytes("a.jsonl", text.encode())
    assert len(result.memories) == 2
    assert [p.locator for p in result.problems] == ["line 2", "line 3"]
    assert result.problems[1].reason == (
        "line 3: invalid JSON (Expecting ',' delimiter, column 16); fix or remove the line"
    )


def test_jsonl_line_that_is_not_an_object():
    check("a.jsonl", f"{GOOD}\n[1, 2]\n", "line 2", "expected a JSON object, got an array")


def test_unknown_shape_names_the_fields_and_the_expected_shapes():
    problem = check("a.jsonl", f'{GOOD}\n{{"question": "q", "answer": "a"}}\n', "line 2")
    assert "unknown record shape (fields: answer, question)" in problem.reason
    assert "prompt+response" in problem.reason


@pytest.mark.parametrize(
    ("record", "fragment"),
    [
        ({"content": "x"}, "none of id, timestamp, type"),
        ({"prompt": "x"}, "prompt but no completion or response"),
        ({"instruction": "x"}, "instruction but no output"),
        ({"response": "x"}, "no prompt"),
        ({}, "empty object"),
    ],
)
def test_near_miss_shapes_get_a_hint(record, fragment):
    check("a.json", json.dumps([json.loads(GOOD), record]), "item 2", fragment)


def test_importance_of_the_wrong_type():
    event = {"id": "evt-1", "content": "x", "importance": "high"}
    check(
        "a.jsonl",
        f"{GOOD}\n{json.dumps(event)}",
        "line 2",
        'importance must be a number from 0 to 1, got the string "high"',
    )


@pytest.mark.parametrize("value", [42, -1, 10.5, "8", True, None])
def test_quality_score_out_of_range_or_wrong_type(value):
    record = {"prompt": "p", "completion": "c", "quality_score": value}
    result = parse_bytes("a.jsonl", f"{GOOD}\n{json.dumps(record)}".encode())
    if value is None:  # null means absent
        assert len(result.memories) == 2
        return
    assert len(result.memories) == 1
    (problem,) = result.problems
    assert problem.locator == "line 2"
    assert "quality_score must be a number from 0 to 10" in problem.reason


def test_quality_score_nan_is_rejected():
    check(
        "a.jsonl",
        f'{GOOD}\n{{"prompt": "p", "completion": "c", "quality_score": NaN}}',
        "line 2",
        "quality_score must be a number from 0 to 10, got nan",
    )


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("content", 5, "content must be a string, or an object"),
        ("content", {"text": "x"}, "content must be a string, or an object"),
        ("content", "  ", "content is empty"),
        ("type", 3, "type must be a non-empty string"),
        ("timestamp", "yesterday", "not an ISO 8601 date-time"),
        ("timestamp", 1e300, "out of range as epoch seconds"),
        ("timestamp", [2025], "must be an ISO 8601 string or a number"),
        ("tags", "work", "tags must be an array"),
        ("tags", ["work", 1], "tags must be an array of strings"),
        ("entities", {"a": 1}, "entities must be an array"),
        ("metadata", ["x"], "metadata must be an object"),
        ("response", 1, "field 'response' must be a string"),
    ],
)
def test_metahuman_field_problems(field, value, fragment):
    event = {"id": "evt-2", "timestamp": "2025-11-06T12:00:00Z", "content": "x", field: value}
    check("a.json", json.dumps([json.loads(GOOD), event]), "item 2", fragment)


def test_single_object_file_problem_has_the_empty_locator():
    result = parse_bytes("e.json", b'{"id": "e", "content": "x", "importance": 7}')
    assert result.memories == []
    assert result.problems == [
        Problem(
            "importance must be a number from 0 to 1, got 7; fix the value or remove the field",
            "",
        )
    ]


def test_record_field_of_the_wrong_type():
    check(
        "a.jsonl",
        f'{GOOD}\n{{"prompt": 1, "response": "r"}}',
        "line 2",
        "'prompt' must be a string",
    )
    check("a.jsonl", f'{GOOD}\n{{"prompt": null, "response": "r"}}', "line 2", "'prompt' is null")
    check("a.jsonl", f'{GOOD}\n{{"prompt": "", "response": " "}}', "line 2", "the record is empty")


def test_csv_rows_with_missing_or_extra_columns():
    text = "prompt,response\na,b\nonly one\nc,d,e\nf,g\n"
    result = parse_bytes("a.csv", text.encode())
    assert [(m.prompt, m.locator) for m in result.memories] == [("a", "row 1"), ("f", "row 4")]
    missing, extra = result.problems
    assert missing.locator == "row 2"
    assert missing.reason == (
        "row 2 (line 3): 1 values, but the header names 2 columns (prompt, response); "
        "fill in the missing values"
    )
    assert extra.locator == "row 3"
    assert "3 values" in extra.reason and "quote values that contain commas" in extra.reason


def test_csv_bad_quality_score_and_metadata_cells():
    text = 'prompt,completion,quality_score,metadata\na,b,high,\nc,d,5,"{""k"": 1}"\ne,f,,[x\n'
    result = parse_bytes("a.csv", text.encode())
    assert [(m.prompt, m.metadata) for m in result.memories] == [("c", {"k": 1})]
    first, third = result.problems
    assert first.locator == "row 1" and 'got the string "high"' in first.reason
    assert third.locator == "row 3" and "metadata cell is not a JSON object" in third.reason


def test_chat_problems():
    good = {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}
    no_assistant = {"messages": [{"role": "user", "content": "u"}]}
    bad_message = {"messages": [{"role": "user", "content": "u"}, "hi"]}
    no_role = {"messages": [{"content": "u"}]}
    not_list = {"messages": "hello"}
    orphan = {"messages": [{"role": "assistant", "content": "a"}, *good["messages"]]}
    lines = [good, no_assistant, bad_message, no_role, not_list, orphan]
    result = parse_bytes("c.jsonl", "\n".join(json.dumps(x) for x in lines).encode())
    assert [m.locator for m in result.memories] == ["line 1, message 2", "line 6, message 3"]
    reasons = {p.locator: p.reason for p in result.problems}
    assert "no assistant turn" in reasons["line 2"]
    assert "message 2 must be an object with role and content" in reasons["line 3"]
    assert "message 1: role must be a string" in reasons["line 4"]
    assert "messages must be an array" in reasons["line 5"]
    assert "no user turn before it" in reasons["line 6, message 1"]


def test_qa_problems():
    text = "A: stray answer\nQ: fine?\nA: fine.\nQ: unanswered\n\nQ:\nA: empty question\n"
    result = parse_bytes("qa.txt", text.encode())
    assert [(m.prompt, m.response) for m in result.memories] == [("fine?", "fine.")]
    reasons = {p.locator: p.reason for p in result.problems}
    assert "without a Q: question" in reasons["line 1"]
    assert "has no answer" in reasons["line 4"]
    assert "question is empty" in reasons["line 6"]


def test_unpaired_surrogate_is_a_record_problem():
    text = f'{GOOD}\n{{"prompt": "bad \\ud800", "response": "r"}}\n'
    check("a.jsonl", text, "line 2", "unpaired surrogate")
    event = '{"id": "e", "content": "x \\udc00"}'
    assert "unpaired surrogate" in parse_bytes("e.json", event.encode()).problems[0].reason


def test_huge_integer_is_a_problem_not_a_crash():
    check("a.jsonl", f'{GOOD}\n{{"prompt": {"9" * 5000}}}', "line 2", "cannot read the JSON")

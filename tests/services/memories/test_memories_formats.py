"""Every memory format, from real MetaHuman events and small inline samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.memories import Memory, parse_bytes
from tests.paths import FIXTURES

METAHUMAN = FIXTURES / "metahuman"
EVENT_FILES = sorted(p for p in METAHUMAN.glob("evt*.json"))


def only(result) -> Memory:
    assert result.problems == []
    assert len(result.memories) == 1
    return result.memories[0]


def test_fixtures_are_there():
    assert len(EVENT_FILES) >= 10


@pytest.mark.parametrize("path", EVENT_FILES, ids=lambda p: p.name)
def test_every_metahuman_fixture_is_one_memory(path: Path):
    event = json.loads(path.read_text(encoding="utf-8"))
    memory = only(parse_bytes(path.name, path.read_bytes()))
    assert memory.format == "metahuman"
    assert memory.type == event.get("type", "observation")
    assert memory.timestamp == event["timestamp"]
    assert memory.locator == ""
    assert memory.metadata["eventId"] == event["id"]
    for key, value in event.get("metadata", {}).items():
        assert memory.metadata[key] == value
    if isinstance(event["content"], str):
        assert memory.prompt == event["content"]
        assert memory.response is None


def test_metahuman_observation_fields():
    path = METAHUMAN / "evt-20251019143000.json"
    memory = only(parse_bytes(path.name, path.read_bytes()))
    assert memory.type == "observation"
    assert memory.prompt == "Met with Sarah about ML project"
    assert memory.timestamp == "2025-10-19T14:30:00.000Z"
    assert memory.importance == 0.7
    assert memory.tags == ("meeting", "work", "ml")
    assert memory.entities == ("Sarah", "ML project")
    assert memory.cognitive_mode == "dual"
    assert memory.text == "Met with Sarah about ML project"


def test_metahuman_tool_invocation_keeps_tool_metadata():
    path = METAHUMAN / "evt-20251106123456-abcd1234.json"
    memory = only(parse_bytes(path.name, path.read_bytes()))
    assert memory.type == "tool_invocation"
    assert memory.metadata["toolName"] == "search"
    assert memory.metadata["toolInputs"] == {"query": "machine learning", "limit": 10}
    assert memory.metadata["toolOutputs"]["count"] == 10
    assert memory.metadata["userId"] == "user-12345"
    assert memory.importance == 0.6


def test_metahuman_content_object_is_prompt_and_response():
    path = METAHUMAN / "evt_abc123.json"
    memory = only(parse_bytes(path.name, path.read_bytes()))
    assert memory.type == "conversation"
    assert memory.prompt == "What tasks are due?"
    assert memory.response == "You have 3 tasks due today..."
    assert memory.timestamp == "2025-11-25T14:30:00Z"
    assert memory.text == "What tasks are due?\nYou have 3 tasks due today..."


def test_metahuman_type_defaults_to_observation():
    path = METAHUMAN / "evt-20251106120000-test.json"
    memory = only(parse_bytes(path.name, path.read_bytes()))
    assert memory.type == "observation"
    assert memory.importance is None


def test_metahuman_optional_response_and_epoch_timestamp():
    event = {
        "id": "evt-1",
        "timestamp": 1700000000,
        "type": "conversation",
        "content": "How was the trip?",
        "response": "Long, but worth it.",
        "importance": 1,
    }
    memory = only(parse_bytes("e.json", json.dumps(event).encode()))
    assert memory.response == "Long, but worth it."
    assert memory.timestamp == "2023-11-14T22:13:20Z"
    assert memory.importance == 1.0


def test_fractional_epoch_timestamp():
    event = {"id": "e", "timestamp": 1700000000.25, "content": "x"}
    assert only(parse_bytes("e.json", json.dumps(event).encode())).timestamp == (
        "2023-11-14T22:13:20.250Z"
    )


def test_metahuman_events_in_an_array_and_in_jsonl():
    events = [json.loads(p.read_text()) for p in EVENT_FILES]
    array = parse_bytes("all.json", json.dumps(events, indent=2).encode())
    lines = parse_bytes("all.jsonl", "\n".join(json.dumps(e) for e in events).encode())
    assert array.problems == [] and lines.problems == []
    assert [m.locator for m in array.memories] == [f"item {i}" for i in range(1, len(events) + 1)]
    assert [m.locator for m in lines.memories] == [f"line {i}" for i in range(1, len(events) + 1)]
    assert [m.id for m in array.memories] == [m.id for m in lines.memories]


def test_prompt_completion_jsonl():
    data = (
        b'{"prompt": "What do you do on Sundays?", "completion": "Long walks.",'
        b' "quality_score": 8, "metadata": {"source": "export"}}\n'
        b'{"prompt": "Tea or coffee?", "completion": "Tea, always."}\n'
    )
    result = parse_bytes("pc.jsonl", data)
    assert result.problems == []
    first, second = result.memories
    assert (first.format, first.type) == ("prompt_completion", "conversation")
    assert (first.prompt, first.response) == ("What do you do on Sundays?", "Long walks.")
    assert first.quality_score == 8.0
    assert first.metadata == {"source": "export"}
    assert second.quality_score is None
    assert first.locator == "line 1" and second.locator == "line 2"


def test_prompt_completion_json_array():
    data = json.dumps([{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": "d"}])
    result = parse_bytes("pc.json", data.encode())
    assert [(m.prompt, m.response) for m in result.memories] == [("a", "b"), ("c", "d")]


def test_prompt_response_json_and_ndjson():
    single = only(parse_bytes("pr.json", b'{"prompt": "Hi", "response": "Hello!"}'))
    assert (single.format, single.type, single.prompt, single.response) == (
        "prompt_response",
        "conversation",
        "Hi",
        "Hello!",
    )
    lines = parse_bytes("pr.ndjson", b'{"prompt": "Hi", "response": "Hello!"}\n')
    assert only(lines).id == single.id


def test_prompt_response_csv():
    data = b'prompt,response\n"Where do you live?","By the sea, in a small town."\nHi,Hey\n'
    result = parse_bytes("pr.csv", data)
    assert result.problems == []
    assert [(m.prompt, m.response, m.locator) for m in result.memories] == [
        ("Where do you live?", "By the sea, in a small town.", "row 1"),
        ("Hi", "Hey", "row 2"),
    ]
    assert all(m.format == "prompt_response" for m in result.memories)


def test_csv_variants_and_optional_columns():
    pc = parse_bytes("pc.csv", b"Prompt , Completion,quality_score\na,b,9\nc,d,\n")
    assert [(m.format, m.quality_score) for m in pc.memories] == [
        ("prompt_completion", 9.0),
        ("prompt_completion", None),
    ]
    alpaca = parse_bytes("al.csv", b"instruction,input,output\nSum,2 and 2,4\nGreet,,Hello\n")
    assert [(m.format, m.type, m.prompt, m.response) for m in alpaca.memories] == [
        ("alpaca", "task", "Sum\n\n2 and 2", "4"),
        ("alpaca", "task", "Greet", "Hello"),
    ]


def test_csv_multiline_quoted_and_crlf():
    data = b'prompt,response\r\n"line one\r\nline two","ok"\r\n'
    memory = only(parse_bytes("m.csv", data))
    assert memory.prompt == "line one\nline two"


def test_alpaca_json():
    data = [
        {"instruction": "Translate to French", "input": "good morning", "output": "bonjour"},
        {"instruction": "Name a colour", "input": "", "output": "blue"},
        {"instruction": "Name a fruit", "output": "apple"},
    ]
    result = parse_bytes("alpaca.json", json.dumps(data).encode())
    assert result.problems == []
    assert [(m.format, m.type, m.prompt, m.response) for m in result.memories] == [
        ("alpaca", "task", "Translate to French\n\ngood morning", "bonjour"),
        ("alpaca", "task", "Name a colour", "blue"),
        ("alpaca", "task", "Name a fruit", "apple"),
    ]


def test_chat_one_memory_per_assistant_turn_with_context():
    convo = {
        "messages": [
            {"role": "system", "content": "You are Ana."},
            {"role": "user", "content": "Hi!"},
            {"role": "assistant", "content": "Hey, how are you?"},
            {"role": "user", "content": "Tired. You?"},
            {"role": "assistant", "content": "Same, long week."},
        ]
    }
    result = parse_bytes("chat.jsonl", (json.dumps(convo) + "\n").encode())
    assert result.problems == []
    first, second = result.memories
    assert (first.format, first.type) == ("chat", "chat")
    assert (first.prompt, first.response) == ("Hi!", "Hey, how are you?")
    assert first.context == ({"role": "system", "content": "You are Ana."},)
    assert (second.prompt, second.response) == ("Tired. You?", "Same, long week.")
    assert second.context == (
        {"role": "system", "content": "You are Ana."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hey, how are you?"},
    )
    assert first.locator == "line 1, message 3"
    assert second.locator == "line 1, message 5"
    assert first.id != second.id


def test_long_chat_keeps_the_system_message_and_the_latest_turns_as_context():
    from services.memories.chat import MAX_CONTEXT_CHARS, MAX_CONTEXT_MESSAGES

    turns = [{"role": "system", "content": "You are Ana."}]
    for i in range(2000):
        turns.append({"role": "user", "content": f"question {i}"})
        turns.append({"role": "assistant", "content": f"answer {i}"})
    result = parse_bytes("chat.json", json.dumps({"messages": turns}).encode())
    assert result.problems == [] and len(result.memories) == 2000
    last = result.memories[-1]
    assert (last.prompt, last.response) == ("question 1999", "answer 1999")
    assert len(last.context) == MAX_CONTEXT_MESSAGES
    assert last.context[0] == {"role": "system", "content": "You are Ana."}
    assert last.context[-1] == {"role": "assistant", "content": "answer 1998"}
    assert last.context[1] == {"role": "assistant", "content": "answer 1983"}
    # Short conversations keep all of it (and their ids) as before.
    assert len(result.memories[3].context) == 1 + 2 * 3
    # Long messages: the context stops at the character budget.
    big = [{"role": "user", "content": "x" * 6000}, {"role": "assistant", "content": "y" * 6000}]
    result = parse_bytes(
        "chat.json",
        json.dumps({"messages": [*big, *big, {"role": "user", "content": "q"}, big[1]]}).encode(),
    )
    context = result.memories[-1].context
    assert sum(len(m["content"]) for m in context) <= MAX_CONTEXT_CHARS
    assert [m["content"][0] for m in context] == ["x", "y"]


def test_chat_content_parts_and_tool_call_turns():
    convo = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]},
            {"role": "tool", "content": "sunny"},
            {"role": "assistant", "content": "Sunny today."},
        ]
    }
    memory = only(parse_bytes("c.json", json.dumps(convo).encode()))
    assert (memory.prompt, memory.response) == ("Weather?", "Sunny today.")
    assert memory.locator == "message 4"


def test_qa_text():
    text = (
        "My interview notes\n\n"
        "Q: What is your favourite book?\n"
        "A: The Left Hand of Darkness.\n"
        "It changed how I think.\n\n"
        "Q: Why?\n"
        "Because of Genly Ai.\n"
        "A: Ambiguity.\n"
    )
    result = parse_bytes("interview.txt", text.encode())
    assert result.problems == []
    first, second = result.memories
    assert (first.format, first.type) == ("qa", "conversation")
    assert first.prompt == "What is your favourite book?"
    assert first.response == "The Left Hand of Darkness.\nIt changed how I think."
    assert first.locator == "line 3"
    assert second.prompt == "Why?\nBecause of Genly Ai."
    assert second.response == "Ambiguity."


def test_prose_markdown_short_text_is_one_chunk():
    text = "# A day at the lake\n\nWe swam.\n\nThen we slept in the sun.\n"
    memory = only(parse_bytes("lake.md", text.encode()))
    assert (memory.format, memory.type, memory.prompt) == ("prose", "prose", "")
    assert memory.response == text.strip()
    assert memory.metadata == {"title": "A day at the lake", "chunk": 1, "chunks": 1}
    assert memory.locator == "chunk 1"


def test_prose_txt_title_is_file_stem():
    memory = only(parse_bytes("dir/Sunday morning.txt", b"Nothing but coffee and rain."))
    assert memory.metadata["title"] == "Sunday morning"
    assert memory.response == "Nothing but coffee and rain."


def test_markdown_extension_and_qa_lines_in_markdown_are_prose():
    memory = only(parse_bytes("n.markdown", b"Q: not parsed\nA: as a pair"))
    assert memory.format == "prose"


def test_bom_and_crlf_are_normalised():
    plain = only(parse_bytes("a.txt", b"Q: one\ntwo\nA: three\n"))
    bom_crlf = only(parse_bytes("a.txt", b"\xef\xbb\xbfQ: one\r\ntwo\r\nA: three\r\n"))
    assert (bom_crlf.prompt, bom_crlf.response) == ("one\ntwo", "three")
    assert bom_crlf.id == plain.id


def test_utf16_with_bom_is_decoded():
    text = '{"prompt": "caf\u00e9", "response": "oui"}'
    for data in (text.encode("utf-16"), b"\xfe\xff" + text.encode("utf-16-be")):
        memory = only(parse_bytes("u.json", data))
        assert memory.prompt == "caf\u00e9"


def test_non_ascii_text_is_kept():
    memory = only(parse_bytes("u.json", '{"prompt": "Grüße 👋", "response": "日本"}'.encode()))
    assert (memory.prompt, memory.response) == ("Grüße 👋", "日本")


def test_json_lines_in_a_json_file_and_pretty_json_in_a_jsonl_file():
    lines = b'{"prompt": "a", "response": "b"}\n{"prompt": "c", "response": "d"}\n'
    assert len(parse_bytes("x.json", lines).memories) == 2
    pretty = json.dumps({"prompt": "a", "response": "b"}, indent=2).encode()
    assert only(parse_bytes("x.jsonl", pretty)).prompt == "a"


def test_memories_round_trip_through_records():
    path = METAHUMAN / "evt-20251106123456-abcd1234.json"
    memory = only(parse_bytes(path.name, path.read_bytes()))
    assert Memory.from_record(json.loads(json.dumps(memory.to_record()))) == memory


def test_pretty_json_array_in_a_jsonl_file_and_single_line_locator():
    pretty = json.dumps(
        [{"prompt": "a", "response": "b"}, {"prompt": "c", "response": "d"}], indent=2
    )
    result = parse_bytes("x.jsonl", pretty.encode())
    assert [m.locator for m in result.memories] == ["item 1", "item 2"]
    assert only(parse_bytes("y.jsonl", b'{"prompt": "a", "response": "b"}\n')).locator == "line 1"


def test_csv_empty_response_cell_matches_json_empty_response():
    from_csv = only(parse_bytes("a.csv", b"prompt,response\nJust a thought,\n"))
    from_json = only(parse_bytes("a.json", b'{"prompt": "Just a thought", "response": ""}'))
    assert from_csv.response == "" and from_csv.id == from_json.id


def test_csv_timestamp_column():
    result = parse_bytes(
        "t.csv", b"prompt,response,timestamp\na,b,1700000000\nc,d,2025-11-06T12:00:00Z\ne,f,\n"
    )
    assert [m.timestamp for m in result.memories] == [
        "2023-11-14T22:13:20Z",
        "2025-11-06T12:00:00Z",
        None,
    ]

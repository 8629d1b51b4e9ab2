"""From real-format memories to the run directory's dataset files."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.curation import ContaminationError, Sample, curate, load_mode_configs, load_rules
from services.dataset_build import (
    CURATED_MEMORIES,
    DATASET_FILES,
    FINE_TUNE_DATASET,
    FORMATTED_SAMPLES,
    RUN_SUMMARY,
    SCHEMA_APPLIED,
    DatasetError,
    build_dataset,
    select_samples,
)
from services.memories.model import Memory
from services.schemas import Renderer
from tests.services.curation_inputs import (
    alpaca,
    chat,
    metahuman,
    metahuman_fixture,
    prompt_completion,
    prose,
    qa,
)

RULES = load_rules()
MODE_CONFIGS = load_mode_configs()
CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
JSONL_KEYS = [
    "id",
    "mode",
    "kind",
    "weight",
    "quality",
    "split",
    "messages",
    "prompt",
    "completion",
    "text",
]
CHUNK = (
    "The harbour was quiet that winter. Boats rocked against their ropes, and the gulls "
    "argued over scraps while my grandfather mended nets in the shed.\n\n"
    "He never spoke much, but he hummed old songs whose words he had long forgotten."
)


def corpus() -> list[Memory]:
    return [
        # MetaHuman: an observation with cognitiveMode dual and importance 0.7 -> dual, 7.0
        metahuman_fixture("evt-20251019143000.json"),
        # MetaHuman: a reflection with a response, importance 0.9 -> dual, 9.0
        metahuman(
            {
                "id": "evt-20251102210000",
                "timestamp": "2025-11-02T21:00:00.000Z",
                "type": "reflection",
                "content": "Why do I always leave the hardest task for Friday?",
                "response": "Because by Friday the week has decided for me, and I like that.",
                "importance": 0.9,
            }
        ),
        # MetaHuman tool event without override -> agent, importance 0.85 -> 8.5
        metahuman(
            {
                "id": "evt-20251103100000",
                "type": "tool_invocation",
                "content": "Look up tomorrow's weather in Lisbon",
                "importance": 0.85,
                "metadata": {
                    "toolName": "weather",
                    "toolInputs": {"city": "Lisbon"},
                    "toolOutputs": {"forecast": "sun", "high_c": 24},
                    "success": True,
                },
            }
        ),
        # prompt/completion with quality_score and filler -> emulation, 9.5
        prompt_completion(
            "What do you do on a rainy Sunday?",
            "Great question! I read in the window seat with a pot of tea and ignore my phone. "
            "I hope this helps!",
            9.5,
        ),
        # prompt/completion below the minimum -> excluded (low_quality)
        prompt_completion("Any plans?", "Not really, maybe a walk by the canal later on.", 6.99),
        # too short -> excluded (too_short)
        prompt_completion("Are you coming?", "Yes, later.", 9.0),
        # alpaca -> agent (heuristic 8.0)
        alpaca(
            "Turn this into a shopping list.",
            "We need eggs, two kinds of cheese, and some fresh basil.",
            "- eggs\n- cheddar\n- mozzarella\n- fresh basil for the pasta tonight",
        ),
        # chat with context -> emulation, 8.0
        chat(
            [
                {"role": "user", "content": "Coffee or tea?"},
                {"role": "assistant", "content": "Tea, always."},
                {"role": "user", "content": "Why tea?"},
                {"role": "assistant", "content": "Coffee makes me jittery, and tea is a ritual."},
            ],
            quality_score=8.0,
        ),
        # Q&A -> emulation (heuristic 8.0)
        qa("What is your favourite season?", "Autumn, for the light and the cold clear mornings."),
        # prose -> continuation (heuristic 8.0)
        prose(CHUNK, "Harbour Winters", 1, 3),
        # conversation without a response -> excluded (no_response)
        metahuman_fixture("evt-20251107120000-abc123.json"),
    ]


def build(
    tmp_path: Path,
    name: str = "run",
    memories: list[Memory] | None = None,
    *,
    renderer: Renderer | None = None,
    mode: str | None = None,
    max_samples: int | None = None,
    samples: list[Sample] | None = None,
    persona: str | None = None,
) -> tuple[Path, Any]:
    memories = corpus() if memories is None else memories
    samples = [curate(m, RULES) for m in memories] if samples is None else samples
    out = tmp_path / name
    summary = build_dataset(
        memories,
        samples,
        renderer or Renderer.from_family("smollm"),
        out,
        mode=mode,
        max_samples=max_samples,
        rules=RULES,
        mode_configs=MODE_CONFIGS,
        created=CREATED,
        persona=persona,
    )
    return out, summary


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_full_build(tmp_path: Path) -> None:
    renderer = Renderer.from_family("smollm")
    out, summary = build(tmp_path, renderer=renderer)
    assert sorted(p.name for p in out.iterdir()) == sorted([*DATASET_FILES, RUN_SUMMARY])

    rows = read_jsonl(out / FINE_TUNE_DATASET)
    assert all(list(r) == JSONL_KEYS for r in rows)
    assert len(rows) == 8
    # Highest quality first, ties by id.
    assert [r["quality"] for r in rows] == sorted((r["quality"] for r in rows), reverse=True)
    for a, b in itertools.pairwise(rows):
        if a["quality"] == b["quality"]:
            assert a["id"] < b["id"]
    by_mode = {r["mode"] for r in rows}
    assert by_mode == {"dual", "emulation", "agent"}

    for r in rows:
        assert r["text"] == r["prompt"] + r["completion"]
        if r["kind"] == "chat":
            assert (r["prompt"], r["completion"]) == renderer.split(r["messages"])
            assert r["text"] == renderer.render(r["messages"])
        else:
            assert r["prompt"] == ""
            assert r["completion"] == renderer.continuation(CHUNK) == CHUNK + "<|im_end|>"

    top = rows[0]
    assert (top["mode"], top["weight"], top["quality"]) == ("emulation", 2.0, 9.5)
    assert top["messages"] == [
        {"role": "user", "content": "<user>What do you do on a rainy Sunday?</user>"},
        {
            "role": "assistant",
            "content": "<assistant>I read in the window seat with a pot of tea and ignore my "
            "phone.</assistant>",
        },
    ]
    assert top["completion"] == (
        "<assistant>I read in the window seat with a pot of tea and ignore my phone."
        "</assistant><|im_end|>\n"
    )
    assert (
        "<|im_start|>user\n<user>What do you do on a rainy Sunday?</user><|im_end|>\n"
        in (top["prompt"])
    )
    agent = next(r for r in rows if r["mode"] == "agent" and "weather" in r["text"])
    assert agent["messages"][0]["content"] == (
        "<instruction>Look up tomorrow's weather in Lisbon</instruction>"
    )
    action = agent["messages"][1]["content"].removeprefix("<action>").removesuffix("</action>")
    assert json.loads(action) == {
        "tool": "weather",
        "inputs": {"city": "Lisbon"},
        "outputs": {"forecast": "sun", "high_c": 24},
        "success": True,
    }
    assert agent["weight"] == 1.5
    dual = [r for r in rows if r["mode"] == "dual"]
    assert {r["weight"] for r in dual} == {2.0, 1.0}
    chat_row = next(r for r in rows if len(r["messages"]) == 4)
    assert [m["content"] for m in chat_row["messages"][:2]] == [
        "<user>Coffee or tea?</user>",
        "<assistant>Tea, always.</assistant>",
    ]
    assert all(r["split"] in ("train", "eval") for r in rows)

    # The other files agree with the JSONL.
    memories = json.loads((out / CURATED_MEMORIES).read_text(encoding="utf-8"))
    assert [m["id"] for m in memories] == [r["id"] for r in rows]
    assert memories[0]["format"] == "prompt_completion"
    formatted = json.loads((out / FORMATTED_SAMPLES).read_text(encoding="utf-8"))
    assert [f["memory_id"] for f in formatted] == [r["id"] for r in rows]
    assert all(f["messages"] == r["messages"] for f, r in zip(formatted, rows, strict=True))
    assert all(
        f["weight"] == r["weight"] and f["mode"] == r["mode"]
        for f, r in zip(formatted, rows, strict=True)
    )
    applied = json.loads((out / SCHEMA_APPLIED).read_text(encoding="utf-8"))
    assert applied["family"] == "smollm"
    assert applied["template_source"] == renderer.template_source
    assert applied["eos_token"] == "<|im_end|>"
    assert applied["stop"] == list(renderer.schema.stop)
    assert applied["chat_template"] == renderer.template
    assert applied["example"]["id"] == rows[0]["id"]
    assert applied["example"]["text"] == rows[0]["text"]
    assert applied["continuation_example"]["completion"] == CHUNK + "<|im_end|>"

    run = json.loads((out / RUN_SUMMARY).read_text(encoding="utf-8"))
    assert run == summary.to_dict()
    assert run["status"] == "ok"
    assert run["created"] == "2026-01-02T03:04:05+00:00"
    ds = run["dataset"]
    assert ds["mode_filter"] is None and ds["max_samples"] is None
    assert ds["counts"] == {
        "samples": 11,
        "other_modes": 0,
        "excluded": 3,
        "eligible": 8,
        "over_max": 0,
        "selected": 8,
        "train": sum(r["split"] == "train" for r in rows),
        "eval": sum(r["split"] == "eval" for r in rows),
        "question_samples": 0,  # without a persona, no questions in other words
    }
    assert ds["excluded_by_reason"] == {"low_quality": 1, "no_response": 1, "too_short": 1}
    assert ds["excluded_examples"]["too_short"]["reason"] == (
        "response has 2 words; at least 5 needed"
    )
    assert ds["contamination"] == {"ok": True, "offenders": {}}
    assert ds["schema"]["family"] == "smollm"
    metrics = run["metrics"]
    assert metrics["total"] == 8
    assert metrics["modes"]["dual"]["count"] == 2
    assert metrics["modes"]["agent"]["count"] == 2
    assert metrics["modes"]["emulation"]["count"] == 4
    assert metrics["filler_share"] == 0.125
    assert "dual: 2 samples, below min_samples 300 (recommended 3000)" in metrics["warnings"]
    # Token statistics of the rendered lines (no tokenizer given: the estimate, said so).
    tokens = metrics["tokens"]
    assert tokens["tokenizer"] == "estimate (words x 4/3)" and tokens["samples"] == 8
    assert 0 < tokens["min"] <= tokens["avg"] <= tokens["max"]
    assert tokens["prose_outside"] == 1  # the one short prose chunk
    assert any("prose chunk(s) outside 700-2000 tokens" in w for w in metrics["warnings"])


@pytest.mark.parametrize("family", ["qwen", "llama", "phi"])
def test_other_families_render_the_same_samples(tmp_path: Path, family: str) -> None:
    renderer = Renderer.from_family(family)
    out, _ = build(tmp_path, renderer=renderer)
    rows = read_jsonl(out / FINE_TUNE_DATASET)
    assert len(rows) == 8
    for r in rows:
        if r["kind"] == "chat":
            assert (r["prompt"], r["completion"]) == renderer.split(r["messages"])
            assert r["messages"][-1]["content"] in r["completion"]
        else:
            assert r["completion"] == CHUNK + renderer.schema.eos_token
    assert json.loads((out / SCHEMA_APPLIED).read_text(encoding="utf-8"))["family"] == family


def test_output_is_deterministic(tmp_path: Path) -> None:
    a, _ = build(tmp_path, "a")
    memories = list(reversed(corpus()))
    b, _ = build(tmp_path, "b", memories)
    for name in [*DATASET_FILES, RUN_SUMMARY]:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_mode_filter_and_max(tmp_path: Path) -> None:
    out, summary = build(tmp_path, mode="emulation", max_samples=2)
    rows = read_jsonl(out / FINE_TUNE_DATASET)
    assert [r["mode"] for r in rows] == ["emulation", "emulation"]
    assert [r["quality"] for r in rows] == [9.5, 8.0]
    counts = summary.counts
    assert counts["other_modes"] == 4 + 1  # 2 dual, 2 agent, and the dual conversation
    assert counts["eligible"] == 4
    assert counts["over_max"] == 2
    assert counts["selected"] == 2
    assert summary.excluded_by_reason == {"low_quality": 1, "too_short": 1}
    run = json.loads((out / RUN_SUMMARY).read_text(encoding="utf-8"))
    assert (run["dataset"]["mode_filter"], run["dataset"]["max_samples"]) == ("emulation", 2)
    assert run["metrics"]["modes"]["emulation"] == {"count": 2, "share": 1.0}


def test_ties_are_broken_by_id(tmp_path: Path) -> None:
    memories = [
        prompt_completion(f"Question number {i}?", f"Answer number {i} is right here.", 8)
        for i in range(6)
    ]
    out, _ = build(tmp_path, memories=memories, max_samples=3)
    ids = [r["id"] for r in read_jsonl(out / FINE_TUNE_DATASET)]
    assert ids == sorted(m.id for m in memories)[:3]
    assert (
        select_samples([curate(m, RULES) for m in memories], mode=None, max_samples=3)[0].memory_id
        == ids[0]
    )


def test_contamination_fails_the_build_naming_ids_and_tags(tmp_path: Path) -> None:
    # A first, good build leaves files in the directory.
    out, _ = build(tmp_path)
    bad1 = prompt_completion(
        "How do you start a note?", "I always write <thought> then the date.", 9
    )
    bad2 = chat(
        [
            {"role": "user", "content": "Format?"},
            {"role": "assistant", "content": "Use <action> blocks."},
            {"role": "user", "content": "And then?"},
            {"role": "assistant", "content": "Then you list each step on its own line."},
        ],
        quality_score=9,
    )
    memories = [*corpus(), bad1, bad2]
    with pytest.raises(ContaminationError) as info:
        build(tmp_path, memories=memories)
    err = info.value
    assert err.offenders == {bad1.id: ["<thought>"], bad2.id: ["<action>"]}
    assert bad1.id in str(err) and bad2.id in str(err)
    # Nothing half-written: only the failed summary is left.
    assert sorted(p.name for p in out.iterdir()) == [RUN_SUMMARY]
    run = json.loads((out / RUN_SUMMARY).read_text(encoding="utf-8"))
    assert run["status"] == "failed"
    assert run["dataset"]["contamination"] == {
        "ok": False,
        "offenders": {bad1.id: ["<thought>"], bad2.id: ["<action>"]},
    }
    assert bad1.id in run["error"]


def test_contamination_outside_the_selection_does_not_fail(tmp_path: Path) -> None:
    bad = prompt_completion(
        "How do you start a note?", "I always write <thought> then the date.", 9
    )
    out, summary = build(tmp_path, memories=[*corpus(), bad], mode="dual")
    assert summary.status == "ok"
    assert bad.id not in (out / FINE_TUNE_DATASET).read_text(encoding="utf-8")


def test_a_selected_sample_needs_its_memory(tmp_path: Path) -> None:
    memories = corpus()
    samples = [curate(m, RULES) for m in memories]
    with pytest.raises(DatasetError, match="have no memory among those given"):
        build(tmp_path, memories=memories[1:], samples=samples)
    assert not (tmp_path / "run").exists()


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown mode"):
        build(tmp_path, mode="operator")
    with pytest.raises(DatasetError, match="max_samples"):
        build(tmp_path, max_samples=0)
    memories = corpus()
    samples = [curate(m, RULES) for m in memories]
    with pytest.raises(DatasetError, match="given twice"):
        build(tmp_path, memories=memories, samples=[*samples, samples[0]])


def test_empty_dataset_is_written_with_a_warning(tmp_path: Path) -> None:
    out, summary = build(tmp_path, memories=[prompt_completion("Hi?", "Yo.", 9)])
    assert (out / FINE_TUNE_DATASET).read_text(encoding="utf-8") == ""
    assert summary.counts["selected"] == 0
    assert summary.metrics["warnings"] == ["the dataset is empty: no sample is eligible"]
    applied = json.loads((out / SCHEMA_APPLIED).read_text(encoding="utf-8"))
    assert applied["example"] is None


def test_samples_from_records_build_the_same(tmp_path: Path) -> None:
    memories = corpus()
    samples = [
        Sample.from_record(json.loads(json.dumps(curate(m, RULES).to_record()))) for m in memories
    ]
    a, _ = build(tmp_path, "a", memories)
    b, _ = build(tmp_path, "b", memories, samples=samples)
    assert (a / FINE_TUNE_DATASET).read_bytes() == (b / FINE_TUNE_DATASET).read_bytes()


def test_from_parsed_files_to_jsonl(tmp_path: Path) -> None:
    """The real parsers' output, curated and built: every format reaches the JSONL."""
    from services.memories import parse_bytes
    from tests.services.curation_inputs import METAHUMAN

    files: dict[str, bytes] = {p.name: p.read_bytes() for p in sorted(METAHUMAN.glob("evt*.json"))}
    files["pc.jsonl"] = (
        b'{"prompt": "How was the trip?", "completion": "Long, but the mountains made it '
        b'worth every hour.", "quality_score": 9.2}\n'
        b'{"prompt": "Any plans?", "completion": "Not really.", "quality_score": 8}\n'
    )
    files["tasks.json"] = json.dumps(
        [
            {
                "instruction": "Make a list.",
                "input": "eggs and milk",
                "output": "- eggs, a dozen\n- milk, two litres\n- fresh bread for the morning",
            }
        ]
    ).encode()
    files["chat.json"] = json.dumps(
        {
            "messages": [
                {"role": "system", "content": "Answer as me."},
                {"role": "user", "content": "Coffee or tea?"},
                {"role": "assistant", "content": "Tea, always, with a splash of milk."},
                {"role": "user", "content": "Why tea?"},
                {"role": "assistant", "content": "Coffee makes me jittery and tea is a ritual."},
            ]
        }
    ).encode()
    files["qa.txt"] = (
        b"Q: What season do you like?\nA: Autumn, for the light and the cold mornings.\n"
    )
    files["story.md"] = ("# Harbour Winters\n\n" + CHUNK + "\n").encode()

    memories = []
    for name, data in files.items():
        result = parse_bytes(name, data)
        assert result.problems == [], name
        memories += result.memories
    out, summary = build(tmp_path, memories=memories)
    rows = read_jsonl(out / FINE_TUNE_DATASET)
    formats = {m.id: m.format for m in memories}
    assert {formats[r["id"]] for r in rows} == {
        "metahuman",
        "prompt_completion",
        "alpaca",
        "chat",
        "qa",
        "prose",
    }
    assert {r["mode"] for r in rows} == {"dual", "emulation", "agent"}
    assert summary.excluded_by_reason["too_short"] == 1  # "Not really."
    prose_row = next(r for r in rows if r["kind"] == "continuation")
    assert prose_row["completion"].startswith("# Harbour Winters\n\nThe harbour was quiet")
    assert prose_row["messages"][0]["content"] == (
        "<user>Continue writing in my voice: Harbour Winters (part 1 of 1)</user>"
    )
    chat_rows = [r for r in rows if formats[r["id"]] == "chat"]
    assert max(len(r["messages"]) for r in chat_rows) == 4  # the system turn is dropped


def test_a_render_failure_names_the_sample_and_writes_nothing(tmp_path: Path) -> None:
    base = Renderer.from_family("smollm")
    broken = Renderer.from_template(
        "{{ raise_exception('this template takes one message') if messages|length > 1 }}"
        "{{ messages[0].content }}",
        base.special_tokens,
        base.schema,
    )
    memories = [prompt_completion("How was the trip?", "Long, but worth every hour of it.", 9)]
    with pytest.raises(DatasetError, match=f"sample {memories[0].id} .* cannot be rendered"):
        build(tmp_path, memories=memories, renderer=broken)
    assert not (tmp_path / "run").exists()


def test_a_profiles_dataset_is_rendered_under_the_prompt_policy(tmp_path: Path) -> None:
    from services.persona_prompt import system_message, training_context

    renderer = Renderer.from_family("smollm")
    memories = corpus()
    samples = [curate(m, RULES) for m in memories]
    samples = [replace(s, split="train") for s in samples]  # only training samples carry

    def build_for_alice(name: str) -> Path:
        out, _ = build(
            tmp_path, name, memories, renderer=renderer, samples=samples, persona="alice"
        )
        return out

    out = build_for_alice("persona")
    lines = read_jsonl(out / FINE_TUNE_DATASET)
    rows = [r for r in lines if "#q" not in r["id"]]  # the samples, then their questions
    assert lines[: len(rows)] == rows
    chats = [r for r in rows if r["kind"] == "chat"]
    assert chats and all(r["messages"][0]["role"] == "system" for r in chats)
    assert all(r["messages"][0]["content"].startswith(system_message("alice")) for r in chats)
    for r in chats:
        # What is trained is what is served: the system turn is in the rendered prompt.
        assert r["prompt"].startswith("<|im_start|>system\nYou are alice.")
        assert (r["prompt"], r["completion"]) == renderer.split(r["messages"])
    # Each training sample carries exactly the memories the policy picks for it (some do,
    # some do not: the share itself is tested in test_persona_prompt).
    others = [(m.id, m.text) for m in memories]
    own = dict(others)
    for r in chats:
        picked = training_context(r["id"], own.get(r["id"]), others)
        assert r["messages"][0]["content"] == system_message("alice", picked)
    many = [replace(s, memory_id=f"{s.memory_id}-{i}") for i in range(12) for s in samples]
    picks = [training_context(s.memory_id, "own", others) for s in many]
    assert any(picks) and not all(picks)
    assert all(r["kind"] != "continuation" or r["prompt"] == "" for r in rows)
    formatted = json.loads((out / FORMATTED_SAMPLES).read_text())
    assert [f["messages"] for f in formatted] == [r["messages"] for r in rows]
    # The same input gives the same file.
    again = build_for_alice("again")
    assert (again / FINE_TUNE_DATASET).read_bytes() == (out / FINE_TUNE_DATASET).read_bytes()


def test_a_profiles_answers_are_trained_under_questions_in_other_words(tmp_path: Path) -> None:
    from services.persona_prompt import system_message
    from services.persona_questions import asked

    renderer = Renderer.from_family("smollm")
    memories = corpus()
    samples = [replace(curate(m, RULES), split="train") for m in memories]
    out, summary = build(
        tmp_path, "run", memories, renderer=renderer, samples=samples, persona="alice"
    )
    lines = read_jsonl(out / FINE_TUNE_DATASET)
    own = {r["id"]: r for r in lines if "#q" not in r["id"]}
    added = [r for r in lines if "#q" in r["id"]]
    # "I read in the window seat with a pot of tea and ignore my phone": where and when do
    # you read, and your phone, each without memories and among them.
    rainy = next(s for s in samples if s.prompt == "<user>What do you do on a rainy Sunday?</user>")
    expected = [q for sid, q in asked([(rainy.memory_id, rainy.response_text)])]
    assert "Where do you read?" in expected and "Tell me about your phone." in expected
    assert [r["messages"][-2]["content"] for r in added] == [
        f"<user>{q}</user>" for q in expected for _ in range(2)
    ]
    assert summary.counts["question_samples"] == len(added) == 2 * len(expected)
    for r in added:
        sample_id, _, kind = r["id"].partition("#q")
        source = own[sample_id]
        assert kind.endswith(("-plain", "-memories"))
        assert (r["mode"], r["split"], r["kind"]) == ("emulation", "train", "chat")
        assert r["completion"] == source["completion"]  # the same answer, asked otherwise
        assert (r["prompt"], r["completion"]) == renderer.split(r["messages"])
        system = r["messages"][0]["content"]
        if kind.endswith("-plain"):
            assert system == system_message("alice")
        else:  # its own memory among the others
            assert system.startswith(system_message("alice") + "\nWhat you remember:")
            assert "window seat" in system
    # A chat with earlier turns, an agent's or a reflection's answer gets no questions.
    assert {r["id"].partition("#q")[0] for r in added} == {rainy.memory_id}

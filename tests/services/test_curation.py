"""Curation: memory -> sample (mode, tags, cleaning, quality, weight, split, exclusions)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from services.curation import (
    ContaminationError,
    Sample,
    assign_split,
    curate,
    find_contamination,
    load_rules,
    parse_rules,
    validate_samples,
)
from services.memories.model import Memory, content_id
from tests.services.curation_inputs import (
    METAHUMAN,
    alpaca,
    chat,
    metahuman,
    metahuman_fixture,
    prompt_completion,
    prose,
    qa,
)

RULES = load_rules()
GOOD_ANSWER = "I walk along the river every morning before work, it clears my head."


def event(**fields: object) -> Memory:
    base: dict[str, object] = {
        "id": "evt-20251101090000",
        "timestamp": "2025-11-01T09:00:00.000Z",
        "content": "How do you start your day?",
    }
    base.update(fields)
    return metahuman(base)


# ---------------------------------------------------------------- MetaHuman fixtures


def test_fixture_observation_with_override_and_importance() -> None:
    """evt-20251019143000: an observation, no response, importance 0.7, cognitiveMode dual."""
    s = curate(metahuman_fixture("evt-20251019143000.json"), RULES)
    assert s.mode == "dual"
    assert s.kind == "chat"
    assert s.prompt == "<thought>What did you notice?</thought>"
    assert s.response == "<world>Met with Sarah about ML project</world>"
    assert (s.quality, s.quality_source, s.weight) == (7.0, "importance", 1.0)
    assert s.excluded is None
    assert any("no response" in n for n in s.notes)


def test_fixture_observation_without_override_is_emulation() -> None:
    s = curate(metahuman_fixture("evt-20251019143000.json", metadata={"processed": True}), RULES)
    assert s.mode == "emulation"
    assert s.prompt == "<user>What did you notice?</user>"
    assert s.response == "<assistant>Met with Sarah about ML project</assistant>"


def test_fixture_tool_invocation_becomes_a_json_action() -> None:
    """evt-20251106123456: a tool event; without its cognitiveMode it maps to agent."""
    m = metahuman_fixture("evt-20251106123456-abcd1234.json")
    md = {k: v for k, v in m.metadata.items() if k != "cognitiveMode"}
    s = curate(Memory(**{**m.__dict__, "metadata": md}), RULES)
    assert s.mode == "agent"
    assert s.prompt == "<instruction>Tool executed: search</instruction>"
    assert s.response.startswith("<action>{") and s.response.endswith("}</action>")
    action = json.loads(s.response_text)
    assert action == {
        "tool": "search",
        "inputs": {"query": "machine learning", "limit": 10},
        "outputs": md["toolOutputs"],
        "success": True,
    }
    # importance 0.6 -> 6.0: below the minimum.
    assert s.quality == 6.0
    assert s.excluded_code == "low_quality"
    assert s.weight == 0.0


def test_fixture_tool_invocation_keeps_its_dual_override() -> None:
    s = curate(metahuman_fixture("evt-20251106123456-abcd1234.json"), RULES)
    assert s.mode == "dual"
    assert s.prompt == "<thought>Tool executed: search</thought>"
    assert json.loads(s.response_text)["tool"] == "search"
    assert find_contamination(s) == []


def test_tool_action_follows_the_text_response() -> None:
    m = event(
        type="tool_use",
        content="Find my notes on the garden",
        response="Searching your notes now.",
        importance=0.9,
        metadata={"toolName": "notes.search", "toolInputs": {"q": "garden"}, "toolOutputs": 3},
    )
    s = curate(m, RULES)
    text, action = s.response_text.split("\n")
    assert text == "Searching your notes now."
    assert json.loads(action) == {"tool": "notes.search", "inputs": {"q": "garden"}, "outputs": 3}
    assert (s.mode, s.weight) == ("agent", 2.0)


def test_fixture_conversation_without_response_is_excluded() -> None:
    s = curate(metahuman_fixture("evt-20251107120000-abc123.json"), RULES)
    assert s.excluded_code == "no_response"
    assert s.excluded is not None and s.excluded.startswith("no response")
    assert "no_response_prompts" in s.excluded
    assert s.weight == 0.0


def test_fixture_content_object_edge_case() -> None:
    s = curate(metahuman_fixture("evt_abc123.json"), RULES)
    assert s.mode == "dual"
    assert s.prompt == "<thought>What tasks are due?</thought>"
    assert s.response == "<world>You have 3 tasks due today...</world>"


def test_every_metahuman_fixture_curates() -> None:
    names = sorted(p.name for p in METAHUMAN.glob("evt*.json"))
    assert len(names) == 10
    for name in names:
        s = curate(metahuman_fixture(name), RULES)
        assert s.mode in ("dual", "emulation", "agent")
        assert find_contamination(s, RULES) == []
        assert (s.weight == 0.0) == (s.excluded is not None)


# ---------------------------------------------------------------- modes


@pytest.mark.parametrize(
    ("mtype", "mode"),
    [
        ("inner_dialogue", "dual"),
        ("reflection", "dual"),
        ("dream", "dual"),
        ("conversation", "emulation"),
        ("chat", "emulation"),
        ("observation", "emulation"),
        ("journal", "emulation"),
        ("action", "agent"),
        ("task", "agent"),
        ("tool_use", "agent"),
        ("tool_invocation", "agent"),
        ("Inner-Dialogue", "dual"),
    ],
)
def test_type_mapping(mtype: str, mode: str) -> None:
    s = curate(event(type=mtype, response=GOOD_ANSWER), RULES)
    assert s.mode == mode
    assert s.notes == ()


def test_unmapped_type_gets_the_default_mode_and_a_note() -> None:
    s = curate(event(type="musing", response=GOOD_ANSWER), RULES)
    assert s.mode == "emulation"
    assert any("'musing' is not mapped" in n for n in s.notes)


@pytest.mark.parametrize("value", ["agent", "Agent", " agent "])
def test_cognitive_mode_overrides_the_type(value: str) -> None:
    m = event(type="conversation", response=GOOD_ANSWER, metadata={"cognitiveMode": value})
    s = curate(m, RULES)
    assert s.mode == "agent"
    assert s.prompt.startswith("<instruction>") and s.response.startswith("<action>")


@pytest.mark.parametrize("value", ["operator", "", 3])
def test_invalid_cognitive_mode_falls_back_to_the_mapping_with_a_note(value: object) -> None:
    m = event(type="reflection", response=GOOD_ANSWER, metadata={"cognitiveMode": value})
    s = curate(m, RULES)
    assert s.mode == "dual"
    assert any("is not a mode" in n for n in s.notes)


def test_null_cognitive_mode_is_absent() -> None:
    m = event(type="reflection", response=GOOD_ANSWER, metadata={"cognitiveMode": None})
    s = curate(m, RULES)
    assert (s.mode, s.notes) == ("dual", ())


def test_prompt_completion_record() -> None:
    m = prompt_completion("How was the trip?", "Long, but the mountains made it worth it.", 8.5)
    s = curate(m, RULES)
    assert (s.mode, s.kind) == ("emulation", "chat")
    assert s.prompt == "<user>How was the trip?</user>"
    assert s.response == "<assistant>Long, but the mountains made it worth it.</assistant>"
    assert (s.quality, s.quality_source, s.weight) == (8.5, "explicit", 1.5)


def test_prompt_completion_metadata_override() -> None:
    m = prompt_completion(
        "Plan my week", "Monday gym, Tuesday writing, Friday off.", 9, cognitiveMode="agent"
    )
    assert curate(m, RULES).mode == "agent"


def test_alpaca_record_is_agent() -> None:
    m = alpaca(
        "Summarise the text.", "The meeting moved to Friday at noon.", "Meeting: Friday, 12:00."
    )
    s = curate(m, RULES)
    assert s.mode == "agent"
    assert s.prompt == (
        "<instruction>Summarise the text.\n\nThe meeting moved to Friday at noon.</instruction>"
    )
    assert s.response == "<action>Meeting: Friday, 12:00.</action>"


def test_chat_context_is_tagged_in_the_mode_tags() -> None:
    m = chat(
        [
            {"role": "system", "content": "You are me."},
            {"role": "user", "content": "Coffee or tea?"},
            {"role": "assistant", "content": "Tea, always."},
            {"role": "user", "content": "Why tea?"},
            {"role": "assistant", "content": "Coffee makes me jittery and tea is a ritual for me."},
        ],
        quality_score=9,
    )
    s = curate(m, RULES)
    assert s.mode == "emulation"
    assert s.context == (
        {"role": "user", "content": "<user>Coffee or tea?</user>"},
        {"role": "assistant", "content": "<assistant>Tea, always.</assistant>"},
    )
    assert any("role 'system' dropped" in n for n in s.notes)
    assert s.messages() == [
        *s.context,
        {"role": "user", "content": "<user>Why tea?</user>"},
        {
            "role": "assistant",
            "content": "<assistant>Coffee makes me jittery and tea is a ritual for me.</assistant>",
        },
    ]


def test_chat_context_in_dual_mode_uses_thought_and_world() -> None:
    m = chat(
        [
            {"role": "user", "content": "I keep putting off the letter."},
            {"role": "assistant", "content": "The desk stays cluttered."},
            {"role": "user", "content": "Maybe I fear the answer."},
            {"role": "assistant", "content": "The envelope sits unopened on the shelf for weeks."},
        ]
    )
    m = Memory(**{**m.__dict__, "metadata": {"cognitiveMode": "dual"}})
    s = curate(m, RULES)
    assert [c["content"][:9] for c in s.context] == ["<thought>", "<world>Th"]
    assert find_contamination(s) == []


def test_qa_pair_is_emulation() -> None:
    s = curate(
        qa("What is your favourite season?", "Autumn, for the light and the cold mornings."), RULES
    )
    assert s.mode == "emulation"
    assert s.prompt == "<user>What is your favourite season?</user>"


def test_prose_chunk_is_a_continuation() -> None:
    chunk = (
        "The harbour was quiet that winter. Boats rocked against their ropes, and the gulls "
        "argued over scraps while my grandfather mended nets in the shed.\n\n"
        "He never spoke much, but he hummed."
    )
    s = curate(prose(chunk, "Harbour Winters", 2, 5), RULES)
    assert (s.kind, s.mode) == ("continuation", "emulation")
    assert s.prompt == "<user>Continue writing in my voice: Harbour Winters (part 2 of 5)</user>"
    assert s.response_text == chunk  # paragraphs kept
    assert s.quality_source == "heuristic"
    assert s.quality == 8.0  # continuation_base 7 + variety 1
    assert s.weight == 1.5


def test_prose_ignores_a_cognitive_mode_with_a_note() -> None:
    m = prose("Some words " * 10, "T", 1, 1)
    m = Memory(**{**m.__dict__, "metadata": {**m.metadata, "cognitiveMode": "agent"}})
    s = curate(m, RULES)
    assert s.mode == "emulation"
    assert any("prose trains emulation" in n for n in s.notes)


# ---------------------------------------------------------------- cleaning


def test_filler_is_removed_from_the_response_only() -> None:
    m = prompt_completion(
        "Great question: as an AI language model, what would you cook tonight?",
        "Great question! As an AI language model, i would make a lentil soup with lots of "
        "garlic. I hope this helps! Let me know if you have any other questions.",
        8.0,
    )
    s = curate(m, RULES)
    assert s.filler is True
    assert s.response == "<assistant>I would make a lentil soup with lots of garlic.</assistant>"
    assert s.prompt == (
        "<user>Great question: as an AI language model, what would you cook tonight?</user>"
    )
    assert s.assistant_words == 10


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("GREAT QUESTION. Rain falls from heavy clouds.", "Rain falls from heavy clouds."),
        ("Certainly! Here is the list:\n- eggs\n- milk", "Here is the list:\n- eggs\n- milk"),
        ("That is a great question we never asked.", "That is a great question we never asked."),
        ("Great question about rain: it falls.", "Great question about rain: it falls."),
        ("Version 2.5 ships today. Hope this helps.", "Version 2.5 ships today."),
        ("Line one.\nI hope this helps!\nLine three.", "Line one.\nLine three."),
    ],
)
def test_filler_removal_cases(raw: str, clean: str) -> None:
    s = curate(prompt_completion("Tell me something about it", raw, 9), RULES)
    assert s.response_text == clean
    assert s.filler == (raw != clean)


def test_response_of_only_filler_is_excluded() -> None:
    s = curate(
        prompt_completion("Thanks!", "I hope this helps! Let me know if you need more.", 9), RULES
    )
    assert s.excluded_code == "only_filler"
    assert s.excluded == "the response is only filler; nothing is left to train on"
    assert s.filler is True


# ---------------------------------------------------------------- quality and weight


@pytest.mark.parametrize(
    ("score", "weight"),
    [
        (6.99, 0.0),
        (7.0, 1.0),
        (7.99, 1.0),
        (8.0, 1.5),
        (8.99, 1.5),
        (9.0, 2.0),
        (10.0, 2.0),
        (0.0, 0.0),
    ],
)
def test_weight_at_every_boundary(score: float, weight: float) -> None:
    s = curate(prompt_completion("How are you today?", GOOD_ANSWER, score), RULES)
    assert s.quality == score
    assert s.weight == weight
    assert (s.excluded_code == "low_quality") == (weight == 0.0)


def test_low_quality_reason_is_actionable() -> None:
    s = curate(prompt_completion("How are you today?", GOOD_ANSWER, 6.99), RULES)
    assert s.excluded == (
        "quality 6.99 (explicit) is below the minimum 7; raise the memory's quality_score or "
        "importance, or lower quality.min_quality in etc/curation.json"
    )


@pytest.mark.parametrize(
    ("importance", "quality", "weight"),
    [(0.7, 7.0, 1.0), (0.8, 8.0, 1.5), (0.9, 9.0, 2.0), (0.69, 6.9, 0.0)],
)
def test_importance_times_ten(importance: float, quality: float, weight: float) -> None:
    s = curate(event(type="conversation", response=GOOD_ANSWER, importance=importance), RULES)
    assert (s.quality, s.quality_source, s.weight) == (quality, "importance", weight)


def test_explicit_score_wins_over_importance() -> None:
    m = Memory(**{**event(response=GOOD_ANSWER, importance=0.1).__dict__, "quality_score": 9.5})
    s = curate(m, RULES)
    assert (s.quality, s.quality_source) == (9.5, "explicit")


@pytest.mark.parametrize(("score", "quality"), [(12.0, 10.0), (-3.0, 0.0)])
def test_out_of_range_scores_are_clamped_and_noted(score: float, quality: float) -> None:
    s = curate(prompt_completion("How are you today?", GOOD_ANSWER, score), RULES)
    assert s.quality == quality
    assert any("clamped" in n for n in s.notes)


def test_nan_score_falls_back_to_the_heuristic() -> None:
    s = curate(prompt_completion("How are you today?", GOOD_ANSWER, float("nan")), RULES)
    assert s.quality_source == "heuristic"


def test_heuristic_values() -> None:
    # 14 words, all distinct, a 4-word prompt: 5 + 1.5 (length) + 1 (variety) + 0.5 (prompt)
    s = curate(event(type="conversation", response=GOOD_ANSWER), RULES)
    assert (s.quality, s.quality_source, s.weight) == (8.0, "heuristic", 1.5)
    # The same with filler removed: - 1.5
    s = curate(event(type="conversation", response="Great question! " + GOOD_ANSWER), RULES)
    assert (s.quality, s.filler, s.weight) == (6.5, True, 0.0)
    # Repetitive (distinct share < 0.35): 5 + 1.5 - 1.5 + 0.5
    s = curate(event(type="conversation", response="yes no " * 10), RULES)
    assert s.quality == 5.5
    # Long (> 200 words): 5 - 1 + 1 (variety of the first 50 words) + 0.5
    long_text = " ".join(f"word{i}" for i in range(250))
    assert curate(event(type="conversation", response=long_text), RULES).quality == 5.5
    # A synthesised prompt: 5 + 1.5 + 1 - 0.5 (no prompt bonus)
    s = curate(event(type="journal", content=GOOD_ANSWER), RULES)
    assert s.prompt == "<user>Write in your journal.</user>"
    assert s.quality == 7.0


# ---------------------------------------------------------------- exclusions


def test_too_short_reason() -> None:
    s = curate(prompt_completion("Are you coming?", "Yes, later.", 9), RULES)
    assert s.excluded == "response has 2 words; at least 5 needed"
    assert s.excluded_code == "too_short"
    assert (s.weight, s.quality) == (0.0, 9.0)


def test_one_word_reason_is_singular() -> None:
    s = curate(prompt_completion("Are you coming?", "Yes.", 9), RULES)
    assert s.excluded == "response has 1 word; at least 5 needed"


def test_exactly_the_minimum_words_is_kept() -> None:
    s = curate(prompt_completion("Are you coming?", "Yes, I will be there.", 9), RULES)
    assert s.excluded is None and s.assistant_words == 5


def test_empty_memory_and_empty_prompt() -> None:
    s = curate(event(content="   "), RULES)
    assert s.excluded_code == "empty"
    s = curate(prompt_completion("", GOOD_ANSWER, 9), RULES)
    assert s.excluded_code == "no_prompt"
    assert s.excluded == "the prompt is empty: the response answers nothing"


def test_exclusion_order_puts_the_structural_reason_first() -> None:
    # No response and low importance: the reason is the missing response.
    s = curate(event(type="action", importance=0.1), RULES)
    assert s.excluded_code == "no_response"


# ---------------------------------------------------------------- split


def test_split_is_deterministic_and_near_the_share() -> None:
    ids = [content_id({"n": i}) for i in range(1000)]
    first = [assign_split(i, 0.1) for i in ids]
    assert first == [assign_split(i, 0.1) for i in ids]
    share = Counter(first)["eval"] / len(ids)
    assert 0.07 <= share <= 0.13
    assert {assign_split(i, 0.0) for i in ids} == {"train"}


def test_samples_keep_their_split_across_runs_and_rule_reloads() -> None:
    memories = [prompt_completion(f"Question {i}?", f"{GOOD_ANSWER} ({i})", 9) for i in range(200)]
    a = [curate(m, RULES).split for m in memories]
    b = [curate(m, load_rules()).split for m in memories]
    assert a == b
    assert "eval" in a and "train" in a


def test_eval_share_comes_from_the_rules() -> None:
    rules = RULES.model_copy(update={"eval_share": 0.5})
    ids = [content_id({"k": i}) for i in range(1000)]
    share = (
        sum(curate(prompt_completion(i, GOOD_ANSWER, 9), rules).split == "eval" for i in ids) / 1000
    )
    assert 0.45 <= share <= 0.55


# ---------------------------------------------------------------- contamination


def _sample(
    mode: str, prompt: str, response: str, context: tuple[dict[str, str], ...] = ()
) -> Sample:
    return Sample(
        memory_id=content_id({"p": prompt, "r": response, "m": mode}),
        mode=mode,
        kind="chat",
        prompt=prompt,
        response=response,
        context=context,
        quality=9.0,
        weight=2.0,
        split="train",
        excluded=None,
        filler=False,
        assistant_words=3,
    )


def test_find_contamination() -> None:
    clean = _sample("emulation", "<user>hi there</user>", "<assistant>hello you</assistant>")
    assert find_contamination(clean) == []
    dirty = _sample(
        "emulation", "<user>hi</user>", "<assistant>I think </world> <thought>x</assistant>"
    )
    assert find_contamination(dirty) == ["<thought>", "<world>"]
    in_context = _sample(
        "dual",
        "<thought>x</thought>",
        "<world>y</world>",
        ({"role": "user", "content": "<user>earlier</user>"},),
    )
    assert find_contamination(in_context) == ["<user>"]
    agent = _sample("agent", "<instruction>do</instruction>", "<action>done <Assistant></action>")
    assert find_contamination(agent) == ["<assistant>"]


def test_validate_samples_names_every_offender_and_its_tags() -> None:
    a = _sample("emulation", "<user>a</user>", "<assistant><thought>a</thought></assistant>")
    b = _sample("agent", "<instruction><user>b</instruction>", "<action>b</action>")
    ok = _sample("dual", "<thought>c</thought>", "<world>c</world>")
    validate_samples([ok])
    with pytest.raises(ContaminationError) as info:
        validate_samples([a, ok, b])
    assert info.value.offenders == {a.memory_id: ["<thought>"], b.memory_id: ["<user>"]}
    msg = str(info.value)
    assert a.memory_id in msg and b.memory_id in msg and ok.memory_id not in msg
    assert "<thought>" in msg and "<user>" in msg


def test_curated_memory_quoting_another_modes_tag_is_caught() -> None:
    s = curate(
        prompt_completion(
            "What do you write in notes?", "I start each entry with <thought> and a date.", 9
        ),
        RULES,
    )
    assert s.excluded is None  # curation keeps it; the dataset build refuses it
    assert find_contamination(s, RULES) == ["<thought>"]


# ---------------------------------------------------------------- records


def test_sample_record_round_trip() -> None:
    m = chat(
        [
            {"role": "user", "content": "Coffee or tea?"},
            {"role": "assistant", "content": "Tea."},
            {"role": "user", "content": "Why?"},
            {"role": "assistant", "content": "It is calmer, and I like the ritual of it."},
        ],
        quality_score=8,
    )
    s = curate(m, RULES)
    rec = s.to_record()
    assert json.loads(json.dumps(rec)) == rec
    assert Sample.from_record(rec) == s
    assert rec["weight"] == 1.5 and rec["mode"] == "emulation" and rec["split"] in ("train", "eval")


def test_curate_is_pure_and_repeatable() -> None:
    m = metahuman_fixture("evt-20251019143000.json")
    assert curate(m, RULES) == curate(m, RULES)


def test_rules_with_different_tags() -> None:
    data = json.loads(Path(RULES.source).read_text(encoding="utf-8"))
    data["modes"]["emulation"]["prompt_tag"] = "me"
    rules = parse_rules(data, "custom.json")
    s = curate(prompt_completion("Hello there friend", GOOD_ANSWER, 9), rules)
    assert s.prompt.startswith("<me>Hello")
    assert find_contamination(s, rules) == []
    # With the default tags, <user> no longer belongs to emulation but nobody uses it.
    other = _sample("dual", "<thought>x</thought>", "<world><me>y</world>")
    assert find_contamination(other, rules) == ["<me>"]


def test_empty_prose_chunk_is_empty() -> None:
    s = curate(prose("  \n ", "T", 1, 1), RULES)
    assert s.excluded_code == "empty"

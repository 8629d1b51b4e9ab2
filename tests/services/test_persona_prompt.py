"""The prompt policy: the same system message in training and in ask, memories shown the
same way, and a deterministic share of training samples carrying memories."""

from __future__ import annotations

import pytest

from services.persona_prompt import (
    Neighbours,
    ask_messages,
    clip,
    system_message,
    training_context,
    with_system,
)


def test_ask_and_training_share_one_system_message() -> None:
    memories = ["Caldeirada on Sundays.", "I keep a sloop called Gaivota."]
    asked = ask_messages("maren", "What do you cook?", memories)
    assert asked[0] == {"role": "system", "content": system_message("maren", memories)}
    assert asked[1] == {"role": "user", "content": "<user>What do you cook?</user>"}
    trained = with_system(
        "maren",
        [{"role": "user", "content": "<user>q</user>"}, {"role": "assistant", "content": "a"}],
        memories,
    )
    assert trained[0] == asked[0]
    assert system_message("maren").startswith("You are maren.")
    assert "- Caldeirada on Sundays." in system_message("maren", memories)


def test_a_chats_own_system_message_follows_the_personas() -> None:
    out = with_system(
        "maren",
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "<user>q</user>"}],
    )
    assert [m["role"] for m in out] == ["system", "user"]
    assert out[0]["content"] == system_message("maren") + "\n\nBe brief."


def test_memories_are_clipped_to_one_line() -> None:
    assert clip("a\n  b") == "a b"
    long = "x" * 1000
    assert len(clip(long)) == 400 and clip(long).endswith("...")


def test_training_context_is_deterministic_and_holds_the_oracle_most_of_the_time() -> None:
    others = [(f"m{i}", f"memory {i}") for i in range(50)]
    picks = [training_context(f"s{i}", f"own {i}", others) for i in range(2000)]
    assert picks == [training_context(f"s{i}", f"own {i}", others[::-1]) for i in range(2000)]
    carrying = [p for p in picks if p]
    assert len(carrying) / len(picks) == pytest.approx(0.3, abs=0.05)
    assert all(len(p) == 3 for p in carrying)  # ask shows 4; the training samples 3
    with_oracle = [p for i, p in enumerate(picks) if p and f"own {i}" in p]
    assert len(with_oracle) / len(carrying) == pytest.approx(0.8, abs=0.05)
    # The oracle is not always first.
    assert any(p[1].startswith("own") for p in with_oracle)


def test_a_sample_never_gets_itself_as_a_distractor() -> None:
    others = [("s1", "own text"), ("m2", "other")]
    assert training_context("s1", None, others, share=1.0, k=2) == ["other"]
    assert training_context("s1", "own", others, share=0.0) == []


def test_a_sample_carries_the_memories_nearest_its_own_and_one_of_something_else() -> None:
    # A person says one thing several ways; ask retrieves those ways together for a
    # question put in new words, with memories of other things among them, so the training
    # samples show them that way too: the model learns to pick the memory that answers.
    car = [
        ("c1", "What do you drive? A yellow Citroen 2CV called Moutarde."),
        ("c2", "Tell me about your car. Well, a yellow 2CV called Moutarde, voila."),
        ("c3", "How do you get around? In Moutarde, my yellow Citroen 2CV."),
    ]
    others = [(f"m{i}", f"Note {i}: the tram to work was late again, voila.") for i in range(40)]
    memories = [*car, *others]
    near = Neighbours(memories)
    carrying = [
        (i, picked)
        for i in range(400)
        if (picked := training_context(f"s{i}", car[0][1], memories, near=near))
    ]
    assert carrying
    notes = {text for _, text in others}
    for i, picked in carrying:
        assert picked == training_context(f"s{i}", car[0][1], memories[::-1])  # same choice
        assert len(picked) == 3
        # One memory of something else, drawn per sample; the rest its other ways of
        # saying it (both when its own memory is left out, as a retrieval that missed it).
        assert len(notes & set(picked)) == 1
        if car[0][1] in picked:
            assert len({car[1][1], car[2][1]} & set(picked)) == 1
        else:
            assert {car[1][1], car[2][1]} <= set(picked)
    assert any(car[0][1] not in p for _, p in carrying)  # a retrieval that missed it
    assert len({next(iter(notes & set(p))) for _, p in carrying}) > 5  # drawn, not fixed


def test_a_sample_whose_memory_shares_no_word_gets_others_drawn_per_sample() -> None:
    others = [(f"m{i}", f"memory number {i}") for i in range(30)]
    picks = {tuple(training_context(f"s{i}", "zzz", others, share=1.0)) for i in range(50)}
    assert len(picks) > 10 and all(len(p) == 3 for p in picks)


def test_the_distractor_comes_from_the_farther_half_of_the_others() -> None:
    # Others that share more and more of the sample's rare words with it, every one near it
    # in some measure, and a copy of its own text under another id.
    word = [f"rare{chr(97 + j)}x" for j in range(20)]  # words are letters only
    own = " ".join(word)
    others = [(f"m{j:02d}", " ".join(word[: j + 1]) + f" pad{chr(97 + j)}x") for j in range(20)]
    others.append(("copy", own))
    near = Neighbours(others)
    nearness = near.scores(own)
    ranked = sorted(
        (m for m in others if m[0] != "copy"), key=lambda m: -nearness[near.ids.index(m[0])]
    )
    nearest = {ranked[0][1], ranked[1][1]}
    farther = {text for _, text in ranked[2:][9:]}  # the 18 left, the farther 9
    distractors = set()
    for i in range(300):
        picked = training_context(f"s{i}", own, others, share=1.0, oracle_share=0.0, near=near)
        assert picked == training_context(f"s{i}", own, others[::-1], share=1.0, oracle_share=0.0)
        assert len(picked) == 3 and own not in picked
        assert set(picked[:2]) == nearest and picked[2] in farther
        distractors.add(picked[2])
    assert len(distractors) > 5  # drawn per sample

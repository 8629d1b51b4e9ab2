"""The prompt policy: the same system message in training and in ask, memories shown the
same way, and a deterministic share of training samples carrying memories."""

from __future__ import annotations

import pytest

from services.persona_prompt import (
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
    assert all(len(p) == 2 for p in carrying)
    with_oracle = [p for i, p in enumerate(picks) if p and f"own {i}" in p]
    assert len(with_oracle) / len(carrying) == pytest.approx(0.8, abs=0.05)
    # The oracle is not always first.
    assert any(p[1].startswith("own") for p in with_oracle)


def test_a_sample_never_gets_itself_as_a_distractor() -> None:
    others = [("s1", "own text"), ("m2", "other")]
    assert training_context("s1", None, others, share=1.0) == ["other"]
    assert training_context("s1", "own", others, share=0.0) == []

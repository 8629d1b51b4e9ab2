"""Fidelity scores on hand-written answers: what a person reading them would conclude."""

from __future__ import annotations

import pytest

from services.fidelity import (
    hygiene,
    key_terms,
    mean_recall,
    recall,
    similarity,
    stray_tags,
    transfer_score,
    typical_length,
)

COOKING = "Caldeirada on Sundays, with whatever the fishmonger at Mercado de Arroios says is best."


def test_key_terms_are_the_rare_words_of_the_reference_not_in_the_question() -> None:
    terms = key_terms(COOKING, "What do you like to cook on Sundays?")
    assert "caldeirada" in terms and "fishmonger" in terms and "arroio" in terms
    # Common words ("best", "whatever") and the question's own words ("Sundays") are not.
    assert "best" not in terms and "whatever" not in terms and "sunday" not in terms
    assert len(terms) == len(set(terms))


def test_recall_counts_the_facts_an_answer_carries_whatever_the_case_or_plural() -> None:
    terms = ["caldeirada", "gaivota", "cello"]
    assert recall("I cook CALDEIRADA and sail the Gaivota.", terms) == pytest.approx(2 / 3)
    assert recall("I play two cellos.", terms) == pytest.approx(1 / 3)
    assert recall("I am not sure. I do not know.", terms) == 0.0
    assert recall("anything", []) is None


def test_mean_recall_leaves_out_references_without_key_terms() -> None:
    score = mean_recall([1.0, 0.5, None, 0.0])
    assert score.mean == pytest.approx(0.5)
    assert (score.scored, score.unscored, score.full) == (3, 1, 1)
    assert mean_recall([None]).mean is None


def test_similarity_follows_a_persons_verbal_tics() -> None:
    person = "Honestly, mate, the tide was brutal -- honestly, mate, I loved it."
    like_person = "Honestly, mate, the wind was brutal -- honestly, I loved it, mate."
    plain = "The weather conditions at sea were difficult, but the experience was enjoyable."
    assert similarity(like_person, person) > similarity(plain, person)
    assert similarity(person, person) == pytest.approx(1.0)
    assert similarity("", person) == 0.0


def test_transfer_score_is_the_share_of_probes_where_the_candidate_moved_towards_the_person() -> (
    None
):
    refs = ["Honestly, mate, it was grand.", "Honestly, mate, never again."]
    base = ["It was a pleasant experience.", "I would not do it again."]
    cand = ["Honestly, mate, grand it was.", "I would not do it again."]
    assert transfer_score(refs, cand, base) == pytest.approx(0.75)  # one win, one tie
    assert transfer_score(refs, base, base) == pytest.approx(0.5)
    assert transfer_score([], [], []) is None
    with pytest.raises(ValueError):
        transfer_score(refs, cand, base[:1])


def test_stray_tags_are_any_tags_but_the_modes_own() -> None:
    own = ("user", "assistant")
    assert stray_tags("<assistant>Fine.</assistant>", own) == []
    text = "Fine.</assistant><assistant_2>More</Assistant><supporter>x</supporter><thought>"
    assert stray_tags(text, own) == [
        "<assistant_2>",
        "</Assistant>",
        "<supporter>",
        "</supporter>",
        "<thought>",
    ]
    assert stray_tags("a < b and c > d, 3<4", own) == []


def test_hygiene_counts_answers_that_stop_and_those_with_stray_tags() -> None:
    typical = typical_length(["one two three four", "one two", "one two three four five six"])
    assert typical == 4.0
    h = hygiene(
        ["<assistant>one two three four</assistant>", "one two <supporter>x</supporter> a b c"],
        [True, False],
        [("user", "assistant"), ("user", "assistant")],
        typical,
    )
    assert h.to_dict() == {
        "answers": 2,
        "stopped": 1,
        "stopped_share": 0.5,
        "with_stray_tags": 1,
        "length_ratio": pytest.approx(1.25),
    }

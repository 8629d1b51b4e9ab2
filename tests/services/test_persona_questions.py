"""Questions in other words: what the rules write, how copies share them, what they show."""

from __future__ import annotations

from services.persona_prompt import Neighbours, question_context
from services.persona_questions import UP_TO, asked, distinct_answers, near_copy, questions
from services.words import words

FAMILY = (
    "My brother Tiago fixes boat engines in Peniche, and my mother still lives in Porto "
    "and sends me jars of quince jam every autumn."
)
WEEKENDS = (
    "If the swell is small I sail; if it is big I walk the cliffs at Cabo Espichel and "
    "count gannets."
)


def test_each_thing_the_answer_calls_mine_is_asked_about_in_the_second_person() -> None:
    assert questions(FAMILY) == [
        "Tell me about your brother.",
        "What about your brother?",
        "Tell me about your mother.",
        "What about your mother?",
    ]


def test_each_thing_the_answer_says_it_does_is_asked_where_and_when() -> None:
    assert questions(WEEKENDS) == [
        "Where do you sail?",
        "When do you sail?",
        "Where do you walk?",
        "When do you walk?",
    ]


def test_words_that_ask_nothing_make_no_question() -> None:
    # Auxiliaries, thinking, past tenses (regular or not), "my own": nothing to ask.
    assert questions("I would say I think I grew up there, and I started in my own way.") == []
    assert questions("Bosnian maple for the backs and spruce for the tops.") == []
    assert questions("") == []
    # A thing told twice is asked about once.
    assert questions("My dog and my dog again.") == [
        "Tell me about your dog.",
        "What about your dog?",
    ]


def test_copies_of_one_answer_are_one_distinct_answer() -> None:
    answers = [
        ("a", FAMILY),
        ("b", f"Honestly, {FAMILY} I would not trade it for anything."),
        ("c", WEEKENDS),
        ("d", f"{FAMILY} Even then it cheers me up."),
    ]
    assert distinct_answers(answers) == [["a", "b", "d"], ["c"]]
    assert near_copy(frozenset(words(FAMILY)), frozenset(words(answers[1][1])))
    assert not near_copy(frozenset(words(FAMILY)), frozenset(words(WEEKENDS)))
    assert not near_copy(frozenset(), frozenset())


def test_a_distinct_answers_questions_go_to_its_copies_in_turn() -> None:
    answers = [("a", FAMILY), ("b", f"Well, {FAMILY}"), ("c", WEEKENDS)]
    got = asked(answers)
    assert got == [
        ("a", "Tell me about your brother."),
        ("b", "What about your brother?"),
        ("a", "Tell me about your mother."),
        ("b", "What about your mother?"),
        ("c", "Where do you sail?"),
        ("c", "When do you sail?"),
        ("c", "Where do you walk?"),
        ("c", "When do you walk?"),
    ]
    assert asked(answers) == got  # the same every time


def test_a_profile_above_the_limit_gets_no_questions() -> None:
    many = [(f"m{i:04d}", f"My cat number {i} sleeps all day.") for i in range(UP_TO + 1)]
    assert asked(many) == []
    assert asked(many[:UP_TO]) != []


def memories() -> list[tuple[str, str]]:
    texts = [
        ("fam-1", f"Tell me about your family.\n{FAMILY}"),
        ("fam-2", f"Who are your people?\nWell, {FAMILY}"),
        ("fam-3", f"And your family?\n{FAMILY} It cheers me up."),
        ("wk-1", f"To my brother: What do you do at weekends?\n{WEEKENDS}"),
        ("wk-2", f"What do you do at weekends?\n{WEEKENDS}"),
        ("cello", "What do you play?\nThe cello, Bach suites in the evening."),
        ("coffee", "Where is your first coffee?\nAt the kiosk by the garden."),
        ("book", "What are you reading?\nThe Log from the Sea of Cortez again."),
        ("stew", "What do you cook?\nCaldeirada on Sundays with white wine."),
    ]
    return texts


def test_a_question_is_shown_its_answer_once_among_memories_that_share_its_words() -> None:
    texts = memories()
    own = dict(texts)
    near = Neighbours(texts)
    shown = question_context("fam-1", own["fam-1"], "What about your brother?", near)
    assert len(shown) == 4  # as many as ask shows
    assert shown.count(own["fam-1"]) == 1
    # No other way of telling its own answer: the answer is never what most of them say.
    assert own["fam-2"] not in shown and own["fam-3"] not in shown
    # The memory that shares the question's telling word ("brother") is among the others.
    assert own["wk-1"] in shown
    # The same sample and question show the same memories; another question may not.
    assert question_context("fam-1", own["fam-1"], "What about your brother?", near) == shown


def test_a_small_profile_shows_what_it_has() -> None:
    texts = memories()[:3]  # three ways of telling one answer: nothing else to show
    near = Neighbours(texts)
    assert question_context("fam-1", texts[0][1], "What about your brother?", near) == [texts[0][1]]

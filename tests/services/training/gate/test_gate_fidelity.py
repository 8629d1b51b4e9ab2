"""The gate's persona-fidelity check on given answers: scores, the verdict a person reads,
and the probes file the daemon writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.persona_prompt import system_message
from services.training.errors import BadInputError
from services.training.gate.fidelity import (
    Answers,
    FidelityProbe,
    answer_both,
    check,
    outputs,
    read_probes,
    scores,
)

PROBES = [
    FidelityProbe("p1", "maren", "Which stew do you make?", "Caldeirada, on Sundays.", "probes"),
    FidelityProbe(
        "p2", "maren", "What is your boat called?", "Gaivota.", "held-out", ("I sail Gaivota.",)
    ),
]


def _answers(*texts: str, stopped: bool = True) -> Answers:
    return Answers(list(texts), [stopped] * len(texts))


def test_each_probe_is_asked_as_ask_asks_without_and_with_its_memories() -> None:
    prompts: list[str] = []

    def prompt(messages: list[dict[str, str]]) -> str:
        return json.dumps(messages)

    def generate(texts: list[str]) -> list[tuple[str, bool]]:
        prompts.extend(texts)
        return [(f"answer {len(prompts) - len(texts) + i}", i % 2 == 0) for i in range(len(texts))]

    got = answer_both(PROBES, prompt, generate)
    assert got == {
        "without_retrieval": Answers(["answer 0", "answer 1"], [True, False]),
        "with_retrieval": Answers(["answer 2", "answer 3"], [True, False]),
    }
    asked = [json.loads(p) for p in prompts]
    assert asked[1][0]["content"] == system_message("maren")  # p2 without memories
    assert asked[3][0]["content"] == system_message("maren", ["I sail Gaivota."])
    assert asked[3][1] == {"role": "user", "content": "<user>What is your boat called?</user>"}


def test_scores_count_recall_hygiene_and_transfer() -> None:
    base = {
        "without_retrieval": _answers("I like pasta.", "It is a boat."),
        "with_retrieval": _answers("Pasta.", "Gaivota, I think."),
    }
    tuned = {
        "without_retrieval": _answers("Caldeirada, on Sundays.", "The Gaivota.</assistant>x"),
        "with_retrieval": _answers("Caldeirada.", "<world>Gaivota</world>"),
    }
    ref = scores(PROBES, base, None)
    cand = scores(PROBES, tuned, base)
    assert ref["without_retrieval"]["recall"]["mean"] == 0.0
    assert ref["with_retrieval"]["recall"]["mean"] == pytest.approx(0.5)
    assert ref["without_retrieval"]["transfer"] is None
    assert cand["without_retrieval"]["recall"]["mean"] == 1.0
    assert cand["without_retrieval"]["transfer"] == 1.0
    assert cand["with_retrieval"]["hygiene"]["with_stray_tags"] == 1
    verdict = check(cand, ref, 0.1)
    assert not verdict["passed"]
    assert verdict["failures"] == ["stray tags in 1 answers (reference 0)"]


def test_a_candidate_that_forgets_facts_is_rejected_with_the_numbers() -> None:
    knows = {
        s: _answers("Caldeirada.", "Gaivota.") for s in ("without_retrieval", "with_retrieval")
    }
    forgot = {
        "without_retrieval": _answers("Soup.", "Gaivota."),
        "with_retrieval": _answers("Caldeirada.", "Gaivota."),
    }
    verdict = check(scores(PROBES, forgot, knows), scores(PROBES, knows, None), 0.1)
    assert not verdict["passed"]
    assert verdict["failures"] == [
        "fact recall without retrieval 50% (reference 100%, tolerance 10%)"
    ]
    # Within the tolerance it passes, and says what it measured.
    verdict = check(scores(PROBES, forgot, knows), scores(PROBES, knows, None), 0.5)
    assert verdict["passed"]
    assert "fact recall with retrieval 100% (reference 100%" in verdict["summary"]


def test_probes_file_is_validated_line_by_line(tmp_path: Path) -> None:
    path = tmp_path / "fidelity_probes.jsonl"
    assert read_probes(path) == []
    path.write_text(json.dumps({**PROBES[1].to_dict()}) + "\n")
    assert read_probes(path) == [PROBES[1]]
    path.write_text(json.dumps({"profile": "maren", "question": "q?"}) + "\n")
    with pytest.raises(BadInputError, match=r"fidelity_probes\.jsonl:1: needs 'profile'"):
        read_probes(path)


def test_outputs_list_every_answer_per_model_and_setting() -> None:
    answers = {
        "reference": {"without_retrieval": _answers("a", "b")},
        "candidate": {"without_retrieval": _answers("c", "d")},
    }
    rows = outputs(PROBES, answers)
    assert rows[1] == {
        "id": "p2",
        "question": "What is your boat called?",
        "reference": "Gaivota.",
        "answers": {
            "reference": {"without_retrieval": "b"},
            "candidate": {"without_retrieval": "d"},
        },
    }


def test_a_reference_in_the_persons_voice_is_style_while_its_facts_are_recalled(
    tmp_path: Path,
) -> None:
    voiced = FidelityProbe(
        "p3",
        "odile",
        "Which town were you a child in?",
        "Brest, in Brittany. That is the short of it, voilà.",
        "probes",
        facts="Brest, in Brittany.",
    )
    path = tmp_path / "fidelity_probes.jsonl"
    path.write_text(json.dumps(voiced.to_dict()) + "\n")
    assert read_probes(path) == [voiced]
    plain = FidelityProbe("p3", "odile", voiced.question, voiced.reference, "probes")
    # The fact alone, without her turn of phrase: all of it recalled, though "voilà" is a
    # rare word of the reference.
    fact_only = {"without_retrieval": _answers("Brest, in Brittany.")}
    assert scores([voiced], fact_only, None)["without_retrieval"]["recall"]["mean"] == 1.0
    assert scores([plain], fact_only, None)["without_retrieval"]["recall"]["mean"] < 1.0
    # Her voice still decides the style: the voiced answer is closer than the terse one.
    voiced_answer = {"without_retrieval": _answers("In Brest, that is the short of it, voilà.")}
    assert scores([voiced], voiced_answer, fact_only)["without_retrieval"]["transfer"] == 1.0
    assert outputs([voiced], {"candidate": fact_only})[0]["facts"] == "Brest, in Brittany."
    path.write_text(json.dumps({**voiced.to_dict(), "facts": ["Brest"]}) + "\n")
    with pytest.raises(BadInputError, match="'facts' and 'system' \\(strings\\)"):
        read_probes(path)

"""The optional LLM judge of persona fidelity, against the fake Ollama server: what it
asks, what it records, and that a missing or broken judge is recorded, never raised."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.fidelity.judge import JudgeConfig, judge_answers, judge_config, winner
from services.fidelity.judge_prompts import parse_preference, parse_score
from services.fidelity.summary import describe_judge, judge_summary
from services.settings import load_settings
from services.training.command import build_command
from services.training.gate.fidelity import FidelityProbe
from tests.fakes.ollama_server import FakeOllama, Generation, OllamaError

JUDGE = "judge:7b"
PROBES = [
    FidelityProbe(
        "p1", "maren", "Which stew do you make?", "Caldeirada, on Sundays.", "probes", ("x",)
    ),
    FidelityProbe("p2", "maren", "What is your boat called?", "Gaivota.", "held-out"),
]
FACTS = ("Caldeirada", "Gaivota")
# The candidate knows both facts, the reference neither (without retrieval); with
# retrieval both know the first.
ANSWERS = {
    "reference": {
        "without_retrieval": ["Soup, I suppose.", "It has no name."],
        "with_retrieval": ["Caldeirada.", "A boat."],
    },
    "candidate": {
        "without_retrieval": ["Caldeirada, of course.", "The Gaivota."],
        "with_retrieval": ["Caldeirada!", "Gaivota, always."],
    },
}


def _field(text: str, label: str) -> str:
    found = re.search(rf"^{label}: (.*)$", text, re.M)
    assert found, text
    return found.group(1)


def knows(text: str) -> bool:
    return any(f in text for f in FACTS)


def fair_judge(request: Generation) -> str:
    """Scores 9 an answer holding a fact, else 3; prefers the answer with a fact."""
    user = request.user
    if "An answer to judge:" in user:
        return json.dumps({"score": 9 if knows(_field(user, "An answer to judge")) else 3})
    a, b = knows(_field(user, "Answer A")), knows(_field(user, "Answer B"))
    return json.dumps({"better": "A" if a and not b else "B" if b and not a else "tie"})


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama(models=[JUDGE]) as server:
        yield server


def test_scores_and_preferences_are_recorded(fake: FakeOllama) -> None:
    fake.set_reply(fair_judge)
    record = judge_answers(JudgeConfig(JUDGE, fake.url), PROBES, ANSWERS, against="base")
    assert record["error"] is None and record["against"] == "base"
    assert record["model"] == JUDGE and record["host"] == fake.url
    # Per probe and setting: two scores and the pair asked in both orders.
    assert record["requests"] == 2 * 2 * 4 == len(fake.generations())
    without = record["settings"]["without_retrieval"]
    assert without["match"]["reference"] == {"mean": 3.0, "scored": 2, "unparsable": 0}
    assert without["match"]["candidate"] == {"mean": 9.0, "scored": 2, "unparsable": 0}
    assert without["pairwise"] == {
        "candidate": 2,
        "reference": 0,
        "tie": 0,
        "disagreed": 0,
        "unparsable": 0,
        "candidate_share": 1.0,
    }
    with_ = record["settings"]["with_retrieval"]
    assert with_["match"]["reference"]["mean"] == 6.0  # 9 and 3
    assert with_["pairwise"]["candidate"] == 1 and with_["pairwise"]["tie"] == 1
    assert with_["pairwise"]["disagreed"] == 0  # both orders said tie
    assert with_["pairwise"]["candidate_share"] == 0.75
    p1 = record["probes"][0]
    assert p1["id"] == "p1"
    assert p1["without_retrieval"]["pairwise"] == {
        "reference_first": "B",
        "candidate_first": "A",
        "winner": "candidate",
    }
    # What the judge was asked: the person, their memories and answer, JSON, greedy.
    first = fake.generations()[0]
    assert first.model == "judge:7b" and first.format == "json"
    assert first.options["temperature"] == 0 and first.options["num_predict"] > 0
    assert "The person: maren" in first.user and "- x" in first.user
    assert "Their own answer: Caldeirada, on Sundays." in first.user
    assert "An answer to judge: Soup, I suppose." in first.user
    line = describe_judge(judge_summary(record), ("base", "v1"))
    assert line == (
        "judge judge:7b: persona match base 3.0 -> v1 9.0 of 10 (with memories 6.0 -> 9.0); "
        "preferred: v1 3, base 0, tie 1 (0 where the orders disagreed)"
    )


def test_a_judge_that_prefers_a_position_only_makes_ties(fake: FakeOllama) -> None:
    def first_is_better(request: Generation) -> str:
        if "An answer to judge:" in request.user:
            return '{"score": 5}'
        return '{"better": "A"}'

    fake.set_reply(first_is_better)
    record = judge_answers(JudgeConfig(JUDGE, fake.url), PROBES, ANSWERS)
    for setting in ("without_retrieval", "with_retrieval"):
        pairwise = record["settings"][setting]["pairwise"]
        assert pairwise["candidate"] == pairwise["reference"] == 0
        assert pairwise["tie"] == pairwise["disagreed"] == 2
        assert pairwise["candidate_share"] == 0.5
    assert record["probes"][1]["with_retrieval"]["pairwise"]["winner"] == "tie"


def test_garbage_replies_are_unparsable_not_a_crash(fake: FakeOllama) -> None:
    replies = iter(
        [
            "I would say it is rather good.",  # no score
            '{"score": 11}',  # out of range
            '{"better": "C"}',
            '```json\n{"better": "B"}\n```',  # fenced: read
        ]
        * 4
    )
    fake.set_reply(lambda request: next(replies))
    record = judge_answers(JudgeConfig(JUDGE, fake.url), PROBES, ANSWERS)
    assert record["error"] is None
    without = record["settings"]["without_retrieval"]
    assert without["match"]["reference"] == {"mean": None, "scored": 0, "unparsable": 2}
    assert without["match"]["candidate"]["unparsable"] == 2
    assert without["pairwise"]["unparsable"] == 2 and without["pairwise"]["candidate_share"] is None
    assert record["probes"][0]["without_retrieval"]["pairwise"]["candidate_first"] == "B"
    assert record["unparsable_replies"][:3] == [
        "I would say it is rather good.",
        '{"score": 11}',
        '{"better": "C"}',
    ]
    assert "4 unparsable" in (describe_judge(judge_summary(record)) or "")


def test_a_missing_model_is_recorded_after_one_request(fake: FakeOllama) -> None:
    fake.set_reply(fair_judge)
    record = judge_answers(JudgeConfig("absent:1b", fake.url), PROBES, ANSWERS)
    assert record["requests"] == 1 and len(fake.requests_for("/api/chat")) == 1
    assert "has no model 'absent:1b'" in record["error"]
    assert "ollama pull absent:1b" in record["error"]
    assert "settings" not in record and "probes" not in record
    assert describe_judge(judge_summary(record), ("base", "v1")).startswith(
        "judge absent:1b: not judged: "
    )


def test_a_server_error_is_recorded(fake: FakeOllama) -> None:
    def overloaded(request: Generation) -> str:
        raise OllamaError("server busy", 503)

    fake.set_reply(overloaded)
    record = judge_answers(JudgeConfig(JUDGE, fake.url), PROBES, ANSWERS)
    assert record["error"] == f"Ollama at {fake.url} answered (HTTP 503): server busy"
    assert record["requests"] == 1


def test_an_unreachable_server_is_recorded() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    host = f"http://127.0.0.1:{port}"
    record = judge_answers(JudgeConfig(JUDGE, host, timeout_s=5), PROBES, ANSWERS)
    assert record["error"].startswith(f"cannot reach Ollama at {host}")
    assert record["requests"] == 1


def test_a_slow_server_is_recorded(fake: FakeOllama) -> None:
    fake.delay_next("/api/chat", 2.0)
    record = judge_answers(JudgeConfig(JUDGE, fake.url, timeout_s=0.3), PROBES, ANSWERS)
    assert record["error"] == f"Ollama at {fake.url} did not answer within 0.3s"


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ('{"score": 7}', 7),
        ('{"score": "8"}', 8),
        ('{"score": 6.0}', 6),
        ('Sure! {"score": 4} is my verdict', 4),
        ("9", 9),
        ("7/10", 7),
        ('{"score": 0}', None),
        ('{"score": 7.5}', None),
        ('{"score": true}', None),
        ('{"rating": 7}', None),
        ("seven", None),
        ("", None),
    ],
)
def test_scores_are_read_strictly(text: str, score: int | None) -> None:
    assert parse_score(text) == score


@pytest.mark.parametrize(
    ("text", "preference"),
    [
        ('{"better": "A"}', "A"),
        ('{"better": "b"}', "B"),
        ('{"better": "Tie"}', "tie"),
        ('{"better": "Answer A."}', "A"),
        ('{"better": "C"}', None),
        ('{"winner": "A"}', None),
        ("A", None),
    ],
)
def test_preferences_are_read_strictly(text: str, preference: str | None) -> None:
    assert parse_preference(text) == preference


def test_a_pair_counts_only_when_both_orders_agree() -> None:
    assert winner("B", "A") == "candidate"
    assert winner("A", "B") == "reference"
    assert winner("A", "A") == "tie"  # the first position won twice: order bias
    assert winner("tie", "A") == "tie"
    assert winner(None, "A") is None


def test_the_judge_is_off_unless_a_model_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    def configured() -> JudgeConfig | None:
        s = load_settings()
        return judge_config(s.eval.judge_model, s.ollama.url, s.eval.judge_timeout_s)

    assert configured() is None
    monkeypatch.setenv("PERSONAD_EVAL__JUDGE_MODEL", " ")
    assert configured() is None
    monkeypatch.setenv("PERSONAD_EVAL__JUDGE_MODEL", "qwen2.5:7b")
    assert configured() == JudgeConfig("qwen2.5:7b", "http://127.0.0.1:11434", 120.0)
    monkeypatch.setenv("PERSONAD_OLLAMA__URL", "http://gpu-box:11434")
    monkeypatch.setenv("PERSONAD_EVAL__JUDGE_TIMEOUT_S", "30")
    assert configured() == JudgeConfig("qwen2.5:7b", "http://gpu-box:11434", 30.0)
    # The training child is told about the judge only when there is one.
    plain = build_command(run_dir=Path("/r"), kind="lora", base="b", cache_dir=Path("/c"))
    assert not any(a.startswith("--judge") for a in plain)
    told = build_command(
        run_dir=Path("/r"), kind="lora", base="b", cache_dir=Path("/c"), judge=configured()
    )
    assert told[len(plain) :] == [
        "--judge-model",
        "qwen2.5:7b",
        "--judge-host",
        "http://gpu-box:11434",
        "--judge-timeout",
        "30",
    ]

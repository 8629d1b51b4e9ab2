"""The person's style in their system message: derived from their own answers and
memories, replaced by their own system.txt, fixed with the dataset and served with the
version it trained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.curation import CurationError
from services.ledger import Ledger
from services.persona_prompt import system_message
from services.persona_style import (
    MAX_SYSTEM_CHARS,
    PERSONA_FILE,
    default_head,
    derive_head,
    measure_style,
    persona_head,
    run_head,
    serving_head,
)
from services.run_prep import PROBES_FILE
from tests.services.test_run_prep_probes import _ingest, prepare_alice

ODILE_LIKE = [
    "Well, I repair violins in Lyon, voilà.",
    "Well, since you ask: my greyhound Biscotte, voilà.",
    "Brest, in Brittany. That is the short of it, voilà.",
    "Well, kouign-amann every Saturday, voilà.",
    "A yellow 2CV called Moutarde. That is the short of it, voilà.",
]


def test_the_style_is_what_the_answers_and_memories_say() -> None:
    metadata = [({"topic": "work"}, ()), ({"topic": "work"}, ("baking",)), ({}, ("baking",))]
    metadata += [({"topic": "dog"}, ())]  # once only: not a topic of hers
    style = measure_style(ODILE_LIKE, metadata)
    assert style.topics == ("baking", "work")
    assert style.words == 8  # the median answer (5, 7, 8, 10 and 11 words)
    assert style.openers == ("Well,",)  # 3 of 5 open with it
    assert style.closers == ("voilà.",)
    head = derive_head("odile", style)
    assert head == (
        "You are odile. Answer as odile, in your own words. You often talk about baking and "
        'work. Your answers are usually about 8 words long. You often begin with "Well,". '
        'You often end with "voilà".'
    )
    # Too few answers to say how the person speaks: the plain head, and the topics.
    few = measure_style(ODILE_LIKE[:2], [])
    assert (few.words, few.openers, few.closers, few.topics) == (None, (), (), ())
    assert derive_head("odile", few) == default_head("odile")


def test_a_profiles_own_system_txt_replaces_the_derived_head(tmp_path: Path) -> None:
    own = tmp_path / "system.txt"
    own.write_text("You are Odile, a luthier in Lyon. Speak plainly.\n")
    persona = persona_head("odile", ODILE_LIKE, [], own)
    assert persona["system"] == "You are Odile, a luthier in Lyon. Speak plainly."
    assert persona["source"] == "system.txt" and persona["style"]["closers"] == ["voilà."]
    assert persona_head("odile", ODILE_LIKE, [], tmp_path / "none.txt")["source"] == "derived"
    own.write_text("  \n")
    with pytest.raises(ValueError, match=r"system\.txt is empty"):
        persona_head("odile", ODILE_LIKE, [], own)
    own.write_text("x" * (MAX_SYSTEM_CHARS + 1))
    with pytest.raises(ValueError, match=f"at most {MAX_SYSTEM_CHARS}"):
        persona_head("odile", ODILE_LIKE, [], own)


def test_the_head_is_fixed_with_the_dataset_and_served_with_the_version(
    tmp_path: Path, tiny_model: Path
) -> None:
    system_file = tmp_path / "profiles" / "alice" / "system.txt"
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        _ingest(ledger, tmp_path)
        run_dir = prepare_alice(
            ledger,
            tmp_path / "run",
            tiny_model,
            retrieve=lambda profile, question, k: [],
            system_file=system_file,
        )
        derived = json.loads((run_dir / PERSONA_FILE).read_text())
        head = derived["system"]
        assert derived["source"] == "derived"
        assert head.startswith(default_head("alice")) and head != default_head("alice")
        assert "You often end with" in head  # "...I think about it often."
        # Every chat sample opens with it; the probes carry it for the gate.
        rows = [json.loads(x) for x in (run_dir / "fine_tune_dataset.jsonl").open()]
        assert rows and all(r["messages"][0]["content"].startswith(head) for r in rows)
        assert rows[0]["messages"][0]["content"].split("\n")[0] == system_message("alice", (), head)
        probes = [json.loads(x) for x in (run_dir / PROBES_FILE).open()]
        assert probes and all(p["system"] == head for p in probes)
        assert run_head(run_dir) == head
        # ask serves the version's own head; with no version, the profile's head now.
        version = {"info": {"run_dir": str(run_dir), "system": head}}
        assert serving_head(ledger, "alice", version, system_file) == head
        assert serving_head(ledger, "alice", {"info": {}}, system_file) is None  # an old one
        assert serving_head(ledger, "alice", None, system_file) == head
        system_file.write_text("You are Alice. Be brief.")
        assert serving_head(ledger, "alice", version, system_file) == head
        assert serving_head(ledger, "alice", None, system_file) == "You are Alice. Be brief."
        system_file.write_bytes(b"\xff\xfe")
        with pytest.raises(CurationError, match="cannot be read as UTF-8"):
            serving_head(ledger, "alice", None, system_file)


def test_ask_opens_with_the_profiles_head(tmp_path: Path) -> None:
    from dataclasses import replace

    from services.ask import ask
    from tests.services.test_ask import RecordingPool, _cfg

    profiles = tmp_path / "profiles"
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        _ingest(ledger, tmp_path)
        cfg = replace(_cfg(tmp_path, "org/base", warm=True), profiles_dir=profiles)
        pool = RecordingPool()
        ask(ledger, None, cfg, "alice", "What about things?", k=0, pool=pool)
        derived = serving_head(ledger, "alice", None, None)
        assert derived is not None and derived != default_head("alice")
        assert system_message("alice", (), derived) in pool.calls[0][1]
        (profiles / "alice" / "system.txt").write_text("You are Alice. Be brief.")
        ask(ledger, None, cfg, "alice", "What about things?", k=0, pool=pool)
        assert "You are Alice. Be brief." in pool.calls[1][1]
        assert derived not in pool.calls[1][1]

"""`personad eval`: a published version's persona fidelity against the base model, on
demand, through the control socket and the CLI."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from daemon import render
from daemon.commands import Commands
from daemon.control import CommandError
from services.fidelity.summary import judge_summary
from services.ledger import Ledger
from services.settings import load_settings
from tests.daemon.jobs_harness import Harness
from tests.daemon.test_fidelity_commands import StillRuntime
from tests.daemon.test_publish_flow import _add, _settings
from tests.daemon_process import DaemonProcess
from tests.fakes.ollama_server import FakeOllama

OWN_PROBES = [
    {"question": "question 1 about the world?", "reference": "answer 1: hello world, the answer."},
    {"question": "Where is the cabin?", "reference": "The cabin stands by the lake at Ringsaker."},
]


@dataclass
class RetrievingRuntime(StillRuntime):
    """A still daemon whose retrieval finds nothing."""

    def retrieve(self, profile: str, question: str, k: int) -> list[tuple[str, str]]:
        return []


def _eval_error(tmp_path: Path, args: dict[str, Any]) -> CommandError:
    settings = load_settings(overrides={"state_dir": str(tmp_path / "state")})
    with Ledger(settings.ledger_path) as ledger:
        ledger.ensure_profile("alice")
        ledger.ensure_profile("bob")
        ledger.add_version("alice", 1, kind="lora", job_id=1, run_dir=None, path=None, base="b")
    commands = Commands(RetrievingRuntime(settings))
    try:
        with pytest.raises(CommandError) as failed:
            asyncio.run(commands.eval(args))
    finally:
        commands.close()
    return failed.value


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        ({"profile": "carol"}, "unknown_profile", "no profile 'carol'"),
        ({"profile": "alice", "version": 5}, "not_published", "no version v5 (published: v1)"),
        ({"profile": "bob"}, "not_published", "bob has no active version"),
        ({"profile": "bob", "version": 1}, "not_published", "no version v1 (published: none)"),
        ({"profile": "alice", "version": "v1"}, "bad_args", "'version'"),
        ({"profile": "alice", "version": 0}, "bad_args", "'version'"),
        ({"profile": ""}, "bad_args", "'profile'"),
    ],
)
def test_eval_errors(tmp_path: Path, args: dict[str, Any], code: str, words: str) -> None:
    error = _eval_error(tmp_path, args)
    assert error.code == code
    assert words in error.message


def test_a_version_missing_from_the_registry_is_not_published(tmp_path: Path) -> None:
    # The ledger knows v1 but the registry holds nothing: nothing to load.
    error = _eval_error(tmp_path, {"profile": "alice"})
    assert error.code == "not_published"
    assert "no version v1" in error.message


@pytest.mark.slow
def test_eval_of_a_published_version_through_the_daemon(
    short_tmp: Path, tiny_model: Path, fake_python: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # v1: a full "fine-tune" (the stand-in trainer copies the tiny model), published by the
    # supervisor as a real job publishes.
    monkeypatch.setenv("FAKE_TRAINER", "ok")
    h = Harness(_settings(short_tmp, tiny_model), fake_python)
    _add(h.ledger, short_tmp, 12)
    h.supervisor.start()
    try:
        job = h.run(kind="full", force=True)
    finally:
        h.supervisor.stop(10)
        h.ledger.close()
    assert job.state == "succeeded", job.reason
    probes_file = short_tmp / "profiles" / "alice" / "probes.jsonl"
    probes_file.write_text("".join(json.dumps(p) + "\n" for p in OWN_PROBES))

    # eval.judge_model names a judge the Ollama server lacks: recorded, never a failure.
    judge = FakeOllama().start()
    daemon = DaemonProcess(
        short_tmp,
        env={
            "PERSONAD_TRAINING__BASE_MODEL": str(tiny_model),
            "PERSONAD_TRAINING__FAMILY": "smollm",
            "PERSONAD_TRAINING__CONFIG": json.dumps({"gate.fidelity_probes": 2}),
            "PERSONAD_TRIGGERS__LORA_SCHEDULE": "",
            "PERSONAD_TRIGGERS__FULL_SCHEDULE": "",
            "PERSONAD_EVAL__JUDGE_MODEL": "judge:7b",
            "PERSONAD_OLLAMA__URL": judge.url,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        },
    ).start()
    try:
        assert daemon.call("reindex", {"profile": "alice"}, timeout=300)["indexed"] == 12
        done = daemon.cli("eval", "alice", "--json", timeout=600)
        assert done.returncode == 0, done.stderr + daemon.log()[-4000:]
        result = json.loads(done.stdout)
        daemon.env["COLUMNS"] = "250"  # the run dir on one line
        human = daemon.cli("eval", "alice", "--version", "v1", timeout=600)
        # A version that is not there.
        missing = daemon.cli("eval", "alice", "--version", "v7")
        bad = daemon.cli("eval", "alice", "--version", "seven")
    finally:
        judge.stop()
        assert daemon.stop() == 0

    assert human.returncode == 0, human.stderr
    print(human.stdout)
    assert human.stdout.startswith("alice v1 against the base model, 2 probes\n  base: recall ")
    assert "\n  v1: recall " in human.stdout and "\n  run dir " in human.stdout
    assert missing.returncode == 1 and "no version v7 (published: v1)" in missing.stderr
    assert bad.returncode != 0 and "--version takes a version like v2" in bad.stderr
    assert result["profile"] == "alice" and result["version"] == "v1"
    run_dir = Path(result["run_dir"])
    assert run_dir.parent.parent == short_tmp / "state" / "runs" / "alice"
    assert run_dir.name.startswith("eval-v1-")
    # The format v1 was trained in, and the person's own probes with retrieved memories.
    trained = Path(job.run_dir or "")
    assert (run_dir / "schema_applied.json").read_bytes() == (
        trained / "schema_applied.json"
    ).read_bytes()
    probes = [json.loads(line) for line in (run_dir / "fidelity_probes.jsonl").open()]
    assert [p["question"] for p in probes] == [p["question"] for p in OWN_PROBES]
    assert all(p["source"] == "probes" and p["memories"] for p in probes)

    fidelity = result["fidelity"]
    assert fidelity["probes"] == 2 and fidelity["transfer_against"] == "base"
    for key in ("recall", "recall_with_retrieval", "transfer", "stray_tags", "stopped"):
        assert key in fidelity and key in fidelity["reference"]
    assert fidelity["reference"]["transfer"] is None  # style is judged against the base
    assert isinstance(result["check"]["passed"], bool) and result["check"]["summary"]
    assert "has no model 'judge:7b'" in result["judge"]["error"]
    assert "\n  judge judge:7b: not judged: Ollama at " in human.stdout

    saved = json.loads((run_dir / "fidelity.json").read_text())
    assert saved["version"] == "v1" and saved["adapter"] is None
    assert saved["model"] == str(short_tmp / "state" / "models" / "alice" / "v1" / "model")
    assert saved["base"] == str(tiny_model)
    assert (
        saved["fidelity"]["candidate"]["without_retrieval"]["recall"]["mean"]
        == (fidelity["recall"])
    )
    assert len(saved["outputs"]) == 2
    assert saved["fidelity_judge"]["error"] == result["judge"]["error"]
    assert saved["fidelity_judge"]["requests"] == 1

    # What a person reads.
    with render.console.capture() as captured:
        render.evaluated(result, None)  # type: ignore[arg-type]
    lines = captured.get().splitlines()
    assert lines[0] == "alice v1 against the base model, 2 probes"
    assert lines[1].startswith("  base: recall ") and "(with memories " in lines[1]
    assert lines[2].startswith("  v1: recall ") and "style " in lines[2]
    assert lines[-1] == f"  run dir {run_dir}"


def test_eval_prints_the_judges_line_when_there_is_one() -> None:
    fidelity = {"probes": 2, "recall": 0.5, "reference": {"recall": 0.0}}
    result = {
        "profile": "alice",
        "version": "v2",
        "run_dir": "/runs/eval-v2",
        "fidelity": fidelity,
        "check": {"passed": True, "summary": "fact recall without retrieval 50%"},
    }
    with render.console.capture() as captured:
        render.evaluated(result, None)  # type: ignore[arg-type]
    assert "judge" not in captured.get()
    judged = judge_summary(
        {
            "model": "qwen2.5:7b",
            "error": None,
            "settings": {
                "without_retrieval": {
                    "match": {"reference": {"mean": 4.0}, "candidate": {"mean": 8.0}},
                    "pairwise": {"candidate": 2, "reference": 0, "tie": 0},
                },
                "with_retrieval": {
                    "match": {"reference": {"mean": 6.0}, "candidate": {"mean": None}},
                    "pairwise": {"candidate": 1, "reference": 0, "tie": 1, "disagreed": 1},
                },
            },
        }
    )
    assert judged["pairwise"]["candidate_share"] == 3.5 / 4
    with render.console.capture() as captured:
        render.evaluated({**result, "judge": judged}, None)  # type: ignore[arg-type]
    text = " ".join(captured.get().split())  # wrapped as wide as the terminal
    assert text.endswith(
        "judge qwen2.5:7b: persona match base 4.0 -> v2 8.0 of 10 (with memories 6.0 -> -); "
        "preferred: v2 3, base 0, tie 1 (1 where the orders disagreed) run dir /runs/eval-v2"
    )

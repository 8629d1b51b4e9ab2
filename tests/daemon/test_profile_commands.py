"""What users of ZEGA and Cortex rely on, through the real daemon and CLI: the summary a
job gives before it starts (and `train --dry-run`), `--set` and `--name`, per-profile
`stats`, and `remember` (one pair, and `--interactive`)."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.daemon_process import REPO, DaemonProcess

HERE = Path(__file__).resolve().parent


def _setup(root: Path) -> DaemonProcess:
    python = root / "fake-python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{HERE / "fake_trainer.py"}" "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    d = DaemonProcess(
        root,
        env={
            "FAKE_TRAINER": "ok",
            "PERSONAD_TRAINING__PYTHON": str(python),
            "PERSONAD_TRAINING__FAMILY": "smollm",
            "PERSONAD_TRAINING__STOP_GRACE_S": "1",
        },
    )
    mem = d.profiles_dir / "alice" / "memory"
    mem.mkdir(parents=True)
    (mem / "pc.jsonl").write_text(
        "\n".join(
            json.dumps(
                {
                    "prompt": f"What did you cook on Sunday {i}?",
                    "completion": f"Caldeirada number {i}, slowly, with the radio on.",
                    "quality_score": 9 if i % 2 else 8,
                    "metadata": {"topic": "cooking" if i < 8 else "sailing"},
                }
            )
            for i in range(12)
        )
    )
    return d


def _stats(d: DaemonProcess) -> dict[str, Any]:
    return dict(d.call("stats", {"profile": "alice"}))


def test_summary_stats_and_remember(short_tmp: Path) -> None:
    d = _setup(short_tmp).start()
    try:
        d.wait_for(lambda: _stats_or_none(d, 12))
        before = d.cli_json("stats", "alice")
        assert before["training_examples"] == 12
        assert before["examples_until_next_training"] == 50 - 12
        assert before["last_fine_tune"] is None and before["total_training_steps"] == 0
        assert before["quality_scores"] == {"average": 8.5, "highest": 9.0, "lowest": 8.0}
        assert before["genre_preferences"] == {"cooking": 8, "sailing": 4}
        assert (before["custom_model_exists"], before["custom_model_name"]) == (False, None)

        # Before a job starts, say what it will do; --dry-run queues nothing.
        dry = d.cli_json("train", "alice", "--dry-run", "--set", "lora.r=4")
        s = dry["summary"]
        assert dry["dry_run"] is True and d.call("jobs")["jobs"] == []
        assert s["model"]["category"] == "tiny" and s["model"]["params"] > 100_000_000
        assert s["dataset"]["train"] + s["dataset"]["eval"] == 12
        assert s["dataset"]["task_type"] == "chat"
        hyper = s["hyperparameters"]
        assert hyper["lora.r"] == {"value": 4, "source": "job"}
        assert hyper["learning_rate"] == {"value": 3e-3, "source": "smart"}  # a small profile
        assert hyper["batch_size"]["source"] == "smart"
        assert s["estimate_s"] > 0 and s["steps"] > 0
        assert dry["plan"] is s["plan"] or dry["plan"] == s["plan"]
        assert s["plan"]["strategy"] in ("full", "full-8bit", "lora", "qlora")
        text = d.cli("train", "alice", "--dry-run")
        assert text.returncode == 0, text.stderr
        for part in ("dry run: nothing queued", "tiny", "learning_rate 0.003 (smart)", "time"):
            assert part in text.stdout, text.stdout

        # An invalid expert override is refused with the key, nothing is queued.
        bad = d.cli("train", "alice", "--set", "lora.rank=3")
        assert bad.returncode == 1 and "lora.rank" in bad.stderr
        assert d.cli("train", "alice", "--set", "nonsense").returncode == 1
        bad_name = d.cli("train", "alice", "--name", "no spaces please")
        assert bad_name.returncode == 1 and "'name' must be" in bad_name.stderr
        assert d.call("jobs")["jobs"] == []

        # A manual trigger answers with the examples used; when it ends, seconds and size.
        queued = d.cli_json("train", "alice", "--name", "alice-voice")
        assert queued["created"] and queued["examples"] == s["dataset"]["train"]
        first = d.wait_for(lambda: _ended(d, queued["job"]["id"]))
        assert first["state"] == "succeeded", first
        # Retrain on everything (nothing is new), following it to its end.
        done = d.cli("train", "alice", "--all", "--name", "alice-voice", "--wait")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "12 examples, 0.4 s of training, model 0.0 MB" in done.stdout, done.stdout
        job = d.call("jobs")["jobs"][0]
        assert job["result"]["training_seconds"] == 0.4
        assert job["result"]["model_size_bytes"] > 0
        after = _stats(d)
        assert after["total_training_steps"] == 8 and after["last_fine_tune"]
        assert (after["custom_model_exists"], after["custom_model_name"]) == (True, "alice-voice")
        versions = d.call("versions", {"profile": "alice"})["versions"]
        assert [v["name"] for v in versions] == ["alice-voice", "alice-voice"]
        assert after["examples_until_next_training"] == 50

        # remember: a file in the memory folder, ingested as any other.
        one = d.cli_json(
            "remember",
            "alice",
            "--prompt",
            "Where do you sail?",
            "--completion",
            "Out past the Bugio lighthouse when the wind is from the north.",
            "--quality",
            "9",
            "--metadata",
            '{"topic": "sailing"}',
        )
        assert one["eligible"] is True and one["examples_until_next_training"] == 49
        path = Path(one["path"])
        assert path.parent == d.profiles_dir / "alice" / "memory" / "remembered"
        assert json.loads(path.read_text())["completion"].startswith("Out past the Bugio")
        d.wait_for(lambda: _stats_or_none(d, 13))
        assert _stats(d)["genre_preferences"]["sailing"] == 5
        hits = d.call("search", {"profile": "alice", "query": "Bugio lighthouse", "k": 1})
        assert hits["results"][0]["id"] == one["memory_id"]

        for args, message in (
            (("--prompt", " ", "--completion", "x y z"), "the prompt is empty"),
            (("--prompt", "q", "--completion", "a b c", "--quality", "11"), "from 0 to 10"),
            (("--prompt", "q"), "needs --prompt and --completion"),
        ):
            refused = d.cli("remember", "alice", *args)
            assert refused.returncode == 1 and message in refused.stderr, refused.stderr
        not_json = d.cli(
            "remember", "alice", "--prompt", "q", "--completion", "a", "--metadata", "[1]"
        )
        assert not_json.returncode == 2 and "JSON object" in not_json.stderr
        assert d.cli("stats", "nobody").returncode == 1

        # Interactive: pairs until 'done'.
        talk = subprocess.run(
            d.command("remember", "alice", "--interactive", "--quality", "9"),
            cwd=REPO,
            env=d.env,
            input="What do you read?\nPessoa, slowly, one page at a time.\n\n \ndone\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert talk.returncode == 0, talk.stderr
        assert "1 pair(s) remembered, 1 refused" in talk.stdout
        d.wait_for(lambda: _stats_or_none(d, 14))
    finally:
        assert d.stop() == 0


def _ended(d: DaemonProcess, job_id: int) -> dict[str, Any] | None:
    job = next(j for j in d.call("jobs")["jobs"] if j["id"] == job_id)
    return None if job["state"] in ("queued", "running") else dict(job)


def _stats_or_none(d: DaemonProcess, examples: int) -> bool:
    try:
        return bool(_stats(d)["training_examples"] == examples)
    except Exception:  # the profile is not known before its first memories are in
        return False

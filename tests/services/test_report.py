"""Run reports: loss curves as a PNG and a readable summary."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from services.report import ReportError, latest_run, write_report
from tests.fidelity_scores import fidelity_scores

REPO = Path(__file__).resolve().parents[2]


def _run_dir(root: Path, name: str = "lora-job1-120000") -> Path:
    run = root / "runs" / "alice" / "2026-11-21" / name
    run.mkdir(parents=True)
    events = [
        {
            "event": "start",
            "total_steps": 6,
            "kind": "lora",
            "device": "cpu",
            "n_train": 40,
            "n_eval": 5,
        },
        {"event": "eval", "step": 0, "eval_loss": 3.2},
    ]
    events += [{"event": "step", "step": i, "loss": 3.0 - 0.3 * i, "lr": 1e-4} for i in range(1, 7)]
    events += [
        {"event": "eval", "step": 6, "eval_loss": 1.9},
        {
            "event": "done",
            "metrics": {"gate": {"passed": True, "reason": "improved 40%"}},
            "artifact": str(run / "adapter"),
        },
    ]
    (run / "progress.jsonl").write_text("\n".join(json.dumps(e) for e in events) + "\nnot json\n")
    (run / "run-summary.json").write_text(
        json.dumps(
            {
                "status": "ok",
                "metrics": {
                    "total": 45,
                    "avg_assistant_words": 31.5,
                    "short_share": 0.82,
                    "long_share": 0.02,
                    "filler_share": 0.0,
                    "modes": {"emulation": {"count": 45, "share": 1.0}},
                    "warnings": ["emulation: 45 samples, below min_samples 500"],
                },
                "gate": {
                    "passed": True,
                    "reason": "improved 40%",
                    "heldout": {"candidate": 1.9, "reference": 3.2},
                },
            }
        )
    )
    return run


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_report_has_curves_metrics_gate_and_version(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    report = write_report(run, published="alice v3 (active)")
    assert report.png == run / "report.png"
    assert _png_size(report.png) == (800, 450)
    assert "eval loss: 3.2000 (step 0) -> 1.9000 (step 6)" in report.text
    assert "average response: 31.5 words" in report.text
    assert "warning: emulation: 45 samples, below min_samples 500" in report.text
    assert "verdict: passed: improved 40%" in report.text
    assert "heldout loss: reference 3.2000, candidate 1.9000" in report.text
    assert "alice v3 (active)" in report.text
    assert "![loss curves](report.png)" in report.markdown.read_text()


def test_report_of_a_profile_picks_its_latest_run_on_the_cli(tmp_path: Path) -> None:
    _run_dir(tmp_path, "lora-job1-120000")
    newest = _run_dir(tmp_path, "lora-job2-130000")
    assert latest_run(tmp_path, "alice") == newest
    out = tmp_path / "elsewhere" / "curves.png"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "daemon.cli",
            "report",
            "alice",
            "--state-dir",
            str(tmp_path),
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "lora-job2-130000" in done.stdout and _png_size(out)[0] == 800


def test_nothing_to_report(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="no training runs"):
        latest_run(tmp_path, "bob")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ReportError, match=r"neither progress\.jsonl nor run-summary\.json"):
        write_report(empty)


def test_report_shows_persona_fidelity_beside_the_loss_curves(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)

    summary = json.loads((run / "run-summary.json").read_text())
    summary["gate"]["fidelity"] = {
        "passed": True,
        "probes": 10,
        "transfer_against": "base",
        "candidate": fidelity_scores(0.7, 0.9, 0.8),
        "reference": fidelity_scores(0.0, 0.3, None),
    }
    (run / "run-summary.json").write_text(json.dumps(summary))
    (run / "eval.json").write_text(json.dumps(summary["gate"]))
    report = write_report(run)
    assert _png_size(report.png) == (1300, 450)  # the fidelity bars beside the curves
    assert "candidate: recall 70% (with memories 90%), style 80%, 0 with stray tags" in report.text
    assert "reference (base): recall 0% (with memories 30%)" in report.text
    assert "probes: 10; check passed" in report.text


def test_report_gives_the_llm_judges_figures_apart(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    gate = json.loads((run / "run-summary.json").read_text())["gate"]
    pairwise = {"candidate": 3, "reference": 0, "tie": 1, "disagreed": 1, "unparsable": 0}
    judged = {
        "model": "qwen2.5:7b",
        "against": "base",
        "error": None,
        "settings": {
            "without_retrieval": {
                "match": {"reference": {"mean": 3.5}, "candidate": {"mean": 7.0}},
                "pairwise": pairwise,
            }
        },
    }
    (run / "eval.json").write_text(json.dumps({**gate, "fidelity_judge": judged}))
    text = write_report(run).text
    assert (
        "- judge qwen2.5:7b: persona match reference (base) 3.5 -> candidate 7.0 of 10; "
        "preferred: candidate 3, reference (base) 0, tie 1 (1 where the orders disagreed) "
        "(not part of the verdict)"
    ) in text
    unreachable = {"model": "qwen2.5:7b", "error": "cannot reach Ollama at http://x:1 (refused)"}
    (run / "eval.json").write_text(json.dumps({**gate, "fidelity_judge": unreachable}))
    assert "- judge qwen2.5:7b: not judged: cannot reach Ollama at http://x:1" in (
        write_report(run).text
    )
    (run / "eval.json").write_text(json.dumps({**gate, "fidelity_judge": None}))
    assert "judge" not in write_report(run).text

"""Persona fidelity of the whole loop, on the real small model: does it become the person?

    .venv/bin/python bench/fidelity.py [--persona maren --persona odile] [--out DIR]
        [--train-config JSON] [--json-out FILE]

For each persona, runs ``personad demo`` (a real daemon: ingest, index, the threshold's
LoRA job on SmolLM2-135M-Instruct, the evaluation gate, publishing, ``ask``) with the
default training configuration unless ``--train-config`` is given, and prints what the
gate measured on the persona's own held-out questions (paraphrased; in no memory): fact
recall of the base and the fine-tuned model without and with retrieval, the transfer
score (style closer to the person than the base's answer), hygiene (answers that stopped
by themselves, answers with stray tags), the regression-set loss change, the share of the
adapter kept (``lora.scale``), and the demo's wall time. Targets (the persona-fidelity
issue): fine-tuned recall with retrieval >= 80%; without retrieval >= 60% and >= 40 points
above the base; transfer >= 60%; 0 answers with stray tags.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TARGETS = {
    "recall_with_retrieval": 0.80,
    "recall": 0.60,
    "recall_gain": 0.40,
    "transfer": 0.60,
    "stray_tags": 0,
}


def run_persona(persona: str, root: Path, train_config: str | None) -> dict[str, Any]:
    argv = [sys.executable, "-m", "daemon.cli", "demo", "--dir", str(root / persona)]
    argv += ["--persona", persona, "--json"]
    if train_config:
        argv += ["--train-config", train_config]
    started = time.monotonic()
    done = subprocess.run(
        argv,
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"the {persona} demo failed (exit {done.returncode}); see {root}")
    result = json.loads(done.stdout)
    result["wall_s"] = round(time.monotonic() - started, 1)
    return result


def figures(result: dict[str, Any]) -> dict[str, Any]:
    gate = result.get("gate") or {}
    fidelity = gate.get("fidelity") or {}
    scores = {name: fidelity.get(name) or {} for name in ("reference", "candidate")}

    def get(model: str, setting: str, *path: str) -> Any:
        value: Any = scores[model].get(setting) or {}
        for key in path:
            value = (value or {}).get(key) if isinstance(value, dict) else None
        return value

    out: dict[str, Any] = {"probes": fidelity.get("probes"), "gate": gate.get("reason")}
    for model, label in (("reference", "base"), ("candidate", "tuned")):
        for setting, suffix in (("without_retrieval", ""), ("with_retrieval", "+rag")):
            out[f"{label}{suffix} recall"] = get(model, setting, "recall", "mean")
            out[f"{label}{suffix} stopped"] = get(model, setting, "hygiene", "stopped_share")
            out[f"{label}{suffix} stray"] = get(model, setting, "hygiene", "with_stray_tags")
    out["transfer"] = get("candidate", "without_retrieval", "transfer")
    out["transfer+rag"] = get("candidate", "with_retrieval", "transfer")
    regression = gate.get("regression") or {}
    out["regression loss change %"] = regression.get("change_pct")
    held = gate.get("heldout") or {}
    out["held-out loss"] = (held.get("reference"), held.get("candidate"))
    run_dir = (result.get("job") or {}).get("run_dir")
    summary = Path(run_dir) / "run-summary.json" if run_dir else None
    kept = json.loads(summary.read_text()).get("adapter_scale") if summary else None
    out["adapter share kept"] = (kept or {}).get("scale")
    out["demo answer"] = ((result.get("answers") or {}).get("v1") or {}).get("text")
    out["demo s"] = result.get("seconds")
    return out


def verdicts(f: dict[str, Any]) -> dict[str, bool | None]:
    def ok(value: Any, test: Any) -> bool | None:
        return None if value is None else bool(test(value))

    gain = (
        None
        if f["tuned recall"] is None or f["base recall"] is None
        else f["tuned recall"] - f["base recall"]
    )
    stray = [f[k] for k in ("tuned stray", "tuned+rag stray") if f[k] is not None]
    return {
        "recall with retrieval >= 80%": ok(f["tuned+rag recall"], lambda v: v >= 0.8),
        "recall without retrieval >= 60%": ok(f["tuned recall"], lambda v: v >= 0.6),
        "recall gain >= 40 points": ok(gain, lambda v: v >= 0.4),
        "transfer >= 60%": ok(f["transfer"], lambda v: v >= 0.6),
        "0 answers with stray tags": ok(max(stray) if stray else None, lambda v: v == 0),
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--persona", action="append", choices=("maren", "odile"))
    p.add_argument("--out", type=Path, help="keep the demo directories here")
    p.add_argument("--train-config", help="JSON of training settings (default: the defaults)")
    p.add_argument("--json-out", type=Path)
    args = p.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="personad-fidelity-"))
    report: dict[str, Any] = {"train_config": args.train_config, "personas": {}}
    for persona in args.persona or ["maren", "odile"]:
        result = run_persona(persona, root, args.train_config)
        f = figures(result)
        report["personas"][persona] = {"figures": f, "targets": verdicts(f)}
        print(f"\n== {persona} ({result['memories']} memories, {f['probes']} probes)")
        for key, value in f.items():
            print(f"  {key:28s} {_fmt(value)}")
        for what, met in verdicts(f).items():
            print(f"  target {what:32s} {'met' if met else 'NOT met' if met is False else '-'}")
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\ndemo directories: {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

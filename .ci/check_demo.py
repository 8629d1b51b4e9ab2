"""CI: runs the real `personad demo` (SmolLM2-135M-Instruct, CPU) and checks its outcome.

Checks that v1 became active, that the fine-tuned model's held-out loss is lower than the
base model's, that the gate measured persona fidelity and that v1 knows the persona's
facts at least as well as the base model, and that `ask` answered the demo's question with
the persona's own fact (caldeirada). Prints the demo's own output as it goes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PERSONAD = REPO / ".venv" / "bin" / "personad"


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="personad-demo-"))
    started = time.monotonic()
    try:
        done = subprocess.run(
            [str(PERSONAD), "demo", "--dir", str(root / "demo"), "--json"],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
            timeout=1800,
            check=False,
        )
        elapsed = time.monotonic() - started
        if done.returncode != 0:
            return fail([f"personad demo exited with {done.returncode}"], root)
        result = json.loads(done.stdout)
        problems: list[str] = []
        if result.get("active_version") != "v1":
            problems.append(f"active version is {result.get('active_version')!r}, not v1")
        active = root / "demo" / "state" / "models" / "maren" / "active"
        if not active.is_symlink() or active.resolve().name != "v1":
            problems.append(f"{active} does not point at v1")
        held = (result.get("gate") or {}).get("heldout") or {}
        ref, cand = held.get("reference"), held.get("candidate")
        if not (isinstance(ref, float) and isinstance(cand, float) and cand < ref):
            problems.append(f"held-out loss not lower: base {ref} -> fine-tuned {cand}")
        answer = str(((result.get("answers") or {}).get("v1") or {}).get("text") or "").strip()
        if not answer:
            problems.append("ask returned no text from v1")
        elif "caldeirada" not in answer.lower():
            problems.append(f"v1 did not answer with the persona's fact (caldeirada): {answer!r}")
        summaries = sorted((root / "demo" / "state" / "runs").glob("*/*/*/run-summary.json"))
        counts = json.loads(summaries[-1].read_text())["dataset"]["counts"] if summaries else {}
        if not counts.get("question_samples"):
            problems.append(f"the dataset holds no questions in other words: {counts}")
        fidelity = result.get("fidelity") or {}
        tuned, base = fidelity.get("recall_with_retrieval"), (fidelity.get("reference") or {})
        if not isinstance(tuned, float) or tuned < (base.get("recall_with_retrieval") or 0.0):
            problems.append(f"persona fidelity not measured or worse than the base: {fidelity}")
        if problems:
            return fail(problems, root)
        print(
            f"demo check: ok in {elapsed:.0f}s: v1 active, held-out loss "
            f"{ref:.4f} -> {cand:.4f}, fact recall with memories "
            f"{base.get('recall_with_retrieval') or 0.0:.0%} -> {tuned:.0%}, "
            f"{counts['question_samples']} question samples, v1 answered {answer[:80]!r}"
        )
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


def fail(problems: list[str], root: Path) -> int:
    for p in problems:
        print(f"demo check: FAILED: {p}", file=sys.stderr)
    log = root / "demo" / "daemon.log"
    if log.exists():
        print(log.read_text(errors="replace")[-6000:], file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

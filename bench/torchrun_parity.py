"""One process against two torchrun ranks (gloo, this CPU): the same training?

Builds the tests' tiny model (2-layer Llama, built locally), writes one dataset, and trains
it four times with the same configuration and seed (effective batch ``batch_size x
gradient_accumulation_steps`` samples per optimizer step; LoRA dropout 0, since one
process and two ranks draw dropout masks from different streams): LoRA and full, each as
one process and as ``torchrun --nproc-per-node 2``. Prints the final training loss, the
final eval loss, their relative differences, the steps and the wall time of each run.

    .venv/bin/python bench/torchrun_parity.py [--epochs 1] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.child_run import child_env  # noqa: E402
from services.training.command import build_command  # noqa: E402
from services.training.config import resolve_config  # noqa: E402
from tests.services.training.training_helpers import (  # noqa: E402
    build_tiny_model,
    write_dataset,
)

CONFIG: dict[str, Any] = {
    "learning_rate": 1e-2,
    "warmup_ratio": 0.0,
    "batch_size": 4,
    "gradient_accumulation_steps": 2,
    "max_seq_length": 128,
    "save_steps": 4,
    "save_total_limit": 2,
    "lora": {"dropout": 0.0},
}


def run(work: Path, model: Path, tokenizer: Any, kind: str, nproc: int | None, epochs: int):
    run_dir = work / f"{kind}-{nproc or 1}"
    write_dataset(run_dir / "fine_tune_dataset.jsonl", tokenizer, n_train=32, n_eval=8)
    resolve_config(
        base_model=model,
        kind=kind,
        n_samples=40,
        mode=None,
        preset=None,
        job_args={**CONFIG, "num_epochs": epochs},
        etc_dir=REPO / "etc",
    ).write(run_dir)
    argv = build_command(
        run_dir=run_dir,
        kind=kind,
        base=str(model),
        cache_dir=work / "cache",
        progress_fd=1,
        device="cpu",
        nproc_per_node=nproc,
    )
    started = time.perf_counter()
    done = subprocess.run(
        argv,
        cwd=REPO,
        env=child_env(OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{kind} x{nproc or 1} failed:\n{done.stderr[-3000:]}")
    final = [json.loads(line) for line in done.stdout.splitlines() if '"done"' in line][-1]
    return final["metrics"], seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--work", type=Path)
    args = p.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="torchrun-parity-"))
    from transformers import AutoTokenizer

    model = build_tiny_model(work / "model")
    tokenizer = AutoTokenizer.from_pretrained(model)
    print(f"{'run':<12} {'steps':>5} {'train_loss':>20} {'eval_loss':>20} {'wall_s':>7}")
    for kind in ("lora", "full"):
        one, one_s = run(work, model, tokenizer, kind, None, args.epochs)
        two, two_s = run(work, model, tokenizer, kind, 2, args.epochs)
        for name, m, s in ((f"{kind} x1", one, one_s), (f"{kind} x2", two, two_s)):
            print(
                f"{name:<12} {m['steps']:>5} {m['train_loss']:>20.15f}"
                f" {m['eval_loss_final']:>20.15f} {s:>7.1f}"
            )
        for key in ("train_loss", "eval_loss_final"):
            rel = abs(one[key] - two[key]) / abs(one[key])
            print(f"  {kind} {key}: relative difference {rel:.2e} (bound 1e-3)")


if __name__ == "__main__":
    main()

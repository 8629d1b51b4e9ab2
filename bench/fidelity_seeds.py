"""Seed spread of a run's fidelity: one prepared run directory trained again under several seeds.

A run directory the daemon prepared (``state/runs/PROFILE/DATE/JOB``: its dataset,
config.json, fidelity_probes.jsonl and persona.json) is copied once per seed, the copy's
config.json given that seed (and ``--base``), and ``python -m services.training`` run on each copy,
``--parallel`` at a time (on a GPU several small runs share the device). The seed moves
the adapters' initial weights, the order of the samples and the sampled parts of the
dataset. Prints each seed's fact recall with and without retrieval, transfer, stray tags,
regression-loss change and seconds, then their mean and range: the spread that the gate's
fidelity tolerance (``gate.fidelity_tolerance``) has to live with, and the yardstick for
any change to the prompt or training policy.

    .venv/bin/python bench/fidelity_seeds.py RUN_DIR --base BASE [--seeds 42,7,1]
        [--parallel 1] [--device auto] [--threads N] [--cache-dir state/base-models]
        [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.child_run import child_env, done_metrics  # noqa: E402
from services.training.base_model import resolve_base_model  # noqa: E402
from services.training.command import build_command  # noqa: E402

INPUTS = ("fine_tune_dataset.jsonl", "config.json", "fidelity_probes.jsonl", "persona.json")


def prepare(source: Path, work: Path, seed: int, base: str) -> Path:
    """A copy of ``source``'s inputs whose config.json trains ``base`` with ``seed``."""
    run_dir = work / f"seed-{seed}"
    run_dir.mkdir(parents=True)
    for name in INPUTS:
        if (source / name).is_file():
            shutil.copy2(source / name, run_dir / name)
    config = json.loads((run_dir / "config.json").read_text())
    config["config"]["seed"] = seed
    config["base_model"] = base
    (run_dir / "config.json").write_text(json.dumps(config, indent=1))
    return run_dir


def train(run_dir: Path, kind: str, args: argparse.Namespace) -> dict[str, Any]:
    argv = build_command(
        run_dir=run_dir,
        kind=kind,
        base=args.base,
        cache_dir=args.cache_dir,
        device=args.device,
        threads=args.threads,
        progress_fd=1,
    )
    env = child_env(HF_HUB_OFFLINE="1")
    started = time.monotonic()
    done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        return {"error": f"exit {done.returncode}: {done.stderr[-1500:]}", "seconds": seconds}
    return {"metrics": done_metrics(done.stdout), "seconds": seconds}


def figures(result: dict[str, Any]) -> dict[str, Any]:
    """One seed's row: recall and transfer with and without retrieval, stray tags,
    regression change, training device and seconds."""
    metrics = result["metrics"]
    gate = metrics.get("gate") or {}  # a run whose gate is off has no fidelity figures
    row: dict[str, Any] = {
        "device": metrics["device"],
        "train_s": metrics["train_seconds"],
        "total_s": result["seconds"],
        "regression_pct": gate["regression"]["change_pct"] if gate.get("regression") else None,
        "passed": gate.get("passed"),
    }
    fidelity = gate.get("fidelity") or {}
    stray = 0
    for where in ("without_retrieval", "with_retrieval"):
        cand = (fidelity.get("candidate") or {}).get(where) or {}
        ref = (fidelity.get("reference") or {}).get(where) or {}
        row[f"{where}_base"] = (ref.get("recall") or {}).get("mean")
        row[where] = (cand.get("recall") or {}).get("mean")
        row[f"{where}_transfer"] = cand.get("transfer")
        stray += (cand.get("hygiene") or {}).get("with_stray_tags", 0)
    row["stray"] = stray
    return row


GATE = {True: "pass", False: "fail", None: "-"}


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


HEADER = (
    "| seed | recall without retrieval (base) | recall with retrieval (base) | "
    "transfer | stray tags | regression | gate | train s | run s | device |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def line(seed: int, row: dict[str, Any]) -> str:
    if "error" in row:
        return f"| {seed} | failed after {row['seconds']:.0f} s: {row['error'][-300:]!r} |"
    reg = row["regression_pct"]
    return (
        f"| {seed} | {pct(row['without_retrieval'])} ({pct(row['without_retrieval_base'])}) "
        f"| {pct(row['with_retrieval'])} ({pct(row['with_retrieval_base'])}) "
        f"| {pct(row['without_retrieval_transfer'])} | {row['stray']} "
        f"| {'-' if reg is None else f'{reg:+.1f}%'} | {GATE[row['passed']]} "
        f"| {row['train_s']:.0f} | {row['total_s']:.0f} | {row['device']} |"
    )


def summary(rows: dict[int, dict[str, Any]]) -> None:
    done = [r for r in rows.values() if "error" not in r]
    for where in ("without_retrieval", "with_retrieval"):
        values = [r[where] for r in done if r[where] is not None]
        if values:
            print(
                f"{where.replace('_', ' ')}: mean {pct(statistics.fmean(values))}, "
                f"range {pct(min(values))}-{pct(max(values))} over {len(values)} seeds"
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="a prepared run directory (its inputs are read)")
    p.add_argument("--base", required=True, help="the base the run trains (path or spec)")
    p.add_argument("--kind", default="lora", choices=("lora", "full"))
    p.add_argument("--seeds", default="42,7,1")
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int)
    p.add_argument("--cache-dir", type=Path, default=REPO / "state" / "base-models")
    p.add_argument("--work", type=Path, help="keep the runs here (default: a temporary folder)")
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    resolve_base_model(args.base, args.cache_dir)  # converted once, before the runs share it
    print(f"{args.run_dir}: {len(seeds)} seeds, {args.parallel} at a time\n{HEADER}", flush=True)
    rows: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-seeds-") as tmp:
        work = args.work or Path(tmp)
        with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
            futures = {
                pool.submit(
                    train, prepare(args.run_dir, work, seed, args.base), args.kind, args
                ): seed
                for seed in seeds
            }
            for future in as_completed(futures):  # each row as its run ends
                result = future.result()
                seed = futures[future]
                rows[seed] = figures(result) if "metrics" in result else result
                print(line(seed, rows[seed]), flush=True)
    summary(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

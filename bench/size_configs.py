"""The resolved training configuration of header-only models of 0.5B to 70B parameters,
for every mode and kind: what the size category sets and what each mode changes.

    python bench/size_configs.py [--json]

Each model is a safetensors file holding only a header that declares the parameter count
(nothing is loaded); the configuration is resolved with the shipped ``etc/`` exactly as a
job's (``services.training.config.resolve_config``), for 1,000 training samples, and for
a small profile (150 samples) on a 135M model.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from services.shipped import etc_dir  # noqa: E402
from services.training.config import resolve_config  # noqa: E402

SIZES = [
    ("135M", 135_000_000),
    ("0.5B", 500_000_000),
    ("7B", 7_000_000_000),
    ("13B", 13_000_000_000),
    ("34B", 34_000_000_000),
    ("70B", 70_000_000_000),
]
MODES = [None, "dual", "emulation", "agent"]


def header_only(directory: Path, params: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    header = json.dumps(
        {"w": {"dtype": "BF16", "shape": [params], "data_offsets": [0, 2 * params]}}
    ).encode()
    (directory / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    return directory


def row(base: Path, label: str, kind: str, mode: str | None, n: int) -> dict[str, Any]:
    r = resolve_config(
        base_model=base,
        kind=kind,
        n_samples=n,
        mode=mode,
        preset=None,
        job_args={},
        etc_dir=etc_dir(),
    )
    c = r.config
    return {
        "model": label,
        "category": r.model.category,
        "kind": kind,
        "mode": mode or "all",
        "samples": n,
        "learning_rate": c.learning_rate,
        "lr_source": r.sources["learning_rate"],
        "epochs": c.num_epochs,
        "lora_r": c.lora.r,
        "batch": c.batch_size,
        "accumulation": c.gradient_accumulation_steps,
        "warmup": c.warmup_steps if c.warmup_steps is not None else f"{c.warmup_ratio:g} x",
        "save_total_limit": c.save_total_limit,
        "min_samples": c.dataset.min_samples,
        "recommended_samples": c.dataset.recommended_samples,
        "batch_source": r.sources["batch_size"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, params in SIZES:
            base = header_only(Path(tmp) / label, params)
            for kind in ("lora", "full"):
                for mode in MODES:
                    rows.append(row(base, label, kind, mode, 1000))
            if params < 2e9:
                rows.append(row(base, label, "lora", None, 150))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    cols = list(rows[0])
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(f"{r[c]:g}" if isinstance(r[c], float) else str(r[c]) for c in cols))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run directories and building a profile's dataset from the ledger."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.curation import DEFAULT_ETC_DIR, CurationRules, Sample
from services.dataset_build import DatasetSummary, RendererLike, build_dataset, render_line
from services.durable import write_jsonl
from services.ledger import Ledger
from services.schemas import Renderer
from services.training.base_model import parse_spec
from services.training.config import ResolvedConfig, resolve_config

REGRESSION_FILE = "regression.jsonl"


def new_run_dir(state_dir: Path, profile: str, label: str, now: datetime | None = None) -> Path:
    """``<state>/runs/<profile>/<YYYY-MM-DD>/<label>-<HHMMSS>[-N]/``, created empty."""
    now = now or datetime.now(UTC)
    day = state_dir / "runs" / profile / now.strftime("%Y-%m-%d")
    day.mkdir(parents=True, exist_ok=True)
    base = f"{label}-{now.strftime('%H%M%S')}"
    for n in range(1000):
        path = day / (base if n == 0 else f"{base}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"too many runs named {base} in {day}")


def renderer_for(family: str | None, base_model: str) -> Renderer:
    """The chat format to train in: a family's schema, else the base model's own
    template (tokenizer config or GGUF metadata), completed by its family schema."""
    if family:
        return Renderer.from_family(family)
    spec = parse_spec(base_model)
    return Renderer.from_model_dir(Path(spec.location))


def build_profile_dataset(
    ledger: Ledger,
    profile: str,
    out_dir: Path,
    renderer: RendererLike,
    rules: CurationRules,
    *,
    mode: str | None = None,
    max_samples: int | None = None,
    samples: Sequence[Sample] | None = None,
) -> DatasetSummary:
    """Build a dataset from the profile's curated samples in the ledger (or from the
    given subset of them)."""
    if samples is None:
        samples = [Sample.from_record(r) for r in ledger.sample_records(profile)]
    memories = ledger.memories(profile)
    return build_dataset(
        memories,
        samples,
        renderer,
        out_dir,
        mode=mode,
        max_samples=max_samples,
        rules=rules,
        persona=profile,
    )


@dataclass(frozen=True)
class PreparedRun:
    run_dir: Path
    dataset: DatasetSummary
    config: ResolvedConfig
    n_train: int
    n_eval: int


def prepare_training_run(
    ledger: Ledger,
    profile: str,
    run_dir: Path,
    *,
    kind: str,
    base_model: str,
    family: str | None,
    rules: CurationRules,
    mode: str | None = None,
    preset: str | None = None,
    job_args: dict[str, Any] | None = None,
    max_samples: int | None = None,
    samples: Sequence[Sample] | None = None,
    regression: Sequence[Sample] = (),
    etc_dir: Path = DEFAULT_ETC_DIR,
) -> PreparedRun:
    """Everything a training child needs in ``run_dir``: the dataset files and the
    resolved ``config.json``, and ``regression.jsonl`` (held-out older samples the
    evaluation gate checks for forgetting). Raises the services' errors with reasons for
    people."""
    renderer = renderer_for(family, base_model)
    summary = build_profile_dataset(
        ledger,
        profile,
        run_dir,
        renderer,
        rules,
        mode=mode,
        max_samples=max_samples,
        samples=samples,
    )
    counts = summary.counts
    n_train, n_eval = int(counts.get("train", 0)), int(counts.get("eval", 0))
    config = resolve_config(
        base_model=Path(parse_spec(base_model).location),
        kind=kind,
        n_samples=n_train,
        mode=mode,
        preset=preset,
        job_args=job_args or {},
        etc_dir=etc_dir,
    )
    config.write(run_dir)
    if regression:
        lines = [render_line(r, renderer, profile) for r in regression if r.eligible]
        write_jsonl(run_dir / REGRESSION_FILE, lines)
    return PreparedRun(run_dir, summary, config, n_train, n_eval)

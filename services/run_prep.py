"""Run directories and building a profile's dataset from the ledger."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.curation import DEFAULT_ETC_DIR, CurationError, CurationRules, Sample
from services.curation.sample import unwrap
from services.dataset_build import (
    DatasetSummary,
    RendererLike,
    build_dataset,
    render_line,
    select_samples,
)
from services.durable import write_json, write_jsonl
from services.jsonl import read_objects
from services.ledger import Ledger
from services.persona_style import PERSONA_FILE, profile_persona, run_head
from services.schemas import Renderer
from services.token_stats import TokenCounter, token_counter
from services.training.base_model import locate
from services.training.config import ResolvedConfig, resolve_config
from services.training.dataset_reader import DATASET_FILE
from services.training.job_memory import (
    MemoryPlanError,
    apply_plan,
    dataset_tokens,
    estimate_s,
    plan_job,
)
from services.training.model_shape import model_shape
from services.training.ollama_base import base_warning

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


def renderer_for(family: str | None, base_model: str, cache_dir: Path | None = None) -> Renderer:
    """The chat format to train in: a family's schema, else the base model's own
    template (tokenizer config or GGUF metadata), completed by its family schema. A hub
    id is read from its downloaded snapshot (``<cache_dir>/hub``)."""
    if family:
        return Renderer.from_family(family)
    return Renderer.from_model_dir(locate(base_model, cache_dir))


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
    tokens: TokenCounter | None = None,
    system_file: Path | None = None,
) -> DatasetSummary:
    """Build a dataset from the profile's curated samples in the ledger (or from the
    given subset of them); ``tokens`` counts its token statistics. The system message's
    head (the person's style, or their ``system_file``) is written to ``persona.json``
    beside it (:func:`profile_persona`)."""
    everything = [Sample.from_record(r) for r in ledger.sample_records(profile)]
    samples = everything if samples is None else samples
    memories = ledger.memories(profile)
    # The person's style is of all they said, whatever subset this dataset takes.
    persona = profile_persona(profile, everything, memories, system_file)
    summary = build_dataset(
        memories,
        samples,
        renderer,
        out_dir,
        mode=mode,
        max_samples=max_samples,
        rules=rules,
        persona=profile,
        tokens=tokens,
        head=persona["system"],
    )
    write_json(out_dir / PERSONA_FILE, persona)
    return summary


# (profile, question, k) -> the k closest memories as (id, text), best first.
Retrieve = Callable[[str, str, int], list[tuple[str, str]]]
PROBES_FILE = "fidelity_probes.jsonl"  # read by services.training.gate.fidelity
OWN_PROBES = "probes.jsonl"  # <profiles>/<profile>/probes.jsonl: the person's own probes
ASK_MEMORIES = 4  # what ask retrieves by default


def own_probes(path: Path) -> list[dict[str, str]]:
    """The person's own held-out questions (``{"question", "reference"}`` per line, and
    optionally ``"facts"``: the words that carry the facts, when the reference is written
    in the person's voice; other keys ignored); [] without the file. Bad lines raise
    :class:`CurationError`."""
    if not path.is_file():
        return []
    out = []
    for where, obj in read_objects(path, what="probes", error=CurationError):
        q, r = obj.get("question"), obj.get("reference")
        if not (isinstance(q, str) and q.strip() and isinstance(r, str) and r.strip()):
            raise CurationError(f"{where}: needs 'question' and 'reference' (non-empty strings)")
        facts = obj.get("facts", "")
        if not isinstance(facts, str):
            raise CurationError(f"{where}: 'facts' must be a string")
        probe = {"id": str(obj.get("id", where)), "question": q, "reference": r}
        if facts.strip():
            probe["facts"] = facts
        out.append(probe)
    return out


def fidelity_probes(
    profile: str,
    held_out: Sequence[Sample],
    own: Sequence[dict[str, str]],
    retrieve: Retrieve | None,
    limit: int,
    head: str | None = None,
) -> list[dict[str, Any]]:
    """The fidelity check's probes: the person's own first, then held-out emulation
    samples; each with the memories ``ask`` would retrieve for it, the sample's own memory
    left out (an answer must come from what the model learned or other memories), and
    the head of the system message (``"system"``) when the model answers under one."""
    wanted = [
        *({**p, "source": "probes"} for p in own),
        *(
            {
                "id": s.memory_id,
                "question": unwrap(s.prompt),
                "reference": s.response_text,
                "source": "held-out",
            }
            for s in held_out
            if s.mode == "emulation" and s.kind == "chat" and s.split == "eval"
        ),
    ][:limit]
    probes = []
    for p in wanted:
        hits = retrieve(profile, p["question"], ASK_MEMORIES + 1) if retrieve else []
        memories = [text for mid, text in hits if mid != p["id"]][:ASK_MEMORIES]
        probes.append(
            {**p, "profile": profile, "memories": memories, **({"system": head} if head else {})}
        )
    return probes


@dataclass(frozen=True)
class Device:
    """What the memory planner plans for (the ``training`` settings of the same names)."""

    device: str = "auto"
    gpu_memory_gb: float | None = None
    memory_limit_mb: int | None = None
    launcher: str | None = None
    nproc: int | None = None

    @classmethod
    def of(cls, training: Any) -> Device:
        """From the ``training`` settings."""
        return cls(
            training.device,
            training.gpu_memory_gb,
            training.memory_limit_mb,
            training.launcher,
            training.nproc_per_node,
        )


def plan_memory(config: ResolvedConfig, device: Device, tokens: int) -> ResolvedConfig:
    """``config`` with its memory plan and time estimate (``services.training.job_memory``);
    :class:`MemoryPlanError` when nothing fits."""
    plan = plan_job(
        config,
        model_shape(Path(config.base_model)),
        device=device.device,
        gpu_memory_gb=device.gpu_memory_gb,
        memory_limit_mb=device.memory_limit_mb,
        launcher=device.launcher,
        nproc=device.nproc,
    )
    if not plan.fits:
        raise MemoryPlanError(plan)
    return apply_plan(
        config, plan, tokens=tokens, estimate_s=round(estimate_s(config, plan, tokens), 1)
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
    retrieve: Retrieve | None = None,
    probes_file: Path | None = None,
    system_file: Path | None = None,
    device: Device | None = None,
    cache_dir: Path | None = None,
) -> PreparedRun:
    """Everything a training child needs in ``run_dir``: the dataset files and the
    resolved ``config.json``, and ``regression.jsonl`` (held-out older samples the
    evaluation gate checks for forgetting), and ``fidelity_probes.jsonl`` (the person's own
    probes from ``probes_file`` and held-out samples, with the memories ``retrieve`` finds
    for each: the gate's persona-fidelity check). The memory plan for ``device`` goes
    into ``config.json`` (:func:`plan_memory`): a run that cannot fit fails here, before
    anything is loaded. Raises the services' errors with reasons for people."""
    renderer = renderer_for(family, base_model, cache_dir)
    location = locate(base_model, cache_dir)
    summary = build_profile_dataset(
        ledger,
        profile,
        run_dir,
        renderer,
        rules,
        mode=mode,
        max_samples=max_samples,
        samples=samples,
        tokens=token_counter(location, cache_dir),
        system_file=system_file,
    )
    head = run_head(run_dir)
    counts = summary.counts
    n_train, n_eval = int(counts.get("train", 0)), int(counts.get("eval", 0))
    config = resolve_config(
        base_model=location,
        kind=kind,
        n_samples=n_train,
        mode=mode,
        preset=preset,
        job_args=job_args or {},
        etc_dir=etc_dir,
    )
    config = plan_memory(config, device or Device(), dataset_tokens(run_dir / DATASET_FILE))
    warning = base_warning(base_model)
    if warning:  # in the plan config.json keeps (the training child logs it too)
        config = replace(config, plan={**(config.plan or {}), "warnings": [warning]})
    config.write(run_dir)
    if regression:
        lines = [render_line(r, renderer, profile, (), head) for r in regression if r.eligible]
        write_jsonl(run_dir / REGRESSION_FILE, lines)
    if samples is None:
        samples = [Sample.from_record(r) for r in ledger.sample_records(profile)]
    chosen = select_samples(samples, mode=mode, max_samples=max_samples)
    probes = fidelity_probes(
        profile,
        chosen,
        own_probes(probes_file) if probes_file is not None else [],
        retrieve,
        config.config.gate.fidelity_probes,
        head,
    )
    if probes:
        write_jsonl(run_dir / PROBES_FILE, probes)
    return PreparedRun(run_dir, summary, config, n_train, n_eval)

"""The evaluation gate: a trained candidate against the reference model, before publishing.

Run by the training child right after training (``services/training/__main__.py``), under
the resolved config's ``gate`` settings (``services.training.config.GateSettings``):

- **held-out loss**: the mean weighted completion-token loss (each token's loss weighted
  by its sample's weight) of the candidate and of the reference on the run's eval split.
  Passes when ``candidate <= reference x (1 - gate.min_improvement)``. Without eval
  samples it is not compared (noted in ``warnings``).
- **regression loss**: the same loss on the regression set, ``<run_dir>/regression.jsonl``
  (older held-out samples, written by the daemon) when present, plus the general-text set
  ``etc/eval/general.jsonl``. Passes when
  ``candidate <= reference x (1 + gate.max_regression)``.
- **tag probe**: for each mode in the eval split (the train split when there is no eval
  split), up to ``gate.probe_per_mode`` samples' prompts are continued greedily for
  ``gate.probe_tokens`` tokens by the candidate; an output holding another mode's tags
  (``etc/curation.json``) fails the gate.

The reference is the active model (``--reference-model`` / ``--reference-adapter`` of the
training child), else the base model the run trained from. Each model tokenizes with its
own tokenizer. A line of a regression set is a ``fine_tune_dataset.jsonl`` line; one with
``messages`` but no ``prompt``/``completion`` is rendered in the run's chat format (the
template of ``schema_applied.json``, else the candidate tokenizer's chat template).

The verdict (:func:`evaluate_candidate`'s return value, the ``done`` event's
``metrics["gate"]``)::

    {"passed": bool, "reason": str, "reasons": [str], "reference": {"source", "model",
     "adapter"}, "heldout": CHECK | null, "regression": CHECK | null,
     "probe": {"passed", "checked", "foreign": [{"id", "mode", "tags"}]} | null,
     "settings": {...}, "warnings": [str], "seconds": float}

    CHECK = {"candidate", "reference", "limit", "passed", "samples", "tokens"}

``eval.json`` in the run directory holds the verdict plus every number (per-set losses,
weighted and unweighted, token counts, truncation), the candidate and the probe outputs;
``run-summary.json`` gains the verdict under ``"gate"``.
"""

from __future__ import annotations

import gc
import json
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from services.shipped import etc_dir
from services.training.config import GateSettings, ResolvedConfig
from services.training.dataset_reader import DATASET_FILE, Record, Selection
from services.training.errors import BadInputError
from services.training.progress import finite

log = structlog.get_logger(__name__)

GENERAL_SET = etc_dir() / "eval" / "general.jsonl"
REGRESSION_FILE = "regression.jsonl"
EVAL_FILE = "eval.json"
RUN_SUMMARY = "run-summary.json"
SCHEMA_APPLIED = "schema_applied.json"
TOKEN_BUDGET = 4096  # tokens (rows x width) per loss batch

Render = Callable[[Sequence[Mapping[str, Any]]], tuple[str, str]]


@dataclass(frozen=True)
class EvalSample:
    """A prompt and the completion whose tokens are scored."""

    id: str
    mode: str | None
    prompt: str
    completion: str
    weight: float = 1.0


@dataclass(frozen=True)
class LossStat:
    """Summed completion-token losses of one model on one set."""

    weighted_sum: float
    weight_total: float
    loss_sum: float
    tokens: int
    samples: int
    truncated: int

    @property
    def loss(self) -> float:
        """Mean weighted loss per completion token."""
        return self.weighted_sum / self.weight_total if self.weight_total else math.nan

    @property
    def unweighted(self) -> float:
        return self.loss_sum / self.tokens if self.tokens else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "loss": self.loss,
            "unweighted_loss": self.unweighted,
            "samples": self.samples,
            "tokens": self.tokens,
            "truncated": self.truncated,
        }

    @staticmethod
    def combine(stats: Sequence[LossStat]) -> LossStat:
        return LossStat(
            sum(s.weighted_sum for s in stats),
            sum(s.weight_total for s in stats),
            sum(s.loss_sum for s in stats),
            sum(s.tokens for s in stats),
            sum(s.samples for s in stats),
            sum(s.truncated for s in stats),
        )


# -- sets --------------------------------------------------------------------------------


def read_eval_set(path: Path, render: Render | None) -> list[EvalSample]:
    """The samples of a JSONL set; ``messages``-only lines are rendered with ``render``.
    :class:`BadInputError` names the line at fault."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"evaluation set unreadable: {path}: {exc}") from exc
    out: list[EvalSample] = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            out.append(_eval_sample(line, f"{path}:{n}", render))
    return out


def _eval_sample(line: str, where: str, render: Render | None) -> EvalSample:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{where}: not JSON: {exc.msg}") from exc
    if not isinstance(obj, dict):
        raise BadInputError(f"{where}: not a JSON object")
    prompt, completion = obj.get("prompt"), obj.get("completion")
    if prompt is None and completion is None and isinstance(obj.get("text"), str):
        prompt, completion = "", obj["text"]
    if prompt is None and completion is None:
        messages = obj.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadInputError(f"{where}: needs 'prompt' and 'completion', 'text' or 'messages'")
        if render is None:
            raise BadInputError(f"{where}: 'messages' only, and no chat format to render them")
        try:
            prompt, completion = render(messages)
        except Exception as exc:
            raise BadInputError(f"{where}: cannot render its messages: {exc}") from exc
    if not isinstance(prompt, str) or not isinstance(completion, str) or not completion.strip():
        raise BadInputError(f"{where}: 'prompt' and a non-empty 'completion' must be strings")
    weight = obj.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
        raise BadInputError(f"{where}: 'weight' must be a positive number")
    mode = obj.get("mode")
    return EvalSample(
        str(obj.get("id", where)),
        mode if isinstance(mode, str) else None,
        prompt,
        completion,
        float(weight),
    )


def chat_renderer(run_dir: Path, tokenizer: Any) -> Render | None:
    """(prompt, completion) of a conversation in the run's chat format: the template the
    dataset was rendered with (``schema_applied.json``), else the tokenizer's own."""
    applied = _read_json(run_dir / SCHEMA_APPLIED)
    if isinstance(applied.get("chat_template"), str) and isinstance(applied.get("family"), str):
        from services.schemas import Renderer, load_schema

        tokens = {k: applied[k] for k in ("bos_token", "eos_token") if applied.get(k)}
        return Renderer(applied["chat_template"], tokens, load_schema(applied["family"])).split
    if not getattr(tokenizer, "chat_template", None):
        return None

    def render(messages: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
        history = list(messages)
        prompt = tokenizer.apply_chat_template(
            history[:-1], tokenize=False, add_generation_prompt=True
        )
        full = tokenizer.apply_chat_template(history, tokenize=False)
        if not full.startswith(prompt):
            raise ValueError("the template does not render the prompt as a prefix")
        return prompt, full[len(prompt) :]

    return render


def _samples(records: Sequence[Record], modes: Mapping[str, str]) -> list[EvalSample]:
    return [EvalSample(r.id, modes.get(r.id), r.prompt, r.completion, r.weight) for r in records]


def dataset_modes(path: Path) -> dict[str, str]:
    """Record id -> mode of a ``fine_tune_dataset.jsonl`` (ids as ``read_dataset`` makes them)."""
    modes: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return modes
    for n, line in enumerate(lines, 1):
        try:
            obj = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("mode"), str):
            modes[str(obj.get("id", f"{path}:{n}"))] = obj["mode"]
    return modes


# -- losses ------------------------------------------------------------------------------


def weighted_loss(
    model: Any, tokenizer: Any, samples: Sequence[EvalSample], max_len: int
) -> LossStat:
    """Completion-token cross-entropy of ``model`` on ``samples``, in length-sorted batches of
    at most :data:`TOKEN_BUDGET` tokens, logits only at completion tokens."""
    import torch

    from services.training.batching import collate, encode
    from services.training.recipe import TokenLoss

    records = [Record(s.id, s.prompt, s.completion, s.weight, "eval") for s in samples]
    examples, truncated = encode(records, tokenizer, max_len)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    token_loss = TokenLoss(model, base)
    device = next(model.parameters()).device
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]))
    groups: list[list[int]] = []
    for i in order:
        if groups and (len(groups[-1]) + 1) * len(examples[i]) <= TOKEN_BUDGET:
            groups[-1].append(i)
        else:
            groups.append([i])
    weighted = weight_total = loss_sum = 0.0
    tokens = 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for group in groups:
            batch = collate([examples[i] for i in group], pad_id).to(device)
            losses, weights = token_loss(batch)
            weighted += float((losses * weights).sum())
            weight_total += float(weights.sum())
            loss_sum += float(losses.sum())
            tokens += losses.numel()
    model.train(was_training)
    return LossStat(weighted, weight_total, loss_sum, tokens, len(samples), truncated)


# -- tag probe ---------------------------------------------------------------------------


def tag_table() -> dict[str, tuple[str, str]]:
    """Mode -> (prompt tag, response tag), from ``etc/curation.json`` (DESIGN.md's when that
    file cannot be read)."""
    from services.curation import MODES, CurationError, load_rules
    from services.curation.modes import DEFAULT_TAGS

    try:
        rules = load_rules()
    except CurationError:
        return dict(DEFAULT_TAGS)
    return {mode: rules.tags(mode) for mode in MODES}


def foreign_tags(text: str, mode: str, table: Mapping[str, tuple[str, str]]) -> list[str]:
    """The tags of modes other than ``mode`` in ``text`` (opening or closing, any case,
    inner spaces allowed), each once as ``<tag>``, in table order; [] when clean."""
    foreign = [tag for other, tags in table.items() if other != mode for tag in tags]
    if not foreign:
        return []
    alternatives = "|".join(re.escape(t) for t in foreign)
    found = {
        m.group(1).lower()
        for m in re.finditer(rf"<\s*/?\s*({alternatives})\s*>", text, re.IGNORECASE)
    }
    return [f"<{t}>" for t in foreign if t.lower() in found]


def probe_samples(samples: Sequence[EvalSample], per_mode: int) -> list[EvalSample]:
    """Up to ``per_mode`` samples with a prompt for each mode, in order of appearance."""
    taken: dict[str, int] = {}
    out: list[EvalSample] = []
    for s in samples:
        if s.mode is None or not s.prompt or taken.get(s.mode, 0) >= per_mode:
            continue
        taken[s.mode] = taken.get(s.mode, 0) + 1
        out.append(s)
    return out


def run_probe(
    model: Any,
    tokenizer: Any,
    samples: Sequence[EvalSample],
    max_new_tokens: int,
    table: Mapping[str, tuple[str, str]],
) -> dict[str, Any]:
    """Greedy continuations of the samples' prompts, and the other modes' tags in each."""
    from services.generation import generate

    outputs: list[dict[str, Any]] = []
    for s in samples:
        if s.mode is None or s.mode not in table:
            continue
        text = generate(model, tokenizer, s.prompt, max_new_tokens=max_new_tokens)
        tags = foreign_tags(text, s.mode, table)
        outputs.append({"id": s.id, "mode": s.mode, "output": text, "foreign": tags})
    foreign = [{"id": o["id"], "mode": o["mode"], "tags": o["foreign"]} for o in outputs]
    foreign = [f for f in foreign if f["tags"]]
    return {
        "passed": not foreign,
        "checked": len(outputs),
        "foreign": foreign,
        "outputs": outputs,
    }


# -- verdict -----------------------------------------------------------------------------


def compare(
    name: str, candidate: LossStat, reference: LossStat, limit_factor: float, rule: str
) -> dict[str, Any]:
    """One loss check: passes when the candidate's loss is at most the reference's x factor."""
    c, r = candidate.loss, reference.loss
    limit = r * limit_factor
    passed = math.isfinite(c) and math.isfinite(limit) and c <= limit
    change = (c - r) / r * 100 if r and math.isfinite(c) and math.isfinite(r) else math.nan
    relation = "<=" if passed else ">"
    return {
        "candidate": c,
        "reference": r,
        "limit": limit,
        "passed": passed,
        "change_pct": change,
        "samples": candidate.samples,
        "tokens": candidate.tokens,
        "summary": (
            f"{name} loss {c:.4f} {relation} {limit:.4f} "
            f"(reference {r:.4f} x {rule}; {change:+.1f}%)"
        ),
    }


def decide(
    heldout: dict[str, Any] | None,
    regression: dict[str, Any] | None,
    probe: dict[str, Any] | None,
) -> tuple[bool, str, list[str]]:
    """(passed, one-line reason, every failing reason)."""
    failures: list[str] = []
    notes: list[str] = []
    for check in (heldout, regression):
        if check is not None:
            (notes if check["passed"] else failures).append(check["summary"])
    if probe is not None:
        if probe["passed"]:
            notes.append(f"tag probe clean ({probe['checked']} outputs)")
        for f in probe["foreign"]:
            failures.append(f"tag probe: {f['mode']} sample {f['id']} wrote {', '.join(f['tags'])}")
    if failures:
        return False, "; ".join(failures), failures
    return True, "; ".join(notes) or "nothing to compare", []


# -- files -------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(finite(data), f, indent=2, ensure_ascii=False, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_results(run_dir: Path, gate: dict[str, Any], details: dict[str, Any]) -> None:
    """``eval.json`` (the verdict and ``details``) and the verdict under ``run-summary.json``'s
    ``"gate"`` (its other keys kept)."""
    _write_json(run_dir / EVAL_FILE, {**gate, **details})
    summary = _read_json(run_dir / RUN_SUMMARY)
    summary["gate"] = gate
    _write_json(run_dir / RUN_SUMMARY, summary)


# -- the gate ----------------------------------------------------------------------------


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def evaluate_candidate(
    *,
    run_dir: Path,
    kind: str,
    base_dir: Path,
    artifact: Path,
    resolved: ResolvedConfig,
    selection: Selection,
    cache_dir: Path,
    reference_model: str | None = None,
    reference_adapter: Path | None = None,
    device: str = "cpu",
    general_set: Path | None = GENERAL_SET,
) -> dict[str, Any]:
    """Judge the candidate (``artifact``: a LoRA adapter on ``base_dir``, or a full model),
    write ``eval.json`` and the ``run-summary.json`` ``"gate"`` key; return the verdict."""
    from transformers import AutoTokenizer

    from services.generation import apply_adapter, load_for_inference

    started = time.perf_counter()
    cfg = resolved.config
    settings: GateSettings = cfg.gate
    reference = {
        "source": "base" if reference_model is None else "active",
        "model": str(base_dir) if reference_model is None else reference_model,
        "adapter": str(reference_adapter) if reference_adapter is not None else None,
    }
    if not settings.enabled:
        disabled: dict[str, Any] = {
            "passed": True,
            "reason": "gate disabled (gate.enabled is false)",
            "reasons": [],
            "enabled": False,
            "reference": reference,
            "settings": settings.model_dump(),
        }
        write_results(run_dir, disabled, {"created": _now()})
        return disabled

    warnings: list[str] = []
    candidate_tokenizer = AutoTokenizer.from_pretrained(artifact)
    render = chat_renderer(run_dir, candidate_tokenizer)
    modes = dataset_modes(run_dir / DATASET_FILE)
    heldout_set = _samples(selection.eval, modes)
    if not heldout_set:
        warnings.append("no eval samples: the held-out loss was not compared")
    regression_sets: dict[str, list[EvalSample]] = {}
    for name, path in (("run", run_dir / REGRESSION_FILE), ("general", general_set)):
        if path is None or not path.is_file():
            continue
        if name == "general" and render is None:
            warnings.append(f"{path} not used: no chat template to render it in")
            continue
        regression_sets[name] = read_eval_set(path, render)
    if not any(regression_sets.values()):
        warnings.append("no regression samples: the regression loss was not compared")
    probe_set = probe_samples(
        heldout_set or _samples(selection.train, modes), settings.probe_per_mode
    )

    def losses(model: Any, tokenizer: Any) -> dict[str, LossStat]:
        sets = {"heldout": heldout_set, **regression_sets}
        return {
            name: weighted_loss(model, tokenizer, samples, cfg.max_seq_length)
            for name, samples in sets.items()
            if samples
        }

    _free_memory()
    ref_spec = str(base_dir) if reference_model is None else reference_model
    model, tokenizer = load_for_inference(
        ref_spec, adapter=reference_adapter, cache_dir=cache_dir, device=device
    )
    ref_losses = losses(model, tokenizer)
    log.info("gate reference scored", **{k: round(v.loss, 4) for k, v in ref_losses.items()})
    if kind == "lora" and reference_model is None:
        model = apply_adapter(model, artifact)  # the base is the reference: reuse it
        model.to(next(model.get_base_model().parameters()).device)
    else:
        del model
        _free_memory()
        model, _ = load_for_inference(
            base_dir if kind == "lora" else artifact,
            adapter=artifact if kind == "lora" else None,
            cache_dir=cache_dir,
            device=device,
        )
    cand_losses = losses(model, candidate_tokenizer)
    log.info("gate candidate scored", **{k: round(v.loss, 4) for k, v in cand_losses.items()})

    heldout = regression = None
    if heldout_set:
        heldout = compare(
            "held-out",
            cand_losses["heldout"],
            ref_losses["heldout"],
            1 - settings.min_improvement,
            f"(1 - {settings.min_improvement:g})",
        )
    names = [n for n, s in regression_sets.items() if s]
    if names:
        regression = compare(
            "regression",
            LossStat.combine([cand_losses[n] for n in names]),
            LossStat.combine([ref_losses[n] for n in names]),
            1 + settings.max_regression,
            f"(1 + {settings.max_regression:g})",
        )
    probe = None
    if settings.probe_tokens > 0 and settings.probe_per_mode > 0 and probe_set:
        probe = run_probe(model, candidate_tokenizer, probe_set, settings.probe_tokens, tag_table())
    del model
    _free_memory()

    passed, reason, reasons = decide(heldout, regression, probe)
    gate: dict[str, Any] = {
        "passed": passed,
        "reason": reason,
        "reasons": reasons,
        "reference": reference,
        "heldout": heldout,
        "regression": regression,
        "probe": None if probe is None else {k: probe[k] for k in ("passed", "checked", "foreign")},
        "settings": settings.model_dump(),
        "warnings": warnings,
        "seconds": round(time.perf_counter() - started, 3),
    }
    details = {
        "created": _now(),
        "candidate": {"kind": kind, "artifact": str(artifact), "base": str(base_dir)},
        "losses": {
            "candidate": {k: v.to_dict() for k, v in cand_losses.items()},
            "reference": {k: v.to_dict() for k, v in ref_losses.items()},
        },
        "regression_sets": {
            name: str(path)
            for name, path in (("run", run_dir / REGRESSION_FILE), ("general", general_set))
            if name in regression_sets
        },
        "probe_outputs": [] if probe is None else probe["outputs"],
    }
    write_results(run_dir, gate, details)
    log.info("gate", passed=passed, reason=reason)
    return gate


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


__all__ = [
    "EVAL_FILE",
    "GENERAL_SET",
    "REGRESSION_FILE",
    "EvalSample",
    "LossStat",
    "chat_renderer",
    "compare",
    "decide",
    "evaluate_candidate",
    "foreign_tags",
    "read_eval_set",
    "run_probe",
    "weighted_loss",
    "write_results",
]

"""Building a run directory's dataset from curated samples.

:func:`build_dataset` selects samples, renders them in the model family's chat format
and writes into ``out_dir``:

- ``curated_memories.json``: the memories whose samples were taken, as records;
- ``formatted_samples.json``: those samples (``Sample.to_record()`` plus ``messages``);
- ``schema_applied.json``: family, template source, special and stop tokens, and an
  example rendering (one chat sample, one continuation sample when there is one);
- ``fine_tune_dataset.jsonl``: one object per line, ``{"id", "mode", "kind",
  "weight", "quality", "split", "messages", "prompt", "completion", "text"}``, where
  ``prompt``/``completion`` are ``renderer.split(messages)`` for a chat sample and
  ``""``/``renderer.continuation(chunk)`` for a continuation (prose) sample, whose chunk
  is the untagged response; ``text`` is ``prompt + completion``; a profile's samples are
  followed by its questions in other words (:func:`question_lines`, ids ``<id>#q<n>-plain``
  and ``-memories``);
- ``run-summary.json``: ``{"status", "created", "dataset": {counts, excluded_by_reason,
  excluded_examples, mode_filter, max_samples, contamination, schema, files},
  "metrics": ...}``. The training run adds its own keys (config, timings, gate).

A profile's dataset (``persona`` given) is rendered under the prompt policy
(:mod:`services.persona_prompt`): every chat sample's ``messages`` start with the
persona's system message, the one ``ask`` and Ollama serve with, and a deterministic
share of the training samples carry memories of the profile in it, as ``ask`` shows
retrieved ones.

Selection: samples of the mode filter (all when None), not excluded, highest quality
first, ties by memory id, at most ``max_samples``. Output order is that order.

Failure: everything is checked and rendered in memory before anything is written.
Contamination (a selected sample holding another mode's tags) writes only
``run-summary.json`` with ``"status": "failed"`` and the offending ids and tags,
removes dataset files an earlier build left in ``out_dir``, and raises
:class:`ContaminationError`. On success each file is written to a temporary name,
fsynced and renamed into place, ``run-summary.json`` last: a summary with
``"status": "ok"`` means the four other files are complete.

Determinism: the same input gives byte-identical files, ``run-summary.json``'s
``created`` apart (pass ``created`` to fix it too).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from services.curation.config import MODES, CurationError, CurationRules
from services.curation.mode_config import ModeConfig, load_mode_configs
from services.curation.modes import ContaminationError, contamination
from services.curation.sample import Sample, wrap
from services.durable import fsync_dir, json_text, jsonl_text, write_json, write_text
from services.memories.model import Memory
from services.metrics import dataset_metrics
from services.persona_prompt import (
    Neighbours,
    emulation_tags,
    question_context,
    training_context,
    with_system,
)
from services.persona_questions import asked
from services.schemas import ChatSchema, SchemaError
from services.token_stats import ESTIMATE, TokenCounter, estimate_tokens, token_stats

CURATED_MEMORIES = "curated_memories.json"
FORMATTED_SAMPLES = "formatted_samples.json"
SCHEMA_APPLIED = "schema_applied.json"
FINE_TUNE_DATASET = "fine_tune_dataset.jsonl"
RUN_SUMMARY = "run-summary.json"
DATASET_FILES = (CURATED_MEMORIES, FORMATTED_SAMPLES, SCHEMA_APPLIED, FINE_TUNE_DATASET)


class DatasetError(CurationError):
    """The dataset cannot be built (bad arguments, a sample without its memory, a
    sample the chat schema cannot render)."""


class RendererLike(Protocol):
    """What the build needs of :class:`services.schemas.Renderer`."""

    schema: ChatSchema
    template_source: str | None

    @property
    def template(self) -> str: ...

    def split(self, messages: Sequence[Mapping[str, Any]]) -> tuple[str, str]: ...

    def continuation(self, text: str) -> str: ...


@dataclass(frozen=True)
class DatasetSummary:
    """What a build wrote; ``to_dict()`` is ``run-summary.json``."""

    out_dir: Path
    status: str
    created: str
    mode: str | None
    max_samples: int | None
    counts: dict[str, int]
    excluded_by_reason: dict[str, int]
    excluded_examples: dict[str, dict[str, str]]
    contamination: dict[str, Any]
    schema: dict[str, Any]
    metrics: dict[str, Any]
    files: tuple[str, ...] = ()
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status,
            "created": self.created,
            "dataset": {
                "mode_filter": self.mode,
                "max_samples": self.max_samples,
                "counts": self.counts,
                "excluded_by_reason": self.excluded_by_reason,
                "excluded_examples": self.excluded_examples,
                "contamination": self.contamination,
                "schema": self.schema,
                "files": list(self.files),
            },
            "metrics": self.metrics,
        }
        if self.error:
            out["error"] = self.error
        return out


def _schema_info(renderer: RendererLike) -> dict[str, Any]:
    schema = renderer.schema
    return {
        "family": schema.family,
        "template_source": renderer.template_source,
        "bos_token": schema.bos_token,
        "eos_token": schema.eos_token,
        "stop": list(schema.stop),
        "ollama_template_name": schema.ollama_template_name,
    }


def render_line(
    sample: Sample,
    renderer: RendererLike,
    persona: str | None = None,
    memories: Sequence[str] = (),
    head: str | None = None,
) -> dict[str, Any]:
    """One ``fine_tune_dataset.jsonl`` line. With ``persona`` a chat sample starts with the
    persona's system message (``services.persona_prompt``; opening with ``head`` when
    given), holding ``memories``."""
    messages = sample.messages()
    if persona is not None and sample.kind != "continuation":
        messages = with_system(persona, messages, memories, head)
    try:
        if sample.kind == "continuation":
            prompt, completion = "", renderer.continuation(sample.response_text)
        else:
            prompt, completion = renderer.split(messages)
    except SchemaError as exc:
        raise DatasetError(
            f"sample {sample.memory_id} ({sample.mode}, {sample.kind}) cannot be rendered "
            f"in the chat schema: {exc}"
        ) from exc
    return {
        "id": sample.memory_id,
        "mode": sample.mode,
        "kind": sample.kind,
        "weight": sample.weight,
        "quality": sample.quality,
        "split": sample.split,
        "messages": messages,
        "prompt": prompt,
        "completion": completion,
        "text": prompt + completion,
    }


def render_lines(
    selected: Sequence[Sample],
    memories: Sequence[Memory],
    renderer: RendererLike,
    persona: str | None,
    head: str | None = None,
    near: Neighbours | None = None,
) -> tuple[dict[str, Any], ...]:
    """The dataset's lines; with ``persona``, a share of the training samples carries
    memories of the profile the way ``ask`` shows retrieved ones (eval samples never do:
    the gate scores what the model learned). ``near``: the memories' :class:`Neighbours`,
    when the caller built them (else here, with ``persona``)."""
    texts = [(m.id, m.text) for m in memories]
    own = dict(texts)
    if persona is not None and near is None:
        near = Neighbours(texts)
    lines = []
    for s in selected:
        context: list[str] = []
        if persona is not None and s.split == "train" and s.kind != "continuation":
            context = training_context(s.memory_id, own.get(s.memory_id), texts, near=near)
        lines.append(render_line(s, renderer, persona, context, head))
    return tuple(lines)


def question_lines(
    selected: Sequence[Sample],
    memories: Sequence[Memory],
    renderer: RendererLike,
    persona: str,
    head: str | None = None,
    near: Neighbours | None = None,
) -> tuple[dict[str, Any], ...]:
    """The lines that train a profile's emulation answers under questions in other words
    (:mod:`services.persona_questions`): each question twice, without memories and among
    memories that share its words (:func:`services.persona_prompt.question_context`), as
    ``ask`` shows what it retrieved for a question. Their ids are the sample's, then
    ``#q<n>`` and ``-plain`` or ``-memories``. ``near`` as for :func:`render_lines`."""
    answering = [
        s
        for s in selected
        if s.mode == "emulation" and s.split == "train" and s.kind == "chat" and not s.context
    ]
    questions = asked([(s.memory_id, s.response_text) for s in answering])
    if not questions:
        return ()
    by_id = {s.memory_id: s for s in answering}
    texts = [(m.id, m.text) for m in memories]
    own = dict(texts)
    near = near if near is not None else Neighbours(texts)
    user_tag = emulation_tags()[0]
    lines: list[dict[str, Any]] = []
    for n, (sample_id, question) in enumerate(questions):
        sample = replace(by_id[sample_id], prompt=wrap(user_tag, question))
        shown = question_context(sample_id, own.get(sample_id), question, near)
        for kind, context in (("plain", []), ("memories", shown)):
            line = render_line(sample, renderer, persona, context, head)
            line["id"] = f"{sample_id}#q{n}-{kind}"
            lines.append(line)
    return tuple(lines)


def select_samples(
    samples: Sequence[Sample], *, mode: str | None, max_samples: int | None
) -> list[Sample]:
    """Eligible samples of ``mode`` (all when None), best quality first, ties by id."""
    ranked = sorted(
        (s for s in samples if s.excluded is None and (mode is None or s.mode == mode)),
        key=lambda s: (-s.quality, s.memory_id),
    )
    return ranked if max_samples is None else ranked[:max_samples]


def build_dataset(
    memories: Sequence[Memory],
    samples: Sequence[Sample],
    renderer: RendererLike,
    out_dir: Path,
    *,
    mode: str | None,
    max_samples: int | None,
    rules: CurationRules,
    mode_configs: Mapping[str, ModeConfig] | None = None,
    created: datetime | None = None,
    persona: str | None = None,
    tokens: TokenCounter | None = None,
    head: str | None = None,
) -> DatasetSummary:
    """Select, check, render and write the dataset into ``out_dir`` (see the module doc).

    ``mode_configs`` (mode -> config) gives the metrics' sample-count warnings; the
    shipped ``etc/modes`` configs when None. ``tokens`` counts tokens for the metrics'
    ``tokens`` statistics (the base model's tokenizer; the words x 4/3 estimate when
    None). ``persona`` (the profile's name) renders chat
    samples under the prompt policy (:func:`render_lines`), their system message opening
    with ``head`` when given (:mod:`services.persona_style`). Raises
    :class:`ContaminationError` (after writing a failed ``run-summary.json``) or
    :class:`DatasetError`.
    """
    if mode is not None and mode not in MODES:
        raise DatasetError(f"unknown mode {mode!r}; the modes are {', '.join(MODES)}")
    if max_samples is not None and max_samples < 1:
        raise DatasetError(f"max_samples must be at least 1, got {max_samples}")
    seen: set[str] = set()
    for s in samples:
        if s.memory_id in seen:
            raise DatasetError(f"sample {s.memory_id} is given twice")
        seen.add(s.memory_id)
    if mode_configs is None:
        mode_configs = load_mode_configs()
    out_dir = Path(out_dir)
    stamp = (created or datetime.now(UTC)).isoformat(timespec="seconds")
    in_mode = [s for s in samples if mode is None or s.mode == mode]
    selected = select_samples(in_mode, mode=None, max_samples=max_samples)
    schema = _schema_info(renderer)
    common: dict[str, Any] = {
        "out_dir": out_dir,
        "created": stamp,
        "mode": mode,
        "max_samples": max_samples,
        "counts": _counts(samples, in_mode, selected),
        **_exclusions(in_mode),
        "schema": schema,
        "metrics": dataset_metrics(selected, mode_configs, rules.metrics),
    }
    offenders = contamination(selected, rules)
    if offenders:
        _fail_contaminated(out_dir, common, offenders)
    by_id = {m.id: m for m in memories}
    missing = [s.memory_id for s in selected if s.memory_id not in by_id]
    if missing:
        raise DatasetError(
            f"{len(missing)} selected sample(s) have no memory among those given: "
            f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}"
        )
    # The profile's memories by the words they share, once for both kinds of line.
    near = Neighbours([(m.id, m.text) for m in memories]) if persona is not None else None
    records = render_lines(selected, memories, renderer, persona, head, near)
    asking = (
        () if persona is None else question_lines(selected, memories, renderer, persona, head, near)
    )
    common["counts"] = {**common["counts"], "question_samples": len(asking)}
    stats, token_warnings = token_stats(
        (*records, *asking),
        tokens or TokenCounter(estimate_tokens, ESTIMATE),
        rules.metrics.prose_tokens,
    )
    common["metrics"] = {
        **common["metrics"],
        "tokens": stats,
        "warnings": [*common["metrics"]["warnings"], *token_warnings],
    }
    contents = {
        CURATED_MEMORIES: json_text(
            [by_id[s.memory_id].to_record() for s in selected], default=str
        ),
        FORMATTED_SAMPLES: json_text(
            [
                {**s.to_record(), "messages": r["messages"]}
                for s, r in zip(selected, records, strict=True)
            ],
            default=str,
        ),
        SCHEMA_APPLIED: json_text(_schema_applied(schema, renderer, records), default=str),
        FINE_TUNE_DATASET: jsonl_text([*records, *asking]),
    }
    result = DatasetSummary(
        **common,
        status="ok",
        contamination={"ok": True, "offenders": {}},
        files=(*DATASET_FILES, RUN_SUMMARY),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in contents.items():
        write_text(out_dir / name, text)
    write_json(out_dir / RUN_SUMMARY, result.to_dict(), default=str)
    fsync_dir(out_dir)
    return result


def _counts(
    samples: Sequence[Sample], in_mode: Sequence[Sample], selected: Sequence[Sample]
) -> dict[str, int]:
    excluded = sum(1 for s in in_mode if s.excluded is not None)
    eligible = len(in_mode) - excluded
    return {
        "samples": len(samples),
        "other_modes": len(samples) - len(in_mode),
        "excluded": excluded,
        "eligible": eligible,
        "over_max": eligible - len(selected),
        "selected": len(selected),
        "train": sum(1 for s in selected if s.split == "train"),
        "eval": sum(1 for s in selected if s.split == "eval"),
    }


def _exclusions(in_mode: Sequence[Sample]) -> dict[str, Any]:
    """``excluded_by_reason`` (counts) and ``excluded_examples`` (the first of each)."""
    excluded = sorted((s for s in in_mode if s.excluded is not None), key=lambda s: s.memory_id)
    by_reason = Counter(s.excluded_code or "other" for s in excluded)
    examples: dict[str, dict[str, str]] = {}
    for s in excluded:
        examples.setdefault(
            s.excluded_code or "other", {"id": s.memory_id, "reason": s.excluded or ""}
        )
    return {
        "excluded_by_reason": dict(sorted(by_reason.items())),
        "excluded_examples": dict(sorted(examples.items())),
    }


def _fail_contaminated(out_dir: Path, common: dict[str, Any], offenders: Any) -> None:
    """Write the failed ``run-summary.json``, remove an earlier build's files, raise."""
    err = ContaminationError(offenders)
    failed = DatasetSummary(
        **common,
        status="failed",
        contamination={"ok": False, "offenders": offenders},
        files=(RUN_SUMMARY,),
        error=str(err),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in DATASET_FILES:
        (out_dir / name).unlink(missing_ok=True)
    write_json(out_dir / RUN_SUMMARY, failed.to_dict(), default=str)
    fsync_dir(out_dir)
    raise err


def _schema_applied(
    schema: dict[str, Any], renderer: RendererLike, records: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    applied = dict(schema)
    chat = next((r for r in records if r["kind"] == "chat"), None)
    prose = next((r for r in records if r["kind"] == "continuation"), None)
    applied["chat_template"] = renderer.template
    applied["example"] = (
        None
        if chat is None
        else {k: chat[k] for k in ("id", "mode", "messages", "prompt", "completion", "text")}
    )
    applied["continuation_example"] = (
        None if prose is None else {k: prose[k] for k in ("id", "completion")}
    )
    return applied

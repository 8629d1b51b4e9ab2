"""The evaluation gate's sample sets: the run's held-out and training samples, and JSONL
sets (the run's ``regression.jsonl``, the general-text set ``etc/eval/general.jsonl``).

A line of a JSONL set is a ``fine_tune_dataset.jsonl`` line (read with ``services.jsonl``,
validated by ``services.training.dataset_reader.sample_fields``); one with ``messages`` but
no ``prompt``/``completion``/``text`` is rendered in the run's chat format
(:func:`chat_renderer`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.jsonl import read_object, read_objects
from services.shipped import etc_dir
from services.training.dataset_reader import Record, sample_fields
from services.training.errors import BadInputError

GENERAL_SET = etc_dir() / "eval" / "general.jsonl"
REGRESSION_FILE = "regression.jsonl"
SCHEMA_APPLIED = "schema_applied.json"

Render = Callable[[Sequence[Mapping[str, Any]]], tuple[str, str]]


@dataclass(frozen=True)
class EvalSample:
    """A prompt and the completion whose tokens are scored."""

    id: str
    mode: str | None
    prompt: str
    completion: str
    weight: float = 1.0


def samples_of(records: Sequence[Record]) -> list[EvalSample]:
    """The run's dataset records as samples (with their modes)."""
    return [EvalSample(r.id, r.mode, r.prompt, r.completion, r.weight) for r in records]


def read_eval_set(path: Path, render: Render | None) -> list[EvalSample]:
    """The samples of a JSONL set; ``messages``-only lines are rendered with ``render``.
    :class:`BadInputError` names the line at fault."""
    return [
        _eval_sample(obj, where, render)
        for where, obj in read_objects(path, what="evaluation set", error=BadInputError)
    ]


def _eval_sample(obj: dict[str, Any], where: str, render: Render | None) -> EvalSample:
    prompt, completion, weight = sample_fields(
        obj, where, otherwise=lambda: _render_messages(obj, where, render)
    )
    mode = obj.get("mode")
    return EvalSample(
        str(obj.get("id", where)),
        mode if isinstance(mode, str) else None,
        prompt,
        completion,
        weight,
    )


def _render_messages(obj: dict[str, Any], where: str, render: Render | None) -> tuple[str, str]:
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadInputError(f"{where}: needs 'prompt' and 'completion', 'text' or 'messages'")
    if render is None:
        raise BadInputError(f"{where}: 'messages' only, and no chat format to render them")
    try:
        return render(messages)
    except Exception as exc:
        raise BadInputError(f"{where}: cannot render its messages: {exc}") from exc


def applied_renderer(run_dir: Path) -> Any:
    """A ``services.schemas.Renderer`` of the template the run's dataset was rendered with
    (``schema_applied.json``); None without one."""
    applied = read_object(run_dir / SCHEMA_APPLIED)
    if not (
        isinstance(applied.get("chat_template"), str) and isinstance(applied.get("family"), str)
    ):
        return None
    from services.schemas import Renderer, load_schema

    tokens = {k: applied[k] for k in ("bos_token", "eos_token") if applied.get(k)}
    return Renderer(applied["chat_template"], tokens, load_schema(applied["family"]))


def chat_renderer(run_dir: Path, tokenizer: Any) -> Render | None:
    """(prompt, completion) of a conversation in the run's chat format: the template the
    dataset was rendered with (``schema_applied.json``), else the tokenizer's own."""
    renderer = applied_renderer(run_dir)
    if renderer is not None:
        split: Render = renderer.split
        return split
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


def prompt_renderer(run_dir: Path, tokenizer: Any) -> Callable[[list[dict[str, str]]], str] | None:
    """The prompt of a conversation through the generation prompt, in the run's chat format
    (as :func:`chat_renderer` chooses it); None without one."""
    renderer = applied_renderer(run_dir)
    if renderer is not None:
        return lambda messages: str(renderer.render(messages, add_generation_prompt=True))
    if not getattr(tokenizer, "chat_template", None):
        return None
    return lambda messages: str(
        tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    )

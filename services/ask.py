"""Answering a question as the person: retrieval (RAG) and the profile's active model.

:func:`ask` does it all: the closest memories, then an answer from the active version
(and from the base model beside it when asked, or alone when nothing is published).

The prompt is the prompt policy's (:mod:`services.persona_prompt`), the one the model was
trained with: the persona's system message holding the most relevant memories, and the
question as an emulation-mode user turn (``<user>...</user>``), in the model's chat format.
The model runs in a child process (``python -m services.generation``) so the daemon
never loads weights, or, when the active version is published to Ollama, in Ollama. With
``ask.warm`` the child stays loaded between questions (a generation worker of a
:class:`services.generation_pool.WorkerPool`); else each answer starts one. A local
answer ends at the model's own stops or the emulation mode's closing tag
(``</assistant>``), where the person's turn ends in the training samples.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# AskError is the generation worker's, so that the worker needs nothing of this module.
from services.generation_pool import WorkerPool
from services.generation_worker import AskError, WorkerSpec
from services.index import SearchHit, VectorIndex
from services.ledger import Ledger
from services.persona_prompt import NO_REPEAT_NGRAM, answer_stops, ask_messages
from services.persona_style import SYSTEM_FILE, serving_head
from services.publish.errors import PublishError
from services.publish.local import LocalRegistry
from services.run_prep import renderer_for
from services.schemas import Renderer
from services.settings import Settings
from services.training.base_model import parse_spec
from services.training.errors import BadInputError

_TAG = re.compile(r"</?(?:assistant|user|thought|world|instruction|action)>")


@dataclass(frozen=True)
class Answer:
    """One model's answer; ``warm``: from a warm worker whose model was loaded already;
    ``stopped``: it ended at a stop (eos, the closing tag) rather than at
    ``max_new_tokens`` (None: unknown, from Ollama)."""

    text: str
    model: str
    seconds: float
    warm: bool = False
    stopped: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "model": self.model,
            "seconds": round(self.seconds, 3),
            "warm": self.warm,
            "stopped": self.stopped,
        }


@dataclass(frozen=True)
class AskConfig:
    """Where the models are and how to run them."""

    models_dir: Path  # the local registry
    cache_dir: Path  # downloaded base models
    base_model: str
    family: str | None  # the chat family; None: from the model
    python: str  # the interpreter that runs ``services.generation``
    ollama_url: str | None = None
    warm: bool = False  # through a WorkerPool's warm worker (when one is given)
    max_new_tokens: int = 96
    timeout_s: float = 600.0  # per answer
    profiles_dir: Path | None = None  # for a profile's own system.txt

    @classmethod
    def from_settings(cls, settings: Settings) -> AskConfig:
        return cls(
            models_dir=settings.state_dir / "models",
            cache_dir=settings.state_dir / "base-models",
            base_model=settings.training.base_model,
            family=settings.training.family,
            python=settings.training.python or sys.executable,
            ollama_url=settings.ollama.url,
            warm=settings.ask.warm,
            max_new_tokens=settings.ask.max_new_tokens,
            timeout_s=settings.ask.timeout_s,
            profiles_dir=settings.profiles_dir,
        )

    def worker_spec(self, target: Target) -> WorkerSpec:
        """The generation worker that serves ``target`` locally."""
        return WorkerSpec(
            model=target.model, adapter=target.adapter, cache_dir=self.cache_dir, python=self.python
        )


@dataclass(frozen=True)
class Target:
    """One model that answers: ``label`` (``v<N>`` or ``base``) names it in the answers;
    with ``ollama_model`` set it answers from Ollama, else from a local child process."""

    label: str
    model: str
    adapter: Path | None = None
    ollama_model: str | None = None

    def describe(self) -> str:
        return self.model if self.adapter is None else f"{self.model} + {self.adapter}"


def targets(
    *,
    active: int | None,
    serving: tuple[str, Path | None],
    base_model: str,
    compare_base: bool,
    ollama_model: str | None = None,
) -> list[Target]:
    """Who answers: the active version (``serving``: its model and adapter, from Ollama
    when it was published there as ``ollama_model``), and the base model beside it when
    ``compare_base``, or alone when no version is active."""
    found: list[Target] = []
    if active is not None:
        model, adapter = serving
        found.append(Target(f"v{active}", model, adapter, ollama_model or None))
    if compare_base or active is None:
        found.append(Target("base", base_model))
    return found


def prompt_renderer(family: str | None, model: str, cache_dir: Path | None = None) -> Renderer:
    """``renderer_for(family, model)``, kept while the model's file or directory is
    unchanged: reading a GGUF file's chat template takes seconds, more than a warm answer."""
    stamp: tuple[int, int] | None = None
    with contextlib.suppress(BadInputError, OSError):
        st = os.stat(parse_spec(model).location)
        stamp = (st.st_mtime_ns, st.st_size)
    return _renderer(family, model, stamp, cache_dir)


@functools.lru_cache(maxsize=16)
def _renderer(
    family: str | None, model: str, stamp: tuple[int, int] | None, cache_dir: Path | None
) -> Renderer:
    return renderer_for(family, model, cache_dir)


def answer(
    target: Target,
    messages: list[dict[str, str]],
    cfg: AskConfig,
    pool: WorkerPool | None = None,
) -> Answer:
    """``target``'s answer to ``messages``: from Ollama, a warm worker of ``pool`` (with
    ``cfg.warm``) or a one-shot child; AskError when it cannot answer."""
    started = time.monotonic()
    if target.ollama_model and cfg.ollama_url:
        text = generate_ollama(
            cfg.ollama_url, target.ollama_model, messages, max_new_tokens=cfg.max_new_tokens
        )
        return Answer(clean(text), target.describe(), time.monotonic() - started)
    prompt = prompt_renderer(cfg.family, target.model, cfg.cache_dir).render(
        messages, add_generation_prompt=True
    )
    warm = False
    if cfg.warm and pool is not None:
        text, stopped, warm = pool.generate(
            cfg.worker_spec(target),
            prompt,
            max_new_tokens=cfg.max_new_tokens,
            stop=answer_stops(),
            no_repeat_ngram=NO_REPEAT_NGRAM,
            timeout=cfg.timeout_s,
        )
    else:
        text, stopped = generate_local(
            prompt,
            target.model,
            target.adapter,
            cache_dir=cfg.cache_dir,
            python=cfg.python,
            max_new_tokens=cfg.max_new_tokens,
            timeout=cfg.timeout_s,
            stop=answer_stops(),
        )
    return Answer(clean(text), target.describe(), time.monotonic() - started, warm, stopped)


def ask(
    ledger: Ledger,
    index: VectorIndex | None,
    cfg: AskConfig,
    profile: str,
    question: str,
    *,
    k: int,
    compare_base: bool = False,
    pool: WorkerPool | None = None,
) -> dict[str, Any]:
    """Answer ``question`` as ``profile``, with its ``k`` closest memories (none without
    an index): the memories used, the active version and each target's answer (local
    ones from ``pool``'s warm workers when ``cfg.warm``). AskError when a model cannot
    answer."""
    hits = index.search(profile, question, k=k) if index is not None and k else []
    active = ledger.active_version(profile)
    version = next((v for v in ledger.versions(profile) if v["active"]), None)
    registry = LocalRegistry(cfg.models_dir)
    system_file = None if cfg.profiles_dir is None else cfg.profiles_dir / profile / SYSTEM_FILE
    info = _version_info(registry, profile, active)
    head = serving_head(ledger, profile, info, system_file)
    messages = messages_for(profile, question, hits, head)
    chosen = targets(
        active=active,
        serving=registry.serving_model(profile, cfg.base_model),
        base_model=str((info or {}).get("base") or cfg.base_model),  # the version's own base
        compare_base=compare_base,
        ollama_model=version["ollama_model"] if cfg.ollama_url and version else None,
    )
    return {
        "profile": profile,
        "question": question,
        "memories": [{"id": h.id, "score": round(h.score, 4), "text": h.text} for h in hits],
        "active_version": f"v{active}" if active else None,
        "answers": {t.label: answer(t, messages, cfg, pool).to_dict() for t in chosen},
    }


def _version_info(
    registry: LocalRegistry, profile: str, active: int | None
) -> dict[str, Any] | None:
    if active is None:
        return None
    try:
        return registry.info(profile, active)
    except PublishError:
        return {}  # the default head, as a version without its record was served before


def messages_for(
    profile: str, question: str, hits: list[SearchHit], head: str | None = None
) -> list[dict[str, str]]:
    """The prompt policy's messages (:mod:`services.persona_prompt`): the persona's system
    message (opening with ``head``) holding the retrieved memories, the one its training
    samples carry."""
    return ask_messages(profile, question, [h.text for h in hits], head)


def clean(text: str) -> str:
    """The answer without mode tags and surrounding space."""
    return _TAG.sub("", text).strip()


def generate_local(
    prompt: str,
    model: str,
    adapter: Path | None,
    *,
    cache_dir: Path,
    python: str = sys.executable,
    max_new_tokens: int = 96,
    timeout: float = 600.0,
    stop: Sequence[str] = (),
) -> tuple[str, bool]:
    """(the answer of a one-shot ``python -m services.generation`` child, whether it ended
    at a stop); ``stop`` adds to the model's stops. AskError when it fails."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(prompt)
        prompt_file = f.name
    argv = [
        python,
        "-m",
        "services.generation",
        "--model",
        model,
        "--cache-dir",
        str(cache_dir),
        "--prompt-file",
        prompt_file,
        "--max-new-tokens",
        str(max_new_tokens),
        "--no-repeat-ngram",
        str(NO_REPEAT_NGRAM),
    ]
    for s in stop:
        argv += ["--stop", s]
    if adapter is not None:
        argv += ["--adapter", str(adapter)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise AskError(f"the model did not answer within {timeout:.0f}s") from exc
    finally:
        Path(prompt_file).unlink(missing_ok=True)
    try:
        out = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise AskError(f"generation failed (exit {done.returncode}): {tail[0]}") from None
    if "error" in out:
        raise AskError(f"generation failed: {out['error']}")
    return str(out.get("text", "")), bool(out.get("stopped"))


def generate_ollama(
    host: str, model: str, messages: list[dict[str, str]], max_new_tokens: int = 96
) -> str:
    import ollama

    try:
        reply = ollama.Client(host=host).chat(
            model=model, messages=messages, options={"num_predict": max_new_tokens}
        )
    except Exception as exc:
        raise AskError(f"Ollama could not answer with {model}: {exc}") from exc
    return str(reply.message.content or "")

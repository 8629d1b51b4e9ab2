"""Answering a question as the person: retrieval (RAG) and the profile's active model.

The prompt holds the most relevant memories as a system turn and the question as an
emulation-mode user turn (``<user>...</user>``), rendered in the model's chat format.
The model runs in a child process (``python -m services.generation``) so the daemon
never loads weights, or, when the active version is published to Ollama, in Ollama.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.errors import PersonadError
from services.index import SearchHit
from services.publish.local import LocalRegistry

MAX_MEMORY_CHARS = 400
# Greedy answers of small models loop on one sentence; no trigram is said twice.
NO_REPEAT_NGRAM = 3
_TAG = re.compile(r"</?(?:assistant|user|thought|world|instruction|action)>")


class AskError(PersonadError):
    """The question cannot be answered (no model, generation failed)."""


@dataclass(frozen=True)
class Answer:
    text: str
    model: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "model": self.model, "seconds": round(self.seconds, 3)}


def messages_for(profile: str, question: str, hits: list[SearchHit]) -> list[dict[str, str]]:
    lines = []
    for hit in hits:
        text = " ".join(hit.text.split())
        lines.append(
            "- " + (text[: MAX_MEMORY_CHARS - 3] + "..." if len(text) > MAX_MEMORY_CHARS else text)
        )
    context = "\n".join(lines) or "- (none)"
    system = (
        f"You are {profile}. Answer in {profile}'s own voice, using these memories where "
        f"they help:\n{context}"
    )
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": f"<user>{question}</user>"},
    ]


def clean(text: str) -> str:
    """The answer without mode tags and surrounding space."""
    return _TAG.sub("", text).strip()


def model_of(models_dir: Path, profile: str, base_model: str) -> tuple[str, Path | None]:
    """(model spec or dir, adapter dir) of the profile's active version; the base model
    when nothing is published."""
    active = LocalRegistry(models_dir).active_path(profile)
    if active is None:
        return base_model, None
    if (active / "model" / "config.json").is_file():
        return str(active / "model"), None
    base = json.loads((active / "base.json").read_text())["base"]
    return str(base), active / "adapter"


def generate_local(
    prompt: str,
    model: str,
    adapter: Path | None,
    *,
    cache_dir: Path,
    python: str = sys.executable,
    max_new_tokens: int = 96,
    timeout: float = 600.0,
) -> str:
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
    return str(out.get("text", ""))


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

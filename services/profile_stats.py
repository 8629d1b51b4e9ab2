"""A profile's training statistics under ZEGA's field names (``personad stats``).

- ``training_examples``: eligible training samples;
- ``examples_until_next_training``: eligible samples still needed since the last training
  before the threshold (``triggers.lora_threshold``) queues a LoRA (0: it is due);
- ``last_fine_tune``: when the latest successful training job ended (None: never);
- ``quality_scores``: ``average``, ``highest``, ``lowest`` quality of the eligible samples;
- ``genre_preferences``: how often each value of the memories' ``metadata.topic``,
  ``metadata.genre`` and tags occurs, most frequent first;
- ``total_training_steps``: optimizer steps of every successful training job;
- ``custom_model_exists`` / ``custom_model_name``: whether a trained version is active,
  and its name (its ``train --name``, else its Ollama model, else ``<profile>:v<N>``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from services.ledger import Ledger
from services.memories.model import Memory
from services.publish.errors import PublishError
from services.publish.local import LocalRegistry

GENRE_KEYS = ("topic", "genre")


def genre_counts(memories: Iterable[Memory]) -> dict[str, int]:
    """Counts of the memories' ``metadata.topic``, ``metadata.genre`` (strings or lists of
    strings) and tags, case-folded, most frequent first (ties by name)."""
    counts: Counter[str] = Counter()
    for m in memories:
        values: list[Any] = list(m.tags)
        for key in GENRE_KEYS:
            value = m.metadata.get(key)
            values.extend(value if isinstance(value, list) else [value])
        for value in values:
            if isinstance(value, str) and value.strip():
                counts[value.strip().lower()] += 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def version_name(registry: LocalRegistry, profile: str, version: dict[str, Any]) -> str:
    """A published version's name: its ``train --name``, else its Ollama model, else
    ``<profile>:v<N>``."""
    try:
        info = registry.info(profile, int(version["version"])).get("info") or {}
    except PublishError:
        info = {}
    name = info.get("name") if isinstance(info, dict) else None
    return str(name or version.get("ollama_model") or f"{profile}:v{version['version']}")


def profile_stats(
    ledger: Ledger, registry: LocalRegistry, profile: str, *, lora_threshold: int
) -> dict[str, Any]:
    """The statistics of one profile (the ledger must know it)."""
    samples = [r for r in ledger.sample_records(profile) if r.get("excluded") is None]
    qualities = [float(r["quality"]) for r in samples]
    cut = ledger.last_training_cut(profile)
    since = ledger.eligible_since(profile, cut)
    succeeded = [
        j for j in ledger.jobs(states=("succeeded",), limit=100_000) if j.profile == profile
    ]
    steps = sum(int(((j.result or {}).get("metrics") or {}).get("steps") or 0) for j in succeeded)
    last = max((j.finished_at for j in succeeded if j.finished_at), default=None)
    active = next((v for v in ledger.versions(profile) if v["active"]), None)
    return {
        "profile": profile,
        "training_examples": len(samples),
        "examples_until_next_training": max(0, lora_threshold - since),
        "last_fine_tune": last,
        "quality_scores": {
            "average": round(sum(qualities) / len(qualities), 3) if qualities else None,
            "highest": round(max(qualities), 3) if qualities else None,
            "lowest": round(min(qualities), 3) if qualities else None,
        },
        "genre_preferences": genre_counts(ledger.memories(profile)),
        "total_training_steps": steps,
        "custom_model_exists": active is not None,
        "custom_model_name": version_name(registry, profile, active) if active else None,
        "active_version": f"v{active['version']}" if active else None,
        "training_jobs": len(succeeded),
    }

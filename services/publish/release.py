"""From a trained, accepted run to the active model version: publish, swap, record.

Order, so that a failure at any step leaves the old version active everywhere:
publish ``v<N>`` to the local registry (not yet active) -> when Ollama is configured,
merge a LoRA into a full model (a LoRA on a model installed in Ollama, ``ollama:NAME``, is
created as ``FROM NAME`` plus the adapter instead, when Ollama converts adapters of its
architecture), create ``<prefix>-<profile>:v<N>`` and check it answers, copy it to
``:latest`` and check the digests -> switch the local ``active`` link -> record the
version as active in the ledger -> prune old versions.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from services.curation.modes import mode_tags
from services.ledger import Ledger
from services.persona_prompt import closing_stop, system_message
from services.persona_style import run_head
from services.publish.errors import PublishError
from services.publish.local import LocalRegistry
from services.publish.retention import DEFAULT_KEEP
from services.schemas import ChatSchema, load_schema
from services.training.command import build_merge_command

if TYPE_CHECKING:
    from services.publish.ollama import OllamaPublisher

log = structlog.get_logger(__name__)


class StaleBase(PublishError):
    """A LoRA trained on a base that a newer full fine-tune has since replaced."""


@dataclass(frozen=True)
class ReleaseConfig:
    models_dir: Path
    cache_dir: Path
    keep: int = DEFAULT_KEEP
    ollama_url: str | None = None
    ollama_prefix: str = "personad"
    quantize: str | None = "q8_0"
    system: str | None = None
    python: str = sys.executable
    # Modelfile PARAMETERs besides the stops (temperature, top_p, repeat_penalty)
    parameters: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Release:
    version: int
    path: str
    ollama_model: str | None = None
    digest: str | None = None
    pruned: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "path": self.path,
            "ollama_model": self.ollama_model,
            "digest": self.digest,
            "pruned": self.pruned,
        }


def check_base_current(ledger: Ledger, profile: str, kind: str, plan: dict[str, Any]) -> None:
    """A LoRA is published only onto the base that is still the profile's current one
    (one trained on a base its job named stays on that base)."""
    if kind != "lora" or plan.get("base_requested"):
        return
    _, current_job = ledger.current_base(profile)
    if current_job != plan.get("base_job"):
        raise StaleBase(
            f"not published: its base was replaced by the full fine-tune of job {current_job} "
            "while it trained; the next LoRA trains on the new base"
        )


def _family(run_dir: Path) -> str:
    try:
        return str(json.loads((run_dir / "schema_applied.json").read_text())["family"])
    except (OSError, ValueError, KeyError) as exc:
        raise PublishError(
            f"cannot tell the run's chat family from schema_applied.json: {exc}"
        ) from exc


def _merge(cfg: ReleaseConfig, run_dir: Path, base: str) -> Path:
    out = run_dir / "model"
    if (out / "config.json").is_file():
        return out
    argv = build_merge_command(
        base=base,
        adapter=run_dir / "adapter",
        out=out,
        cache_dir=cfg.cache_dir,
        python=cfg.python,
    )
    with open(run_dir / "merge.log", "wb") as logf:
        done = subprocess.run(argv, stdout=logf, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise PublishError(f"merging the adapter failed (exit {done.returncode}); see merge.log")
    return out


def release(
    ledger: Ledger,
    cfg: ReleaseConfig,
    *,
    profile: str,
    job_id: int,
    kind: str,
    run_dir: Path,
    plan: dict[str, Any],
    name: str | None = None,
) -> Release:
    """Publish a run's candidate as the profile's next version (see the module doc for
    the order); ``name`` (``train --name``) is recorded in its ``version.json``."""
    check_base_current(ledger, profile, kind, plan)
    base = str(plan.get("base") or "")
    version = ledger.next_version(profile)
    registry = LocalRegistry(cfg.models_dir)
    head = run_head(run_dir)  # the system message's head the version was trained with
    artifact = run_dir / ("adapter" if kind == "lora" else "model")
    path = registry.publish(
        profile,
        version,
        artifact,
        kind=kind,
        base=base or None,
        info={
            "job": job_id,
            "run_dir": str(run_dir),
            **({"name": name} if name else {}),
            **({"system": head} if head else {}),
        },
    )
    ollama_model = digest = None
    try:
        if cfg.ollama_url:
            system = cfg.system if cfg.system is not None else system_message(profile, (), head)
            ollama_model, digest = _to_ollama(cfg, profile, version, kind, run_dir, base, system)
        registry.activate(profile, version)
    except Exception:
        # Nothing was switched: drop the unpublished version directory.
        registry.remove(profile, version)
        raise
    ledger.add_version(
        profile,
        version,
        kind=kind,
        job_id=job_id,
        run_dir=str(run_dir),
        path=str(path),
        base=base or None,
        ollama_model=ollama_model,
        digest=digest,
    )
    pruned = prune(ledger, cfg, profile)
    log.info("published", profile=profile, version=version, ollama=ollama_model)
    return Release(version, str(path), ollama_model, digest, pruned)


def _to_ollama(
    cfg: ReleaseConfig,
    profile: str,
    version: int,
    kind: str,
    run_dir: Path,
    base: str,
    system: str,
) -> tuple[str, str]:
    from services.publish.ollama import OllamaPublisher

    assert cfg.ollama_url is not None
    schema = load_schema(_family(run_dir))
    with OllamaPublisher(cfg.ollama_url, cfg.ollama_prefix, quantize=cfg.quantize) as pub:
        pub.check()
        parameters = {"stop": served_stops(schema), **cfg.parameters}
        installed = _installed_base(pub, base) if kind == "lora" else None
        if installed:
            artifact, kind_served = run_dir / "adapter", "lora"
        else:
            model_dir = _merge(cfg, run_dir, base) if kind == "lora" else run_dir / "model"
            artifact, kind_served = model_dir, "full"
        published = pub.publish(
            profile,
            version,
            artifact,
            kind=kind_served,
            from_model=installed,
            schema=schema,
            system=system,
            parameters=parameters,
        )
        (run_dir / "Modelfile").write_text(published.modelfile)
        try:
            digest = pub.activate(profile, version)
        except Exception:
            pub.delete(profile, version)
            raise
    return published.name, digest


def _installed_base(pub: OllamaPublisher, base: str) -> str | None:
    """The Ollama model an ``ollama:NAME`` base names, when the adapter can go on it as it
    is; None otherwise (the adapter is merged)."""
    if not base.startswith("ollama:"):
        return None
    from services.training.ollama_base import parse_name

    name = parse_name(base.removeprefix("ollama:")).short
    try:
        problem = pub.adapter_base_problem(name)
    except PublishError as exc:
        problem = str(exc)
    if problem:
        log.info("merging the adapter for Ollama", base=base, reason=problem)
        return None
    return name


def served_stops(schema: ChatSchema) -> list[str]:
    """What a served answer stops at: the family's stop tokens and every mode's closing
    tag (an answer ends at its own mode's; another mode's never belongs in it), cut at
    ``</tag`` as :func:`services.persona_prompt.answer_stops` cuts it."""
    closing = [closing_stop(response) for _, response in mode_tags().values()]
    return list(dict.fromkeys([*schema.stop, *closing]))


def prune(ledger: Ledger, cfg: ReleaseConfig, profile: str) -> list[int]:
    """Keep the newest ``cfg.keep`` versions (never the active one) everywhere."""
    registry = LocalRegistry(cfg.models_dir)
    doomed = registry.prune(profile, cfg.keep)
    if cfg.ollama_url:
        from services.publish.ollama import OllamaPublisher

        with OllamaPublisher(cfg.ollama_url, cfg.ollama_prefix) as pub:
            doomed = sorted(set(doomed) | set(pub.prune(profile, cfg.keep)))
    for version in doomed:
        ledger.delete_version(profile, version)
    return doomed


def rollback(ledger: Ledger, cfg: ReleaseConfig, profile: str, to: int | None = None) -> int:
    """Point the active model back at ``to`` (default: the version before the active one)."""
    registry = LocalRegistry(cfg.models_dir)
    known = [int(v["version"]) for v in ledger.versions(profile)]
    if to is not None and to not in known:
        raise PublishError(f"{profile} has no version v{to} (versions: {known or 'none'})")
    target = registry.rollback(profile, to)
    if cfg.ollama_url:
        from services.publish.ollama import OllamaPublisher

        with OllamaPublisher(cfg.ollama_url, cfg.ollama_prefix) as pub:
            try:
                pub.activate(profile, target)
            except Exception:
                previous = ledger.active_version(profile)
                if previous is not None:
                    registry.activate(profile, previous)
                raise
    ledger.set_active_version(profile, target)
    return target


def align_published(ledger: Ledger, cfg: ReleaseConfig) -> list[str]:
    """At start-up: put the local ``active`` link (and Ollama's ``:latest``) back on the
    ledger's active version wherever they disagree, and remove the versions the ledger
    does not record (a publish interrupted by a crash, before it was recorded), so that
    the next publish can take their number. Returns what was repaired."""
    repaired: list[str] = []
    registry = LocalRegistry(cfg.models_dir)
    active = ledger.active_versions()
    for profile in sorted(set(active) | set(registry.profiles())):
        version = active.get(profile)
        recorded = {int(v["version"]) for v in ledger.versions(profile)}
        registry.cleanup(profile)
        repaired += _align(
            f"{profile}: local active",
            f"{profile}: unrecorded local",
            "none active",
            version,
            recorded,
            current=registry.active(profile),
            available=registry.versions(profile),
            activate=partial(registry.activate, profile),
            deactivate=partial(registry.deactivate, profile),
            remove=partial(registry.remove, profile),
        )
        if cfg.ollama_url:
            repaired += _align_ollama(cfg, profile, version, recorded)
    for item in repaired:
        log.warning("active model repaired", what=item)
    return repaired


def _align_ollama(
    cfg: ReleaseConfig, profile: str, version: int | None, recorded: set[int]
) -> list[str]:
    from services.publish.ollama import OllamaPublisher

    assert cfg.ollama_url is not None
    try:
        with OllamaPublisher(cfg.ollama_url, cfg.ollama_prefix) as pub:
            return _align(
                f"{profile}: ollama latest",
                f"{profile}: unrecorded ollama",
                "removed",
                version,
                recorded,
                current=pub.active_version(profile),
                available=pub.versions(profile),
                activate=partial(pub.activate, profile),
                deactivate=partial(pub.deactivate, profile),
                remove=partial(pub.delete, profile),
            )
    except PublishError as exc:
        log.warning("cannot align Ollama with the ledger", profile=profile, error=str(exc))
        return []


def _align(
    pointer: str,
    unrecorded: str,
    undone: str,
    version: int | None,
    recorded: set[int],
    *,
    current: int | None,
    available: list[int],
    activate: Callable[[int], object],
    deactivate: Callable[[], object],
    remove: Callable[[int], object],
) -> list[str]:
    """One store (the local registry or Ollama) brought in line with the ledger: its
    pointer (``active`` or ``:latest``, now at ``current``) on the ledger's active
    ``version``, or on none when that is unset and it points at an unrecorded version; and
    the versions the ledger never recorded removed. ``pointer`` and ``unrecorded`` lead the
    lines that say what was repaired."""
    repaired: list[str] = []
    if version is not None and current != version and version in available:
        activate(version)
        current = version
        repaired.append(f"{pointer} -> v{version}")
    elif version is None and current is not None and current not in recorded:
        deactivate()
        repaired.append(f"{pointer} v{current} was never recorded; {undone}")
        current = None
    for stale in available:
        if stale not in recorded and stale != current:
            remove(stale)
            repaired.append(f"{unrecorded} v{stale} removed")
    return repaired

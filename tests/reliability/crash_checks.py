"""Read-only checks of a personad state directory: the ledger, the Chroma index and
the active model, each against what the crash harness knows must be there."""

from __future__ import annotations

import json
import os
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.index import collection_name


def ro_connect(path: Path) -> sqlite3.Connection:
    """A read-only connection: the checks never write the daemon's files."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)


@dataclass
class JobRow:
    id: int
    profile: str
    kind: str
    state: str
    reason: str | None
    retry_of: int | None
    attempts: int
    result: dict[str, Any] | None


@dataclass
class LedgerView:
    integrity: str
    ids: dict[str, set[str]]
    duplicates: set[tuple[str, str]]  # (profile, id) stored more than once
    unindexed: dict[str, int]
    uncurated: set[tuple[str, str]]  # (profile, id) of memories without a sample
    files: dict[str, str | None]  # path -> sha256
    reject_paths: set[str]
    jobs: list[JobRow]
    active: dict[str, tuple[int, str | None]]  # profile -> (version, digest)
    versions: dict[str, list[int]] = field(default_factory=dict)


def read_ledger(path: Path) -> LedgerView:
    conn = ro_connect(path)
    try:
        integrity = str(conn.execute("PRAGMA integrity_check").fetchone()[0])
        ids: dict[str, set[str]] = {}
        for profile, mid in conn.execute("SELECT profile, id FROM memories"):
            ids.setdefault(profile, set()).add(mid)
        duplicates = {
            (r[0], r[1])
            for r in conn.execute(
                "SELECT profile, id FROM memories GROUP BY profile, id HAVING COUNT(*) > 1"
            )
        }
        unindexed = dict(
            conn.execute(
                "SELECT profile, COUNT(*) FROM memories WHERE indexed = 0 GROUP BY profile"
            ).fetchall()
        )
        uncurated = {
            (r[0], r[1])
            for r in conn.execute(
                "SELECT m.profile, m.id FROM memories m LEFT JOIN samples s"
                " ON s.profile = m.profile AND s.memory_id = m.id WHERE s.memory_id IS NULL"
            )
        }
        files = dict(conn.execute("SELECT path, sha256 FROM files").fetchall())
        reject_paths = {r[0] for r in conn.execute("SELECT path FROM rejects")}
        jobs = [
            JobRow(
                id=r[0],
                profile=r[1],
                kind=r[2],
                state=r[3],
                reason=r[4],
                retry_of=r[5],
                attempts=r[6],
                result=json.loads(r[7]) if r[7] else None,
            )
            for r in conn.execute(
                "SELECT id, profile, kind, state, reason, retry_of, attempts, result"
                " FROM jobs ORDER BY id"
            )
        ]
        active = {
            r[0]: (int(r[1]), r[2])
            for r in conn.execute(
                "SELECT profile, version, digest FROM model_versions WHERE active = 1"
            )
        }
        versions: dict[str, list[int]] = {}
        for profile, version in conn.execute(
            "SELECT profile, version FROM model_versions ORDER BY version"
        ):
            versions.setdefault(profile, []).append(int(version))
    finally:
        conn.close()
    return LedgerView(
        integrity=integrity,
        ids=ids,
        duplicates=duplicates,
        unindexed=unindexed,
        uncurated=uncurated,
        files=files,
        reject_paths=reject_paths,
        jobs=jobs,
        active=active,
        versions=versions,
    )


@dataclass
class IndexView:
    integrity: str
    ids: dict[str, list[str]]  # profile -> ids in its collection (repeats kept)


def read_index(index_dir: Path, profiles: tuple[str, ...]) -> IndexView:
    """The ids of each profile's collection, from Chroma's metadata segment."""
    conn = ro_connect(index_dir / "chroma.sqlite3")
    try:
        integrity = str(conn.execute("PRAGMA integrity_check").fetchone()[0])
        out: dict[str, list[str]] = {}
        for profile in profiles:
            out[profile] = [
                r[0]
                for r in conn.execute(
                    "SELECT e.embedding_id FROM embeddings e"
                    " JOIN segments s ON s.id = e.segment_id"
                    " JOIN collections c ON c.id = s.collection"
                    " WHERE c.name = ? AND s.scope = 'METADATA'",
                    [collection_name(profile)],
                )
            ]
    finally:
        conn.close()
    return IndexView(integrity=integrity, ids=out)


def duplicates_in(ids: list[str]) -> set[str]:
    """The ids that occur more than once."""
    return {i for i, n in Counter(ids).items() if n > 1}


def check_active_model(
    models_dir: Path,
    profile: str,
    ledger_active: tuple[int, str | None] | None,
    ollama_digest: str | None,
) -> list[str]:
    """Problems with the profile's active model: the ``active`` link must name the
    ledger's active version (or be absent with it), and that version must be whole and
    load (configs parse, safetensors headers and a tensor read)."""
    link = models_dir / profile / "active"
    try:
        target: str | None = os.readlink(link)
    except FileNotFoundError:
        target = None
    if ledger_active is None:
        if target is not None:
            return [f"{profile}: active -> {target}, but the ledger records no active version"]
        return []
    version, digest = ledger_active
    if target != f"v{version}":
        return [f"{profile}: active -> {target}, the ledger's active version is v{version}"]
    problems = _loads(models_dir / profile / target, profile)
    if digest is not None and ollama_digest != digest:
        problems.append(
            f"{profile}: Ollama's latest has digest {ollama_digest}, the ledger's v{version} "
            f"has {digest}"
        )
    return problems


def _loads(vdir: Path, profile: str) -> list[str]:
    from safetensors import safe_open

    where = f"{profile}/{vdir.name}"
    try:
        info = json.loads((vdir / "version.json").read_text())
        if (vdir / "adapter").is_dir():
            config = json.loads((vdir / "adapter" / "adapter_config.json").read_text())
            if config.get("peft_type") != "LORA":
                return [f"{where}: adapter_config.json is not a LoRA config"]
            base = json.loads((vdir / "base.json").read_text())["base"]
            base_config = json.loads((Path(base) / "config.json").read_text())
            if not base_config.get("model_type"):
                return [f"{where}: base model {base} has no model_type"]
            weights = vdir / "adapter" / "adapter_model.safetensors"
        else:
            config = json.loads((vdir / "model" / "config.json").read_text())
            if not config.get("model_type"):
                return [f"{where}: model/config.json has no model_type"]
            weights = vdir / "model" / "model.safetensors"
        with safe_open(str(weights), framework="numpy") as f:
            keys = list(f.keys())
            if not keys:
                return [f"{where}: {weights.name} holds no tensors"]
            if f.get_tensor(keys[0]).size == 0:
                return [f"{where}: {weights.name} holds an empty tensor"]
    except Exception as exc:
        return [f"{where} does not load: {type(exc).__name__}: {exc}"]
    if not isinstance(info, dict):
        return [f"{where}: version.json is not an object"]
    return []


def memory_texts(path: Path, profile: str, ids: list[str]) -> dict[str, str]:
    """id -> the text the index embedded, for the given memories."""
    conn = ro_connect(path)
    try:
        marks = ",".join("?" * len(ids))
        rows = conn.execute(
            f"SELECT id, text FROM memories WHERE profile = ? AND id IN ({marks})",
            [profile, *ids],
        )
        return {r[0]: r[1] for r in rows}
    finally:
        conn.close()

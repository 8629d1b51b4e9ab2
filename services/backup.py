"""Backups of a state directory, taken online, and their restore into a stopped one.

A backup directory holds:

- ``ledger.sqlite3``: a consistent snapshot of the ledger (SQLite's online backup API,
  safe while the daemon writes);
- ``models/<profile>/v<N>/``: every version the snapshot records (the active one and
  the retained ones; a published version is never changed, so a copy is consistent);
- ``runs/``: every run directory's summaries, evaluation and report (not its
  checkpoints, adapter or model weights);
- ``settings.json``: the settings in effect, and ``personad.toml``: the settings file,
  when one was used;
- ``backup.json``: what it holds (the source state directory, the counts, the ledger's
  sha256), written last: a backup without it is incomplete.

The vector index is not copied: it is rebuilt from the ledger at the first start after a
restore. The memory folders are the person's own files and are not copied either.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.durable import fsync_tree, write_text
from services.errors import PersonadError
from services.ledger import Ledger
from services.settings import Settings

MANIFEST = "backup.json"
LEDGER = "ledger.sqlite3"
# Weights in a run directory: pruned from backups (the published ones are in models/).
RUN_WEIGHTS = frozenset({"checkpoints", "adapter", "model"})


class BackupError(PersonadError):
    """A backup or a restore that cannot be done; the message says why and what to do."""


@dataclass(frozen=True)
class Counts:
    memories: int
    samples: int
    jobs: int
    versions: int
    active: dict[str, int]

    @classmethod
    def of(cls, ledger: Ledger) -> Counts:
        def one(sql: str) -> int:
            return int(ledger.db.execute(sql).fetchone()[0])

        return cls(
            memories=one("SELECT count(*) FROM memories"),
            samples=one("SELECT count(*) FROM samples"),
            jobs=one("SELECT count(*) FROM jobs"),
            versions=one("SELECT count(*) FROM model_versions"),
            active=ledger.active_versions(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "memories": self.memories,
            "samples": self.samples,
            "jobs": self.jobs,
            "versions": self.versions,
            "active": self.active,
        }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _snapshot(source: Path, target: Path) -> None:
    """A consistent copy of the ledger, taken while others may write to it."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30.0)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst, pages=4096)
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    except sqlite3.Error as exc:
        raise BackupError(f"cannot snapshot the ledger {source}: {exc}") from exc
    finally:
        dst.close()
        src.close()


def _copy_runs(runs: Path, target: Path) -> int:
    """Every file of every run directory but its weights; returns the bytes copied."""
    copied = 0
    for dirpath, dirnames, filenames in os.walk(runs):
        dirnames[:] = sorted(d for d in dirnames if d not in RUN_WEIGHTS)
        rel = Path(dirpath).relative_to(runs)
        for name in filenames:
            src = Path(dirpath) / name
            if src.is_symlink() or not src.is_file():
                continue
            dst = target / rel / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copy2(src, dst)
            except FileNotFoundError:  # a run removed meanwhile
                continue
            copied += dst.stat().st_size
    return copied


def backup(settings: Settings, dest: Path, config_file: Path | None = None) -> dict[str, Any]:
    """Back the state directory up into ``dest`` (new or empty); returns the manifest."""
    dest = dest.expanduser().resolve()
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} is not empty; back up into a new or empty directory")
    state = settings.state_dir.resolve()
    if dest.is_relative_to(state):
        raise BackupError(f"{dest} is inside the state directory {state}; choose another place")
    if not settings.ledger_path.exists():
        raise BackupError(f"no ledger at {settings.ledger_path}: nothing to back up")
    dest.mkdir(parents=True, exist_ok=True)
    _snapshot(settings.ledger_path, dest / LEDGER)
    with Ledger(dest / LEDGER, migrate=False) as snap:
        if (check := snap.integrity_check()) != "ok":
            raise BackupError(f"the ledger snapshot fails its integrity check: {check}")
        counts = Counts.of(snap)
        versions = [
            (str(r["profile"]), int(r["version"]))
            for r in snap.db.query("SELECT profile, version FROM model_versions")
        ]
        migrations = snap.applied_migrations()
    models, missing = state / "models", []
    for profile, version in versions:
        src = models / profile / f"v{version}"
        if not src.is_dir():
            missing.append(f"{profile} v{version}")
            continue
        shutil.copytree(src, dest / "models" / profile / f"v{version}", symlinks=True)
    run_bytes = _copy_runs(state / "runs", dest / "runs") if (state / "runs").is_dir() else 0
    write_text(dest / "settings.json", settings.model_dump_json(indent=2) + "\n")
    if config_file is not None and config_file.is_file():
        shutil.copy2(config_file, dest / "personad.toml")
    manifest = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "state_dir": str(state),
        "ledger_sha256": _sha256(dest / LEDGER),
        "migrations": migrations,
        "counts": counts.to_dict(),
        "versions_missing": missing,
        "run_bytes": run_bytes,
    }
    fsync_tree(dest)
    write_text(dest / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(src: Path) -> dict[str, Any]:
    """The manifest of a complete backup, its ledger checked against it."""
    try:
        manifest = json.loads((src / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise BackupError(
            f"{src} is not a complete personad backup (no readable {MANIFEST}: {exc})"
        ) from exc
    if not (src / LEDGER).is_file() or _sha256(src / LEDGER) != manifest.get("ledger_sha256"):
        raise BackupError(f"the ledger in {src} does not match its {MANIFEST}; it was changed")
    return dict(manifest)


def state_in_use(settings: Settings) -> list[str]:
    """What of a state directory a restore would replace: a ledger, models, runs."""
    state = settings.state_dir
    return [
        name
        for name in (LEDGER, "models", "runs", "index")
        if (state / name).exists()
        and (not (state / name).is_dir() or any((state / name).iterdir()))
    ]


def restore(settings: Settings, src: Path, *, force: bool = False) -> dict[str, Any]:
    """Restore the backup ``src`` into the (stopped) state directory. What was there is
    moved into ``<state_dir>/replaced-<time>/`` (only with ``force``). Returns what was
    restored: the counts, where the old state went, the settings of the backup."""
    src = src.expanduser().resolve()
    manifest = read_manifest(src)
    state = settings.state_dir.resolve()
    present = state_in_use(settings)
    if present and not force:
        raise BackupError(
            f"the state directory {state} is not empty ({', '.join(present)}); restore "
            "into an empty one, or add --force to move what is there aside"
        )
    with Ledger(src / LEDGER, migrate=False) as check:  # a newer ledger refuses here
        if (result := check.integrity_check()) != "ok":
            raise BackupError(f"the ledger in {src} fails its integrity check: {result}")
    state.mkdir(parents=True, exist_ok=True)
    aside = None
    if present:
        aside = state / f"replaced-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}"
        aside.mkdir()
        for name in [*present, f"{LEDGER}-wal", f"{LEDGER}-shm"]:
            if (state / name).exists():
                os.replace(state / name, aside / name)
    staged = state / f".restore-{os.getpid()}.sqlite3"
    shutil.copy2(src / LEDGER, staged)
    _relocate(staged, manifest["state_dir"], str(state))
    for name in ("models", "runs"):
        if (src / name).is_dir():
            shutil.copytree(src / name, state / name, symlinks=True)
    _link_active(staged, state / "models")
    if (state / "models").is_dir():
        fsync_tree(state / "models")
    os.replace(staged, state / LEDGER)  # last: the state is whole once the ledger is there
    with Ledger(state / LEDGER) as ledger:  # migrated now, if the backup is older
        counts = Counts.of(ledger)
    return {
        "restored_from": str(src),
        "created": manifest.get("created"),
        "counts": counts.to_dict(),
        "replaced": str(aside) if aside else None,
        "settings": str(src / "personad.toml")
        if (src / "personad.toml").exists()
        else str(src / "settings.json"),
    }


def _relocate(ledger: Path, old: str, new: str) -> None:
    """Paths the ledger holds under the old state directory now point into the new one;
    every memory is marked unindexed, so the daemon rebuilds the index from it."""
    conn = sqlite3.connect(ledger)
    try:
        with conn:
            if old != new:
                for table, column in (
                    ("jobs", "run_dir"),
                    ("model_versions", "run_dir"),
                    ("model_versions", "path"),
                ):
                    conn.execute(
                        f"UPDATE {table} SET {column} = ? || substr({column}, ?)"
                        f" WHERE substr({column}, 1, ?) = ?",
                        [new, len(old) + 1, len(old), old],
                    )
            conn.execute("UPDATE memories SET indexed = 0")
    finally:
        conn.close()


def _link_active(ledger: Path, models: Path) -> None:
    """The registry's ``active`` links, as the ledger records them."""
    conn = sqlite3.connect(ledger)
    try:
        rows = conn.execute(
            "SELECT profile, version FROM model_versions WHERE active = 1"
        ).fetchall()
    finally:
        conn.close()
    for profile, version in rows:
        link = models / profile / "active"
        if (models / profile / f"v{version}").is_dir():
            if link.is_symlink() or link.exists():
                link.unlink()
            os.symlink(f"v{version}", link)

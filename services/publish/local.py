"""The local model registry: ``<models_dir>/<profile>/v<N>/`` and an ``active`` symlink.

A version directory holds ``model/`` (a full model) or ``adapter/`` plus ``base.json``
(``{"base": "<base model spec>"}``), and ``version.json``. It is written whole in a
temporary directory beside it, every file and directory fsynced, then renamed into
place: a ``v<N>`` that exists is complete. ``active`` is a relative symlink to ``v<N>``,
switched by creating a new link and ``os.replace``-ing it over the old one, then
fsyncing the directory: a reader resolving ``active`` always finds a whole version.

Readers should resolve ``active`` once (``active_path``) and read from the version
directory it names, so that every file they read comes from the same version.
A short ``flock`` on ``<profile>/.lock`` orders publishers, activations and removals.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from services.durable import fsync_dir, fsync_tree, json_text, write_text
from services.publish.artifact import check_artifact, check_kind
from services.publish.errors import PublishError
from services.publish.retention import DEFAULT_KEEP, plan_retention, previous_version

log = structlog.get_logger(__name__)

ACTIVE = "active"
VERSION_FILE = "version.json"
BASE_FILE = "base.json"
_LOCK = ".lock"
_TMP_PREFIX = ".tmp-"
_LINK_PREFIX = ".active-"
_TRASH_PREFIX = ".trash-"
_VERSION_DIR = re.compile(r"^v([1-9][0-9]*)$")
_PROFILE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._@+-]*$")


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    try:
        text = json_text(data, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise PublishError(f"{path.name}: cannot be written as JSON: {exc}") from exc
    write_text(path, text)


class LocalRegistry:
    """Published versions of every profile under ``models_dir``."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = Path(models_dir)

    # -- paths --

    def profile_dir(self, profile: str) -> Path:
        if not _PROFILE.match(profile) or profile in (".", ".."):
            raise PublishError(
                f"profile name {profile!r} cannot be a directory name: use letters, digits "
                "and . _ @ + - (not first)"
            )
        return self.models_dir / profile

    def path(self, profile: str, version: int) -> Path:
        """The directory of a published version; PublishError when there is none."""
        path = self.profile_dir(profile) / _version_name(version)
        if not path.is_dir():
            raise PublishError(
                f"profile {profile!r} has no version v{version}; published: "
                f"{_listing(self.versions(profile))}"
            )
        return path

    # -- reading --

    def profiles(self) -> list[str]:
        """The profiles that have a directory here."""
        if not self.models_dir.is_dir():
            return []
        return sorted(
            e.name
            for e in self.models_dir.iterdir()
            if e.is_dir() and _PROFILE.match(e.name) and e.name not in (".", "..")
        )

    def versions(self, profile: str) -> list[int]:
        """Published versions, ascending."""
        pdir = self.profile_dir(profile)
        if not pdir.is_dir():
            return []
        found = []
        for entry in pdir.iterdir():
            match = _VERSION_DIR.match(entry.name)
            if match and entry.is_dir() and not entry.is_symlink():
                found.append(int(match.group(1)))
        return sorted(found)

    def active(self, profile: str) -> int | None:
        """The active version, None when none was activated."""
        try:
            target = os.readlink(self.profile_dir(profile) / ACTIVE)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PublishError(f"cannot read {profile}/{ACTIVE}: {exc}") from exc
        match = _VERSION_DIR.match(target)
        if match is None:
            raise PublishError(f"{profile}/{ACTIVE} points at {target!r}, not a version")
        return int(match.group(1))

    def active_path(self, profile: str) -> Path | None:
        """The active version's directory (``active`` resolved once), None when none."""
        version = self.active(profile)
        return None if version is None else self.profile_dir(profile) / _version_name(version)

    def serving_model(self, profile: str, base_model: str) -> tuple[str, Path | None]:
        """What answers for ``profile``: (model spec or directory, adapter directory or
        None) of its active version, ``(base_model, None)`` when none is active. A LoRA
        version serves its adapter on the base it was trained on (``base.json``)."""
        active = self.active_path(profile)
        if active is None:
            return base_model, None
        if (active / "model" / "config.json").is_file():
            return str(active / "model"), None
        base = json.loads((active / BASE_FILE).read_text())["base"]
        return str(base), active / "adapter"

    def version_model(self, profile: str, version: int) -> tuple[str, Path | None]:
        """(model directory or spec, adapter directory or None) of any published version,
        as :meth:`serving_model` gives the active one's; PublishError when there is no such
        version or its ``base.json`` cannot be read."""
        path = self.path(profile, version)
        if (path / "model" / "config.json").is_file():
            return str(path / "model"), None
        try:
            return str(json.loads((path / BASE_FILE).read_text())["base"]), path / "adapter"
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PublishError(f"{profile}/v{version}: cannot read {BASE_FILE}: {exc}") from exc

    def info(self, profile: str, version: int) -> dict[str, Any]:
        """What ``version.json`` of a version holds."""
        path = self.path(profile, version) / VERSION_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise PublishError(f"cannot read {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise PublishError(f"{path}: not a JSON object")
        return data

    # -- writing --

    def publish(
        self,
        profile: str,
        version: int,
        artifact: Path,
        *,
        kind: str,
        base: str | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> Path:
        """Copy ``artifact`` (a ``model/`` or ``adapter/`` directory) in as ``v<version>``.

        ``base`` (the base model spec) is required for a LoRA adapter. ``info`` goes to
        ``version.json`` under ``"info"``. Refuses a version that exists. Returns the
        version directory. On failure nothing named ``v<version>`` appears.
        """
        kind = check_kind(kind)
        name = _version_name(version)
        artifact = Path(artifact)
        check_artifact(artifact, kind)
        if kind == "lora" and not base:
            raise PublishError("a LoRA adapter needs the base model it was trained on (base=)")
        pdir = self.profile_dir(profile)
        final = pdir / name
        what = f"{profile}/{name}"
        if final.exists():
            raise PublishError(f"{what} is already published; versions are never replaced")
        tmp, tmp_fd = self._locked_tmp(pdir, name, what)
        try:
            try:
                self._fill(
                    tmp, artifact, kind=kind, profile=profile, version=version, base=base, info=info
                )
                self._move_in(tmp, pdir, final, what)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        except OSError as exc:
            raise PublishError(f"cannot publish {what}: {exc}") from exc
        finally:
            os.close(tmp_fd)
        log.info("published a model version", profile=profile, version=version, kind=kind)
        return final

    def _locked_tmp(self, pdir: Path, name: str, what: str) -> tuple[Path, int]:
        """A new temporary directory for version ``name`` and its open descriptor. It is
        locked from birth until the end: cleanup() leaves it alone while its publisher
        lives, and removes it once it is gone."""
        tmp = pdir / f"{_TMP_PREFIX}{name}-{secrets.token_hex(4)}"
        try:
            with self._locked(pdir):
                tmp.mkdir()
                tmp_fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
                fcntl.flock(tmp_fd, fcntl.LOCK_EX)
        except OSError as exc:
            raise PublishError(f"cannot publish {what}: {exc}") from exc
        return tmp, tmp_fd

    def _move_in(self, tmp: Path, pdir: Path, final: Path, what: str) -> None:
        """Make the filled ``tmp`` the version directory ``final`` of ``pdir``, durably."""
        fsync_tree(tmp)
        with self._locked(pdir):
            if final.exists():
                raise PublishError(f"{what} was published meanwhile; versions are never replaced")
            os.rename(tmp, final)
            fsync_dir(pdir)

    def _fill(
        self,
        tmp: Path,
        artifact: Path,
        *,
        kind: str,
        profile: str,
        version: int,
        base: str | None,
        info: Mapping[str, Any] | None,
    ) -> None:
        sub = "model" if kind == "full" else "adapter"
        shutil.copytree(artifact, tmp / sub, symlinks=False)
        if kind == "lora":
            _write_json(tmp / BASE_FILE, {"base": base})
        record = {
            "profile": profile,
            "version": version,
            "kind": kind,
            "base": base,
            "source": str(artifact),
            "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "info": dict(info or {}),
        }
        _write_json(tmp / VERSION_FILE, record)

    def activate(self, profile: str, version: int) -> None:
        """Point ``active`` at ``v<version>`` (atomic: a reader sees the old or the new)."""
        name = _version_name(version)
        pdir = self.profile_dir(profile)
        with self._locked(pdir):
            if not (pdir / name).is_dir():
                raise PublishError(
                    f"cannot activate {profile}/{name}: not published; published: "
                    f"{_listing(self.versions(profile))}"
                )
            link = pdir / f"{_LINK_PREFIX}{secrets.token_hex(4)}"
            try:
                os.symlink(name, link)
                os.replace(link, pdir / ACTIVE)
                fsync_dir(pdir)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    link.unlink()
                raise PublishError(f"cannot activate {profile}/{name}: {exc}") from exc
        log.info("activated a model version", profile=profile, version=version)

    def deactivate(self, profile: str) -> bool:
        """Remove the ``active`` link: no version is active. False when none was."""
        pdir = self.profile_dir(profile)
        with self._locked(pdir):
            try:
                (pdir / ACTIVE).unlink()
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise PublishError(f"cannot deactivate {profile}: {exc}") from exc
            fsync_dir(pdir)
        log.info("no model version active", profile=profile)
        return True

    def rollback(self, profile: str, to: int | None = None) -> int:
        """Activate ``to``, or the newest version older than the active one; returns it."""
        if to is None:
            to = previous_version(self.versions(profile), self.active(profile))
            if to is None:
                raise PublishError(f"profile {profile!r} has no version older than the active one")
        self.activate(profile, to)
        return to

    def remove(self, profile: str, version: int) -> None:
        """Delete a version; refuses the active one."""
        name = _version_name(version)
        pdir = self.profile_dir(profile)
        with self._locked(pdir):
            if self.active(profile) == version:
                raise PublishError(
                    f"{profile}/{name} is the active version; activate another one first"
                )
            if not (pdir / name).is_dir():
                raise PublishError(f"{profile}/{name} is not published")
            trash = pdir / f"{_TRASH_PREFIX}{name}-{secrets.token_hex(4)}"
            try:
                os.rename(pdir / name, trash)
                fsync_dir(pdir)
            except OSError as exc:
                raise PublishError(f"cannot remove {profile}/{name}: {exc}") from exc
        shutil.rmtree(trash, ignore_errors=True)
        log.info("removed a model version", profile=profile, version=version)

    def prune(self, profile: str, keep: int = DEFAULT_KEEP) -> list[int]:
        """Remove all but the newest ``keep`` versions (never the active one)."""
        doomed = plan_retention(self.versions(profile), self.active(profile), keep)
        for version in doomed:
            self.remove(profile, version)
        return doomed

    def cleanup(self, profile: str) -> list[str]:
        """Remove what interrupted publishes, activations and removals left behind.

        A temporary directory whose publisher still runs is left alone. Returns the
        names removed.
        """
        pdir = self.profile_dir(profile)
        if not pdir.is_dir():
            return []
        removed = []
        with self._locked(pdir):
            for entry in sorted(pdir.iterdir()):
                name = entry.name
                if name.startswith(_LINK_PREFIX) and entry.is_symlink():
                    entry.unlink(missing_ok=True)
                elif name.startswith(_TMP_PREFIX) and entry.is_dir():
                    if not _abandoned(entry):
                        continue
                    shutil.rmtree(entry, ignore_errors=True)
                elif name.startswith(_TRASH_PREFIX) and entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    continue
                removed.append(name)
            if removed:
                fsync_dir(pdir)
        if removed:
            log.info("cleaned up after interrupted publishing", profile=profile, removed=removed)
        return removed

    @contextlib.contextmanager
    def _locked(self, pdir: Path) -> Iterator[None]:
        pdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(pdir / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _abandoned(tmp: Path) -> bool:
    """True when no live publisher holds the temporary directory's lock."""
    try:
        fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise
    finally:
        os.close(fd)
    return True


def _version_name(version: int) -> str:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise PublishError(f"version must be a whole number from 1 up, got {version!r}")
    return f"v{version}"


def _listing(versions: list[int]) -> str:
    return ", ".join(f"v{v}" for v in versions) or "none"

"""The shape of the repository: services/ stands alone, no import cycles, and nothing
reads outside the repository (a clone is all CI and users have)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from tests.paths import FIXTURES, REPO

# A path into a sibling of the repository: "../shared", parent / "shared", shared/fixtures.
OUTSIDE = re.compile(r"""\.\./shared\b|["']shared["']\s*/|/\s*["']shared["']|\bshared/fixtures""")
SKIP_DIRS = {".git", ".venv", "build", "dist", "__pycache__", ".hypothesis", "state", "demo"}


@cache
def _code_shape() -> dict[str, Any]:
    spec = importlib.util.spec_from_file_location("code_shape", REPO / "bench" / "code_shape.py")
    assert spec is not None and spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result: dict[str, Any] = module.measure(top=10, module_lines=450)
    return result


def test_services_never_imports_daemon() -> None:
    assert _code_shape()["services_importing_daemon"] == []


def test_there_is_no_import_cycle() -> None:
    assert _code_shape()["import_cycles"] == []


def test_no_two_packages_import_each_other() -> None:
    assert _code_shape()["package_cycles"] == []


def _repository_files() -> list[Path]:
    """The files a clone has: git's tracked and not-ignored files, else a walk of the tree."""
    git = shutil.which("git")
    if git and (REPO / ".git").exists():
        listed = subprocess.run(
            [git, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        ).stdout.decode()
        return [REPO / name for name in listed.split("\0") if name]
    return [
        path
        for path in REPO.rglob("*")
        if not SKIP_DIRS & set(path.relative_to(REPO).parts)
        and not any(part.endswith(("_cache", ".egg-info")) for part in path.parts)
    ]


def test_nothing_reads_outside_the_repository() -> None:
    offenders = []
    for path in _repository_files():
        if not path.is_file() or path.is_symlink() or path.is_relative_to(FIXTURES):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        offenders += [
            f"{path.relative_to(REPO)}:{n}: {line.strip()}"
            for n, line in enumerate(text.splitlines(), 1)
            if OUTSIDE.search(line) and path != Path(__file__).resolve()
        ]
    assert offenders == []


def test_the_fixtures_are_in_the_repository_with_their_sources() -> None:
    for folder, sources in (
        ("chat_templates", "*.json"),
        ("metahuman", "SOURCES.json"),
        ("ollama_templates", "*.source.json"),
    ):
        assert any((FIXTURES / folder).glob(sources)), folder
    assert (FIXTURES / "README.md").is_file()

"""The configuration shipped with personad: the ``etc/`` tree (daemon settings, fine-tune
and per-mode configs, model-family schemas, curation rules, the general evaluation set).

It is package data: ``services/etc`` is a link to the repository's top-level ``etc/``, and
``pyproject.toml`` ships its files inside the ``services`` package, so an installed wheel
has them as well as a checkout. Both are found through :mod:`importlib.resources`.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def etc_dir() -> Path:
    """The shipped ``etc/`` directory."""
    return Path(str(files("services") / "etc")).resolve()

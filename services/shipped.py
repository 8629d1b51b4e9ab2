"""The configuration shipped with personad: the ``etc/`` tree (daemon settings, fine-tune
and per-mode configs, model-family schemas, curation rules, the general evaluation set).

It is package data: found through :mod:`importlib.resources`, so an installed wheel has it
as well as a checkout.
"""

from __future__ import annotations

from pathlib import Path


def etc_dir() -> Path:
    """The shipped ``etc/`` directory."""
    return Path(__file__).resolve().parents[1] / "etc"

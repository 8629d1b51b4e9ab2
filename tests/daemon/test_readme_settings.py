"""Every setting is in the README's configuration reference."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from services.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            keys += _keys(kind, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def test_every_setting_is_documented() -> None:
    documented = set(re.findall(r"^\| `([a-z_.]+)` \|", README.read_text(), flags=re.M))
    keys = _keys(Settings)
    assert len(keys) > 40
    assert sorted(set(keys) - documented) == []

"""Ollama model names: ``<prefix>-<profile>:v<N>`` and ``<prefix>-<profile>:latest``.

Ollama names are case-insensitive and allow letters, digits, ``_``, ``-`` and ``.``
(a part starts with a letter, digit or ``_``; at most 80 characters before the tag).
Profiles are normalised into that alphabet: lower case, accents dropped, every other
run of characters turned into one ``-``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

from services.publish.errors import PublishError

MAX_NAME_LENGTH = 80
LATEST_TAG = "latest"
_UNSAFE = re.compile(r"[^a-z0-9._-]+")
_DASHES = re.compile(r"-{2,}")
_VERSION_TAG = re.compile(r"^v([1-9][0-9]*)$")


def normalise_part(text: str, what: str = "profile") -> str:
    """``text`` as a lower-case Ollama name part; PublishError when nothing usable is left."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    part = _DASHES.sub("-", _UNSAFE.sub("-", ascii_text.strip().lower())).strip("-._")
    if not part:
        raise PublishError(
            f"{what} {text!r} has no letters or digits to use in an Ollama model name"
        )
    return part


def model_base(prefix: str, profile: str) -> str:
    """``<prefix>-<profile>``, both normalised; PublishError when it is too long."""
    base = f"{normalise_part(prefix, 'prefix')}-{normalise_part(profile)}"
    if len(base) > MAX_NAME_LENGTH:
        raise PublishError(
            f"Ollama model name {base!r} is longer than {MAX_NAME_LENGTH} characters; "
            "use a shorter profile name or ollama prefix"
        )
    return base


def version_tag(version: int) -> str:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise PublishError(f"version must be a whole number from 1 up, got {version!r}")
    return f"v{version}"


def parse_version_tag(tag: str) -> int | None:
    """``v3`` -> 3; anything else -> None."""
    match = _VERSION_TAG.match(tag)
    return int(match.group(1)) if match else None


def profile_versions(base: str, digests: Mapping[str, str]) -> dict[int, str]:
    """{version: digest} of the ``<base>:v<N>`` names among ``digests`` (name -> digest)."""
    found = {}
    for name, digest in digests.items():
        model, _, tag = name.partition(":")
        if model == base and (n := parse_version_tag(tag)) is not None:
            found[n] = digest
    return found

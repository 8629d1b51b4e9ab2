"""One pattern for profile names, used by the socket, the CLI and the folder scan.

A profile name is one folder name below ``profiles_dir``: 1 to 64 letters (any script),
digits, ``_``, ``-`` and ``.``, starting with a letter, digit or ``_``. So ``../alice``,
``/etc``, ``.hidden`` or a name with a space is never a profile.
"""

from __future__ import annotations

import re

from services.errors import PersonadError

MAX_PROFILE_NAME = 64
_PROFILE_NAME = re.compile(rf"\w[\w.-]{{0,{MAX_PROFILE_NAME - 1}}}")
RULE = (
    f"a profile name is one folder name of 1-{MAX_PROFILE_NAME} letters, digits, '_', '-' "
    "and '.', starting with a letter, digit or '_'"
)


class InvalidProfileName(PersonadError):
    """A profile name outside the pattern."""


def is_valid_profile_name(name: object) -> bool:
    return isinstance(name, str) and _PROFILE_NAME.fullmatch(name) is not None


def check_profile_name(name: str) -> str:
    """``name`` when it is a valid profile name; InvalidProfileName otherwise."""
    if not is_valid_profile_name(name):
        raise InvalidProfileName(f"invalid profile name {name!r}: {RULE}")
    return name

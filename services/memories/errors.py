"""Errors of the memories package."""

from __future__ import annotations

from services.errors import PersonadError


class MemoriesError(PersonadError):
    """Base of every error raised inside ``services.memories``."""


class RecordError(MemoriesError):
    """One record cannot be taken; the message says why, for a person.

    Raised by the field checks and the record parsers and turned into a
    :class:`~services.memories.model.Problem` by the container that holds the record,
    so it never leaves the package.
    """

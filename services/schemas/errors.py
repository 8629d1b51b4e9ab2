"""The one exception of the chat-schema package."""

from __future__ import annotations

from pathlib import Path

from services.errors import PersonadError


class SchemaError(PersonadError):
    """A schema file is invalid, a family is unknown, or a conversation cannot be rendered.

    ``path`` and ``key`` name the schema file and the offending key where there is one;
    the message always carries both.
    """

    def __init__(self, message: str, *, path: Path | str | None = None, key: str | None = None):
        self.path = Path(path) if path is not None else None
        self.key = key
        where = ""
        if self.path is not None:
            where = f"{self.path}: "
            if key is not None:
                where += f"key {key!r}: "
        elif key is not None:
            where = f"{key}: "
        super().__init__(where + message)

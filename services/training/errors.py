"""The training package's errors: one base, :class:`TrainingError`."""

from __future__ import annotations

from services.errors import PersonadError


class TrainingError(PersonadError):
    """Base of every error raised by ``services.training``."""


class TrainingConfigError(TrainingError):
    """A configuration value is invalid: ``source`` names the file or layer, ``key`` the key."""

    def __init__(self, message: str, *, source: str, key: str | None = None):
        super().__init__(f"{source}: {key}: {message}" if key else f"{source}: {message}")
        self.source = source
        self.key = key


class ModelInfoError(TrainingError):
    """The base model's size cannot be read (no such path, unreadable headers)."""


class BadInputError(TrainingError):
    """The run's input is unusable: dataset missing, empty, malformed or too small, or a base
    model that cannot be found. The training child exits with ``ExitCode.BAD_INPUT``."""

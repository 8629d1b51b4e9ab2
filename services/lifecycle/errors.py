"""The one exception of the lifecycle package."""

from __future__ import annotations

from services.errors import PersonadError


class LifecycleError(PersonadError):
    """A lifecycle setting (e.g. a cron expression) is invalid."""

"""The root of the daemon's own errors (see :mod:`services.errors` for the whole tree)."""

from __future__ import annotations

from services.errors import PersonadError


class DaemonError(PersonadError):
    """The daemon process, its control socket or its CLI failed."""

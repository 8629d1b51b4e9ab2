"""Which old versions to delete: all but the newest few, never the active one."""

from __future__ import annotations

from collections.abc import Iterable

DEFAULT_KEEP = 3


def plan_retention(
    versions: Iterable[int], active: int | None, keep: int = DEFAULT_KEEP
) -> list[int]:
    """The versions to delete (ascending): all but the newest ``keep``, never ``active``.

    The active version is kept even when it is older than the newest ``keep``; it then
    comes in addition to them.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    newest_first = sorted(set(versions), reverse=True)
    return sorted(v for v in newest_first[keep:] if v != active)


def previous_version(versions: Iterable[int], active: int | None) -> int | None:
    """The newest version older than ``active`` (what a plain rollback goes back to)."""
    if active is None:
        return None
    older = [v for v in versions if v < active]
    return max(older) if older else None

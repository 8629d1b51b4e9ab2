"""Which versions retention deletes."""

from __future__ import annotations

import pytest

from services.publish import plan_retention, previous_version


def test_all_but_the_newest_k_go() -> None:
    assert plan_retention([1, 2, 3, 4, 5], active=5, keep=3) == [1, 2]
    assert plan_retention([5, 3, 1, 4, 2], active=None, keep=2) == [1, 2, 3]


def test_the_active_version_is_never_deleted() -> None:
    assert plan_retention([1, 2, 3, 4, 5, 6], active=1, keep=3) == [2, 3]
    assert plan_retention([1, 2, 3, 4], active=2, keep=1) == [1, 3]


def test_nothing_goes_while_there_are_few_versions() -> None:
    assert plan_retention([], active=None) == []
    assert plan_retention([1, 2, 3], active=1) == []


def test_keep_must_leave_at_least_one() -> None:
    with pytest.raises(ValueError, match="keep must be at least 1"):
        plan_retention([1, 2], active=2, keep=0)


def test_rollback_goes_to_the_newest_older_version() -> None:
    assert previous_version([1, 3, 4, 7], active=7) == 4
    assert previous_version([1, 3, 4, 7], active=4) == 3
    assert previous_version([2, 3], active=2) is None
    assert previous_version([2, 3], active=None) is None

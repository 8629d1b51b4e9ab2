"""When a schedule fires, and which schedule run to catch up on after downtime."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from services.lifecycle.errors import LifecycleError


def cron_trigger(expr: str, timezone: str | None = None) -> Any:
    """An APScheduler CronTrigger from a crontab line; a sixth leading field is seconds."""
    from apscheduler.triggers.cron import CronTrigger

    fields = expr.split()
    try:
        if len(fields) == 5:
            return CronTrigger.from_crontab(expr, timezone=timezone)
        if len(fields) == 6:
            second, minute, hour, day, month, dow = fields
            return CronTrigger(
                second=second,
                minute=minute,
                hour=hour,
                day=day,
                month=month,
                day_of_week=dow,
                timezone=timezone,
            )
    except (ValueError, LookupError) as exc:
        raise LifecycleError(f"invalid schedule {expr!r}: {exc}") from exc
    raise LifecycleError(
        f"invalid schedule {expr!r}: expected 5 crontab fields (or 6 with seconds first)"
    )


def missed_fire(
    trigger: Any, last_run: datetime | None, now: datetime, grace: timedelta
) -> datetime | None:
    """The fire time to catch up on at start-up, or None.

    The most recent fire time in (now - grace, now] that is later than the last
    recorded run; with no recorded run there is nothing to catch up on.
    """
    if last_run is None:
        return None
    start = max(now - grace, last_run)
    found: datetime | None = None
    t = trigger.get_next_fire_time(None, start)
    while t is not None and t <= now:
        if t > last_run:
            found = t
        t = trigger.get_next_fire_time(t, t + timedelta(microseconds=1))
    return found

"""Budget periods, calendar-aligned in UTC, named so ledger keys carry them.

A period's id goes into its ledger keys (`m202611` for November 2026), so a new period starts
at zero by itself: no cron, no reset job. `None` is one period for ever.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache


class Period(StrEnum):
    NONE = "None"
    DAILY = "Daily"
    WEEKLY = "Weekly"  # ISO weeks: Monday 00:00 UTC to the next Monday
    MONTHLY = "Monthly"


@dataclass(frozen=True)
class Window:
    id: str
    start: dt.datetime | None  # None for Period.NONE
    end: dt.datetime | None


def window(period: Period | str, now: dt.datetime) -> Window:
    """The period that contains `now`."""
    if now.tzinfo is None:
        raise ValueError("naive datetime: pass an aware UTC time")
    return _window(Period(period), int(now.timestamp()))


@lru_cache(maxsize=256)
def _window(period: Period, epoch_second: int) -> Window:
    """Cached per second: the ledger asks for the same window thousands of times a second."""
    now = dt.datetime.fromtimestamp(epoch_second, dt.UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period is Period.NONE:
        return Window("all", None, None)
    if period is Period.DAILY:
        return Window(f"d{midnight:%Y%m%d}", midnight, midnight + dt.timedelta(days=1))
    if period is Period.WEEKLY:
        start = midnight - dt.timedelta(days=midnight.weekday())
        return Window(f"w{start:%Y%m%d}", start, start + dt.timedelta(days=7))
    start = midnight.replace(day=1)
    end = (start + dt.timedelta(days=32)).replace(day=1)
    return Window(f"m{start:%Y%m}", start, end)


def day_id(now: dt.datetime) -> str:
    """UTC day of `now`, as usage records name it: `20261127`."""
    if now.tzinfo is None:
        raise ValueError("naive datetime: pass an aware UTC time")
    return _day(int(now.timestamp()) // 86400)


@lru_cache(maxsize=64)
def _day(epoch_day: int) -> str:
    return f"{dt.datetime.fromtimestamp(epoch_day * 86400, dt.UTC):%Y%m%d}"

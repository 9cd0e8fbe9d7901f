"""Durations (Go-style + days) and calendar-aligned UTC periods."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aikeys.durations import MAX_TTL, DurationError, bounded, format_duration, parse_duration
from aikeys.periods import Period, day_id, window

UTC = dt.UTC


def test_durations() -> None:
    assert parse_duration("720h") == dt.timedelta(hours=720)
    assert parse_duration("30d") == dt.timedelta(days=30)
    assert parse_duration("1h30m") == dt.timedelta(minutes=90)
    assert parse_duration("1.5h") == dt.timedelta(minutes=90)
    assert parse_duration("250ms") == dt.timedelta(milliseconds=250)
    assert format_duration(dt.timedelta(minutes=90)) == "1h30m"


@pytest.mark.parametrize("bad", ["", "10", "h", "-1h", "1y", "1 h", "1h 30m", "P1D"])
def test_bad_durations(bad: str) -> None:
    with pytest.raises(DurationError, match="is not a duration"):
        parse_duration(bad)


@given(st.integers(min_value=1, max_value=10**8))
def test_duration_round_trip(seconds: int) -> None:
    delta = dt.timedelta(seconds=seconds)
    assert parse_duration(format_duration(delta)) == delta


def test_period_examples() -> None:
    now = dt.datetime(2026, 11, 27, 21, 38, tzinfo=UTC)  # a Friday
    assert window(Period.NONE, now).id == "all"
    d = window(Period.DAILY, now)
    assert (d.id, d.start, d.end) == (
        "d20261127",
        dt.datetime(2026, 11, 27, tzinfo=UTC),
        dt.datetime(2026, 11, 28, tzinfo=UTC),
    )
    w = window(Period.WEEKLY, now)
    assert (w.id, w.start, w.end) == (
        "w20261123",
        dt.datetime(2026, 11, 23, tzinfo=UTC),
        dt.datetime(2026, 11, 30, tzinfo=UTC),
    )
    m = window(Period.MONTHLY, now)
    assert (m.id, m.end) == ("m202611", dt.datetime(2026, 12, 1, tzinfo=UTC))
    assert window(Period.MONTHLY, dt.datetime(2026, 12, 31, 23, 59, tzinfo=UTC)).end == dt.datetime(
        2027, 1, 1, tzinfo=UTC
    )
    assert day_id(now) == "20261127"


def test_period_uses_utc_not_local_offsets() -> None:
    tokyo = dt.timezone(dt.timedelta(hours=9))
    now = dt.datetime(2026, 12, 1, 5, 0, tzinfo=tokyo)  # still 30 Nov in UTC
    assert window(Period.MONTHLY, now).id == "m202611"
    with pytest.raises(ValueError, match="naive"):
        window(Period.DAILY, dt.datetime(2026, 1, 1))


@given(
    st.datetimes(
        min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    st.sampled_from([Period.DAILY, Period.WEEKLY, Period.MONTHLY]),
)
def test_windows_contain_now_and_tile_time(now: dt.datetime, period: Period) -> None:
    w = window(period, now)
    assert w.start is not None and w.end is not None
    assert w.start <= now < w.end
    assert w.start.hour == w.start.minute == w.start.second == 0
    nxt = window(period, w.end)
    assert nxt.start == w.end  # periods tile: no gap, no overlap
    assert nxt.id != w.id
    assert window(period, w.end - dt.timedelta(microseconds=1)).id == w.id


def test_bounded_durations() -> None:
    assert bounded("36500d", MAX_TTL, "spec.ttl") == dt.timedelta(days=36500)
    with pytest.raises(DurationError, match=r"^spec.ttl must be at most 36500d, not '1000000000h'$"):
        bounded("1000000000h", MAX_TTL, "spec.ttl")
    with pytest.raises(DurationError, match=r"spec\.ttl must be at most 36500d"):
        bounded("99999999999999999999d", MAX_TTL, "spec.ttl")  # beyond timedelta itself
    with pytest.raises(DurationError, match=r"^spec\.ttl: 'soon' is not a duration"):
        bounded("soon", MAX_TTL, "spec.ttl")

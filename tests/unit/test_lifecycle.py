"""Expiry, phase, rotation grace."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from aikeys.lifecycle import accepts, expiry, next_deadline, phase
from aikeys.resources import AIKeySpec, AIKeyStatus, KeyPhase, LocalRef

T0 = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
H1 = dt.timedelta(hours=1)


def spec(**kw: object) -> AIKeySpec:
    return AIKeySpec(allocation_ref=LocalRef(name="a"), **kw)


def test_expiry_from_ttl_or_timestamp() -> None:
    assert expiry(spec(ttl="720h"), T0) == T0 + dt.timedelta(days=30)
    assert expiry(spec(expires_at=T0 + H1), T0 - H1) == T0 + H1
    assert expiry(spec(), T0) is None


def test_phases() -> None:
    st = AIKeyStatus(key_hash="a" * 64, expires_at=T0 + H1)
    assert phase(spec(), AIKeyStatus(), T0) is KeyPhase.PENDING
    assert phase(spec(), st, T0) is KeyPhase.ACTIVE
    assert phase(spec(), st, T0 + H1) is KeyPhase.EXPIRED
    assert phase(spec(disabled=True), st, T0) is KeyPhase.DISABLED


def test_rotation_grace() -> None:
    st = AIKeyStatus(key_hash="b" * 64, previous_key_hash="c" * 64, previous_key_valid_until=T0 + H1)
    assert accepts(spec(), st, "b" * 64, T0)
    assert accepts(spec(), st, "c" * 64, T0)
    assert not accepts(spec(), st, "c" * 64, T0 + H1)
    assert accepts(spec(), st, "b" * 64, T0 + H1)
    assert not accepts(spec(), st, "d" * 64, T0)
    assert not accepts(spec(disabled=True), st, "b" * 64, T0)
    assert next_deadline(spec(), st, T0) == T0 + H1


@given(st.integers(min_value=-(10**6), max_value=10**6), st.integers(min_value=1, max_value=10**6))
def test_accepts_exactly_until_expiry(offset: int, ttl_seconds: int) -> None:
    status = AIKeyStatus(key_hash="e" * 64, expires_at=T0 + dt.timedelta(seconds=ttl_seconds))
    now = T0 + dt.timedelta(seconds=offset)
    assert accepts(spec(), status, "e" * 64, now) == (offset < ttl_seconds)
    deadline = next_deadline(spec(), status, now)
    assert (deadline is not None) == (offset < ttl_seconds)

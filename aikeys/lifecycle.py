"""A key's life in time: expiry, phase and rotation grace, as pure functions.

The operator uses these to set `status.phase` and schedule its next look; the gateway uses
`accepts` on every request, so a key stops working at its expiry to the second, whatever the
operator is doing.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

from aikeys.durations import parse_duration
from aikeys.resources import AIKeySpec, AIKeyStatus, KeyPhase


class AcceptsSpec(Protocol):
    """What `accepts` reads of a key's spec (the gateway keeps a slim copy, not AIKeySpec)."""

    @property
    def disabled(self) -> bool: ...


class AcceptsStatus(Protocol):
    """What `accepts` reads of a key's status."""

    @property
    def key_hash(self) -> str | None: ...
    @property
    def expires_at(self) -> dt.datetime | None: ...
    @property
    def previous_key_hash(self) -> str | None: ...
    @property
    def previous_key_valid_until(self) -> dt.datetime | None: ...


def expiry(spec: AIKeySpec, created_at: dt.datetime) -> dt.datetime | None:
    """`spec.expiresAt`, else creation + `spec.ttl`, else None (never)."""
    if spec.expires_at is not None:
        return spec.expires_at
    if spec.ttl is not None:
        return created_at + parse_duration(spec.ttl)
    return None


def phase(spec: AIKeySpec, status: AIKeyStatus, now: dt.datetime) -> KeyPhase:
    if status.key_hash is None:
        return KeyPhase.PENDING
    if spec.disabled:
        return KeyPhase.DISABLED
    if status.expires_at is not None and status.expires_at <= now:
        return KeyPhase.EXPIRED
    return KeyPhase.ACTIVE


def previous_key_valid(status: AcceptsStatus, now: dt.datetime) -> bool:
    return (
        status.previous_key_hash is not None
        and status.previous_key_valid_until is not None
        and now < status.previous_key_valid_until
    )


def next_deadline(spec: AIKeySpec, status: AIKeyStatus, now: dt.datetime) -> dt.datetime | None:
    """The next moment the key's state changes by itself (expiry, end of a grace period)."""
    moments = []
    if status.expires_at is not None and status.expires_at > now and not spec.disabled:
        moments.append(status.expires_at)
    if status.previous_key_valid_until is not None and status.previous_key_hash is not None:
        moments.append(status.previous_key_valid_until)
    return min(moments) if moments else None


def accepts(spec: AcceptsSpec, status: AcceptsStatus, key_hash: str, now: dt.datetime) -> bool:
    """Whether a request carrying a key with this hash is let in right now."""
    if spec.disabled or status.key_hash is None:
        return False
    if status.expires_at is not None and status.expires_at <= now:
        return False
    if key_hash == status.key_hash:
        return True
    return key_hash == status.previous_key_hash and previous_key_valid(status, now)

"""The API objects' specs as the ledger takes them: an Allocation's budget, period, token limit
and rate limits, and any rate limits (an AIKey's, a model's).

One conversion for the gateway (which reserves against it: the rate limits matter there) and the
operator (which reads and restores the period's counters: it carries the same values, so both
speak of the same allocation).
"""

from __future__ import annotations

from aikeys.durations import parse_duration
from aikeys.ledger.store import Allocation, RateLimit
from aikeys.money import parse_usd
from aikeys.resources import AllocationSpec, RateLimits


def rate_limit(limits: RateLimits | None) -> RateLimit | None:
    """An API object's rate limits (None: unlimited); the window in whole milliseconds, at least 1."""
    if limits is None:
        return None
    window_ms = max(int(parse_duration(limits.window).total_seconds() * 1000), 1)
    return RateLimit(limits.requests, limits.tokens, window_ms)


def allocation(namespace: str, name: str, spec: AllocationSpec) -> Allocation:
    """An Allocation as the ledger reserves, settles and reports against it."""
    return Allocation(
        namespace, name, parse_usd(spec.budget), spec.period, spec.token_limit, rate_limit(spec.limits)
    )

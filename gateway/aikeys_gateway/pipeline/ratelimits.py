"""Rate-limit headers as OpenAI sends them, and the 429 that the SDKs' own backoff understands.

Every metered response of a request that met a limit carries `x-ratelimit-limit-requests`,
`x-ratelimit-remaining-requests`, `x-ratelimit-reset-requests` (and the `-tokens` three) for the
tightest scope (allocation, key or model); a refused request gets 429 with `retry-after` (whole
seconds) and `retry-after-ms`, which the OpenAI SDKs wait for before they retry.
"""

from __future__ import annotations

import math

from aikeys.ledger.store import RateState, ReserveStatus
from aikeys_gateway import errors


def duration(ms: int) -> str:
    """OpenAI's reset format: "120ms", "1.5s", "6m0s"."""
    if ms < 1000:
        return f"{max(ms, 0)}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:g}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest}s"


def headers(state: RateState) -> dict[str, str]:
    out: dict[str, str] = {}
    if state.limit_requests >= 0:
        out["x-ratelimit-limit-requests"] = str(state.limit_requests)
        out["x-ratelimit-remaining-requests"] = str(max(state.remaining_requests, 0))
        out["x-ratelimit-reset-requests"] = duration(state.reset_ms)
    if state.limit_tokens >= 0:
        out["x-ratelimit-limit-tokens"] = str(state.limit_tokens)
        out["x-ratelimit-remaining-tokens"] = str(max(state.remaining_tokens, 0))
        out["x-ratelimit-reset-tokens"] = duration(state.reset_ms)
    return out


def limited(state: RateState, status: ReserveStatus, scope: str, bound_tokens: int) -> errors.GatewayError:
    """429 for a request over a rate limit (`scope`: "allocation ns/name", "key …", "model …")."""
    what = "requests" if status is ReserveStatus.RATE_LIMITED_REQUESTS else "tokens"
    limit = state.limit_requests if what == "requests" else state.limit_tokens
    never = what == "tokens" and 0 <= limit < bound_tokens
    message = f"Rate limit reached for {scope}: {limit} {what} per window. " + (
        f"This request may use up to {bound_tokens} tokens, more than the whole limit: lower "
        "max_tokens or the input."
        if never
        else f"Retry in {duration(state.reset_ms)}."
    )
    extra = headers(state) | {
        "retry-after": str(max(math.ceil(state.reset_ms / 1000), 1)),
        "retry-after-ms": str(max(state.reset_ms, 1)),
        "x-should-retry": "false" if never else "true",
    }
    return errors.GatewayError(429, message, "requests", "rate_limit_exceeded", headers=extra)

"""Rate limits in the ledger, on a real redis-server: fixed windows in Redis's clock, checked in
the same script call as the budget (allocation and key) or in their own (a model's)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aikeys_dev.devstack.redis import RedisServer

from aikeys.ledger.store import Allocation, Estimate, Ledger, RateLimit, ReserveStatus, connect
from aikeys.periods import Period

pytestmark = pytest.mark.integration
BIG = 10**15


@pytest_asyncio.fixture
async def ledger(redis_server: RedisServer) -> AsyncIterator[Ledger]:
    client = connect(redis_server.url)
    yield Ledger(client)
    await client.aclose()


def alloc(limits: RateLimit | None = None) -> Allocation:
    return Allocation("rl", f"a-{uuid.uuid4().hex[:8]}", BIG, Period.MONTHLY, None, limits)


def rid() -> str:
    return uuid.uuid4().hex


async def test_requests_beyond_the_window_limit_are_refused_with_the_numbers(ledger: Ledger) -> None:
    a = alloc(RateLimit(requests=3, tokens=None))
    outcomes = [await ledger.reserve(a, rid(), "k", "m", Estimate(1, 1, 1)) for _ in range(5)]
    assert [o.status for o in outcomes] == [ReserveStatus.RESERVED] * 3 + [
        ReserveStatus.RATE_LIMITED_REQUESTS
    ] * 2
    assert [o.rate.remaining_requests for o in outcomes[:3]] == [2, 1, 0]
    refused = outcomes[-1].rate
    assert (refused.limit_requests, refused.remaining_requests) == (3, 0)
    assert 0 < refused.reset_ms <= 60_000
    assert (await ledger.period_state(a)).reserved == 3  # a refused request holds nothing


async def test_tokens_count_at_their_bound_and_come_back_at_settle(ledger: Ledger) -> None:
    a = alloc(RateLimit(requests=None, tokens=100))
    first = rid()
    assert (await ledger.reserve(a, first, "k", "m", Estimate(1, 20, 40))).accepted  # bound 60
    second = await ledger.reserve(a, rid(), "k", "m", Estimate(1, 20, 40))
    assert second.status is ReserveStatus.RATE_LIMITED_TOKENS
    assert (second.rate.limit_tokens, second.rate.remaining_tokens) == (100, 40)
    await ledger.settle(a, first, "k", "m", 5, 5, 1)  # used 10 of its 60
    assert (await ledger.reserve(a, rid(), "k", "m", Estimate(1, 20, 40))).accepted  # 10 + 60 <= 100


async def test_a_release_gives_its_share_back(ledger: Ledger) -> None:
    a = alloc(RateLimit(requests=1, tokens=None))
    r = rid()
    assert (await ledger.reserve(a, r, "k", "m", Estimate(1, 1, 1))).accepted
    assert not (await ledger.reserve(a, rid(), "k", "m", Estimate(1, 1, 1))).accepted
    await ledger.release(a, r)
    assert (await ledger.reserve(a, rid(), "k", "m", Estimate(1, 1, 1))).accepted


async def test_keys_have_their_own_windows(ledger: Ledger) -> None:
    a = alloc()
    per_key = RateLimit(requests=2, tokens=None)
    for key in ("alice", "bob"):
        got = [
            await ledger.reserve(a, rid(), key, "m", Estimate(1, 1, 1), key_limits=per_key) for _ in range(3)
        ]
        assert [o.accepted for o in got] == [True, True, False]
        assert got[-1].status is ReserveStatus.RATE_LIMITED_REQUESTS


async def test_a_new_window_admits_again(ledger: Ledger) -> None:
    a = alloc(RateLimit(requests=1, tokens=None, window_ms=400))
    outcomes = [await ledger.reserve(a, rid(), "k", "m", Estimate(1, 1, 1)) for _ in range(3)]
    # one admitted a window (two, if the calls straddled a window's end), then refused
    refused = next(o for o in outcomes if not o.accepted)
    assert refused.rate.reset_ms <= 400
    await asyncio.sleep(refused.rate.reset_ms / 1000 + 0.05)
    assert (await ledger.reserve(a, rid(), "k", "m", Estimate(1, 1, 1))).accepted


async def test_a_models_window_is_its_own_call(ledger: Ledger) -> None:
    scope = f"aikeys:{{model/rl/p/{uuid.uuid4().hex[:6]}}}:rl"
    limit = RateLimit(requests=2, tokens=50)
    first = await ledger.admit_rate(scope, limit, 30)
    assert first.admitted and first.state.remaining_requests == 1 and first.state.remaining_tokens == 20
    over = await ledger.admit_rate(scope, limit, 30)
    assert not over.admitted and over.status is ReserveStatus.RATE_LIMITED_TOKENS
    await ledger.adjust_rate(scope, first.window_start, 0, -25)  # it used 5 of its 30
    assert (await ledger.admit_rate(scope, limit, 30)).admitted


async def test_exactly_the_limit_is_admitted_across_two_clients(redis_server: RedisServer) -> None:
    clients = [connect(redis_server.url, max_connections=64) for _ in range(2)]
    ledgers = [Ledger(c) for c in clients]
    a = alloc(RateLimit(requests=25, tokens=None))
    try:
        outcomes = await asyncio.gather(
            *(ledgers[i % 2].reserve(a, rid(), "k", "m", Estimate(1, 1, 1)) for i in range(80))
        )
    finally:
        for c in clients:
            await c.aclose()
    assert sum(o.accepted for o in outcomes) == 25
    assert {o.status for o in outcomes if not o.accepted} == {ReserveStatus.RATE_LIMITED_REQUESTS}

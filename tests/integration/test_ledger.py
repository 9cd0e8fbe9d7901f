"""The ledger's scripts on a real redis-server: budgets hold, charges are never lost or doubled."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from aikeys_dev.devstack.redis import RedisServer

from aikeys.ledger.meter import Meter, PendingSettle
from aikeys.ledger.store import (
    MAX_AMOUNT,
    Allocation,
    Changes,
    Estimate,
    KeyLabel,
    KeyUse,
    Ledger,
    PeriodState,
    RateLimit,
    ReserveStatus,
    RestoreOutcome,
    SettleStatus,
    connect,
    pipelined,
)
from aikeys.periods import Period, window

pytestmark = pytest.mark.integration

NOV = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC).timestamp()


class Clock:
    def __init__(self, t: float = NOV):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, **kw: float) -> None:
        self.t += dt.timedelta(**kw).total_seconds()


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    c = connect(redis_server.url)
    assert isinstance(c, aioredis.Redis)
    yield c
    await c.aclose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["redis-py", "pipelined"])
async def ledger(
    request: pytest.FixtureRequest, redis_server: RedisServer, client: aioredis.Redis, clock: Clock
) -> AsyncIterator[Ledger]:
    """Every test twice: the scripts through redis-py's pool (the operator's way) and over the
    pipelined connection (the gateway's)."""
    wire = pipelined(redis_server.url) if request.param == "pipelined" else None
    yield Ledger(client, clock=clock, pipelined=wire)
    if wire is not None:
        await wire.close()


def alloc(budget: int, period: Period = Period.MONTHLY, token_limit: int | None = None) -> Allocation:
    return Allocation("team-a", f"alloc-{uuid.uuid4().hex[:8]}", budget, period, token_limit)


def rid() -> str:
    return uuid.uuid4().hex


async def test_reserve_then_settle_charges_actual_and_frees_the_reservation(ledger: Ledger) -> None:
    a = alloc(1000)
    r = rid()
    outcome = await ledger.reserve(a, r, "alice", "ns:p/m", Estimate(300, 10, 20))
    assert outcome.status is ReserveStatus.RESERVED
    assert (outcome.spent, outcome.reserved) == (0, 300)
    settled = await ledger.settle(a, r, "alice", "ns:p/m", 10, 5, 120)
    assert settled.status is SettleStatus.CHARGED
    assert (settled.spent, settled.reserved) == (120, 0)
    assert await ledger.period_state(a) == PeriodState(
        spent=120, reserved=0, tokens=15, reserved_tokens=0, requests=1, exists=True
    )
    [row] = await ledger.usage(a, ["20261127"])
    assert (row.key, row.model, row.requests, row.input_tokens, row.output_tokens, row.cost) == (
        "alice",
        "ns:p/m",
        1,
        10,
        5,
        120,
    )
    assert (await ledger.last_used(a))["alice"] == dt.datetime.fromtimestamp(NOV, dt.UTC)
    assert await ledger.key_spend(a) == {"alice": 120}


async def test_usage_records_cached_and_cache_write_tokens_apart(ledger: Ledger) -> None:
    """Cache reads and cache writes are parts of the input tokens: the usage record shows them
    beside input/output tokens and sums them per day × key × model; the period's token total
    (what token limits count) stays input + output."""
    a = alloc(1000)
    r = rid()
    await ledger.reserve(a, r, "alice", "m", Estimate(300, 100, 20))
    settled = await ledger.settle(a, r, "alice", "m", 100, 5, 120, cached_tokens=60, cache_write_tokens=30)
    assert settled.status is SettleStatus.CHARGED
    await ledger.settle(a, rid(), "alice", "m", 50, 5, 40, cached_tokens=40)  # no reservation
    await ledger.settle(a, rid(), "bob", "m", 10, 1, 5)  # no cache at all
    rows = {row.key: row for row in await ledger.usage(a, ["20261127"])}
    alice = rows["alice"]
    assert (alice.requests, alice.input_tokens, alice.output_tokens, alice.cost) == (2, 150, 10, 160)
    assert (alice.cached_tokens, alice.cache_write_tokens) == (100, 30)
    assert (rows["bob"].cached_tokens, rows["bob"].cache_write_tokens) == (0, 0)
    assert (await ledger.period_state(a)).tokens == 150 + 10 + 11
    # a duplicate settle counts nothing twice
    dup = await ledger.settle(a, r, "alice", "m", 100, 5, 120, cached_tokens=60, cache_write_tokens=30)
    assert dup.status is SettleStatus.DUPLICATE
    again = {row.key: row for row in await ledger.usage(a, ["20261127"])}
    assert (again["alice"].cached_tokens, again["alice"].cache_write_tokens) == (100, 30)


async def test_meter_settles_cached_tokens_through(ledger: Ledger) -> None:
    """What the gateway hands the meter (a PendingSettle) reaches the usage record whole."""
    a = alloc(1000)
    pending = PendingSettle(a, rid(), "alice", "m", 80, 4, 30, KeyLabel("k", "alice"), 50, 20)
    assert (await Meter(ledger).settle(pending)) is not None
    [row] = await ledger.usage(a, ["20261127"])
    assert (row.input_tokens, row.cached_tokens, row.cache_write_tokens) == (80, 50, 20)


async def test_usage_records_from_before_cached_tokens_read_zero(
    ledger: Ledger, client: aioredis.Redis
) -> None:
    """A day's record written before the ledger kept cache figures (no `cin`/`cwr` fields) reads
    0 cached and 0 cache-write tokens, and a later settle adds to it."""
    a = alloc(1000)
    await client.hset(
        a.keys.usage("20261127"), mapping={"old|m|req": 2, "old|m|in": 7, "old|m|out": 3, "old|m|cost": 9}
    )
    [row] = await ledger.usage(a, ["20261127"])
    assert (row.requests, row.input_tokens, row.cached_tokens, row.cache_write_tokens) == (2, 7, 0, 0)
    await ledger.settle(a, rid(), "old", "m", 10, 1, 1, cached_tokens=4, cache_write_tokens=2)
    [row] = await ledger.usage(a, ["20261127"])
    assert (row.requests, row.input_tokens, row.cached_tokens, row.cache_write_tokens) == (3, 17, 4, 2)


async def test_settle_refuses_negative_cached_tokens(ledger: Ledger) -> None:
    a = alloc(1000)
    with pytest.raises(ValueError, match="cached tokens"):
        await ledger.settle(a, rid(), "k", "m", 10, 1, 1, cached_tokens=-1)
    with pytest.raises(ValueError, match="cache write tokens"):
        await ledger.settle(a, rid(), "k", "m", 10, 1, 1, cache_write_tokens=-1)
    assert await ledger.usage(a, ["20261127"]) == []


async def test_over_budget_is_refused_and_holds_nothing(ledger: Ledger) -> None:
    a = alloc(1000)
    assert (await ledger.reserve(a, rid(), "k", "m", Estimate(600, 1, 1))).accepted
    refused = await ledger.reserve(a, rid(), "k", "m", Estimate(401, 1, 1))
    assert refused.status is ReserveStatus.OVER_BUDGET
    assert not refused.accepted
    assert (await ledger.period_state(a)).reserved == 600
    assert (await ledger.reserve(a, rid(), "k", "m", Estimate(400, 1, 1))).accepted  # exactly fits


async def test_settle_above_the_estimate_charges_the_actual_cost(ledger: Ledger) -> None:
    a = alloc(1000)
    r = rid()
    await ledger.reserve(a, r, "k", "m", Estimate(100, 1, 1))
    assert (await ledger.settle(a, r, "k", "m", 1, 50, 700)).spent == 700


async def test_settle_is_idempotent_under_replay(ledger: Ledger) -> None:
    a = alloc(10_000)
    r = rid()
    await ledger.reserve(a, r, "k", "m", Estimate(500, 1, 1))
    first = await ledger.settle(a, r, "k", "m", 3, 4, 250)
    for _ in range(3):
        again = await ledger.settle(a, r, "k", "m", 3, 4, 250)
        assert again.status is SettleStatus.DUPLICATE
    assert first.status is SettleStatus.CHARGED
    state = await ledger.period_state(a)
    assert (state.spent, state.requests, state.reserved) == (250, 1, 0)
    assert (await ledger.usage(a, ["20261127"]))[0].requests == 1
    # a settled request id cannot reserve again
    assert (await ledger.reserve(a, r, "k", "m", Estimate(1, 1, 1))).status is ReserveStatus.ALREADY_SETTLED


async def test_reserve_retry_with_the_same_id_holds_once(ledger: Ledger) -> None:
    a = alloc(1000)
    r = rid()
    await ledger.reserve(a, r, "k", "m", Estimate(600, 1, 1))
    retry = await ledger.reserve(a, r, "k", "m", Estimate(600, 1, 1))
    assert retry.status is ReserveStatus.ALREADY_RESERVED
    assert retry.accepted
    assert (await ledger.period_state(a)).reserved == 600


async def test_release_returns_the_reservation_once(ledger: Ledger) -> None:
    a = alloc(1000)
    r = rid()
    await ledger.reserve(a, r, "k", "m", Estimate(900, 1, 1))
    assert await ledger.release(a, r) is True
    assert await ledger.release(a, r) is False
    state = await ledger.period_state(a)
    assert (state.reserved, state.spent, state.reserved_tokens) == (0, 0, 0)


async def test_release_leaves_a_tombstone(ledger: Ledger, client: aioredis.Redis) -> None:
    a = alloc(1000)
    r = rid()
    await ledger.reserve(a, r, "k", "m", Estimate(900, 1, 1))
    assert await ledger.release(a, r) is True
    assert str(await client.get(a.keys.done(r))).startswith("released|")
    assert 0 < await client.ttl(a.keys.done(r)) <= 7 * 86400  # kept as long as settled markers
    # a retry of the reserve that Redis runs after the release is refused
    late = await ledger.reserve(a, r, "k", "m", Estimate(900, 1, 1))
    assert late.status is ReserveStatus.ALREADY_SETTLED
    # a settle after the release charges nothing
    assert (await ledger.settle(a, r, "k", "m", 1, 1, 500)).status is SettleStatus.DUPLICATE
    assert await ledger.release(a, r) is False
    state = await ledger.period_state(a)
    assert (state.reserved, state.spent, state.requests, state.reserved_tokens) == (0, 0, 0, 0)
    assert await ledger.usage(a, ["20261127"]) == []


async def test_release_before_the_reserve_arrives_refuses_it(ledger: Ledger) -> None:
    a = alloc(1000)
    r = rid()
    assert await ledger.release(a, r) is False  # nothing held yet: the reserve is still on its way
    assert (await ledger.reserve(a, r, "k", "m", Estimate(10, 1, 1))).status is ReserveStatus.ALREADY_SETTLED
    assert (await ledger.period_state(a)).reserved == 0


async def test_release_keeps_settled_and_reaped_markers(ledger: Ledger, clock: Clock) -> None:
    a = alloc(1000)
    settled, reaped = rid(), rid()
    await ledger.reserve(a, settled, "k", "m", Estimate(100, 1, 1))
    await ledger.settle(a, settled, "k", "m", 1, 1, 60)
    assert await ledger.release(a, settled) is False
    assert (await ledger.settle(a, settled, "k", "m", 1, 1, 60)).status is SettleStatus.DUPLICATE
    await ledger.reserve(a, reaped, "k", "m", Estimate(300, 1, 1))
    clock.advance(minutes=11)
    await ledger.reserve(a, rid(), "k", "m", Estimate(1, 1, 1))  # reaps: charged 300
    assert await ledger.release(a, reaped) is False
    # the late settle still corrects the reaped charge to the actual cost
    assert (await ledger.settle(a, reaped, "k", "m", 1, 1, 40)).status is SettleStatus.CORRECTED
    assert (await ledger.period_state(a)).spent == 100


async def test_settle_without_reservation_still_charges(ledger: Ledger) -> None:
    a = alloc(1000)
    assert (await ledger.settle(a, rid(), "k", "m", 1, 1, 42)).status is SettleStatus.CHARGED
    assert (await ledger.period_state(a)).spent == 42


async def test_token_limit(ledger: Ledger) -> None:
    a = alloc(10**12, token_limit=100)
    r = rid()
    assert (await ledger.reserve(a, r, "k", "m", Estimate(1, 30, 40))).accepted
    refused = await ledger.reserve(a, rid(), "k", "m", Estimate(1, 20, 11))
    assert refused.status is ReserveStatus.OVER_TOKEN_LIMIT
    await ledger.settle(a, r, "k", "m", 30, 10, 1)  # used 40 of the 70 it held
    assert (await ledger.reserve(a, rid(), "k", "m", Estimate(1, 30, 30))).accepted


async def test_expired_lease_is_charged_at_its_estimate_then_corrected(ledger: Ledger, clock: Clock) -> None:
    a = alloc(1000)
    crashed = rid()
    await ledger.reserve(a, crashed, "k", "m", Estimate(400, 10, 30))
    clock.advance(minutes=11)  # the gateway died; the lease (10 min) expired
    # any later script call reaps it: charged at the estimate, nothing left reserved
    ok = await ledger.reserve(a, rid(), "k", "m", Estimate(600, 1, 1))
    assert ok.accepted
    assert (ok.spent, ok.reserved) == (400, 600)
    state = await ledger.period_state(a)
    assert (state.reaped, state.requests, state.tokens) == (1, 1, 40)
    # the slow gateway comes back and settles: the charge is corrected to the actual cost
    late = await ledger.settle(a, crashed, "k", "m", 10, 5, 150)
    assert late.status is SettleStatus.CORRECTED
    state = await ledger.period_state(a)
    assert (state.spent, state.requests, state.tokens) == (150, 1, 15)
    [row] = await ledger.usage(a, ["20261127"])
    assert (row.requests, row.input_tokens, row.output_tokens, row.cost) == (1, 10, 5, 150)
    assert (await ledger.settle(a, crashed, "k", "m", 10, 5, 150)).status is SettleStatus.DUPLICATE


async def test_a_late_settle_of_a_reaped_lease_records_its_cached_tokens(
    ledger: Ledger, clock: Clock
) -> None:
    """The reaper charges an estimate, which has no cache figures; the late settle that corrects
    it records the request's cached and cache-write tokens (once)."""
    a = alloc(1000)
    crashed = rid()
    await ledger.reserve(a, crashed, "k", "m", Estimate(400, 10, 30))
    clock.advance(minutes=11)
    await ledger.reserve(a, rid(), "k", "m", Estimate(1, 1, 1))  # reaps the lease
    late = await ledger.settle(a, crashed, "k", "m", 10, 5, 150, cached_tokens=6, cache_write_tokens=3)
    assert late.status is SettleStatus.CORRECTED
    await ledger.settle(a, crashed, "k", "m", 10, 5, 150, cached_tokens=6, cache_write_tokens=3)
    [row] = await ledger.usage(a, ["20261127"])
    assert (row.requests, row.input_tokens, row.output_tokens) == (1, 10, 5)
    assert (row.cached_tokens, row.cache_write_tokens) == (6, 3)
    assert await ledger.key_spend(a) == {"k": 150}


async def test_extend_keeps_a_long_stream_alive(ledger: Ledger, clock: Clock) -> None:
    a = alloc(1000)
    r = rid()
    await ledger.reserve(a, r, "k", "m", Estimate(400, 1, 1))
    clock.advance(minutes=8)
    assert await ledger.extend(a, r)
    clock.advance(minutes=8)  # 16 min after reserve, 8 after the extension
    await ledger.reserve(a, rid(), "k", "m", Estimate(1, 1, 1))  # runs the reaper
    assert (await ledger.period_state(a)).reaped == 0
    assert (await ledger.settle(a, r, "k", "m", 1, 1, 10)).status is SettleStatus.CHARGED
    assert not await ledger.extend(a, r)


async def test_extend_many_renews_one_allocations_leases_in_one_call(ledger: Ledger, clock: Clock) -> None:
    a = alloc(1000)
    live, settled = rid(), rid()
    for r in (live, settled):
        await ledger.reserve(a, r, "k", "m", Estimate(100, 1, 1))
    await ledger.settle(a, settled, "k", "m", 1, 1, 10)
    clock.advance(minutes=8)
    assert await ledger.extend_many(a, [live, settled, rid()]) == [True, False, False]
    assert await ledger.extend_many(a, []) == []
    clock.advance(minutes=8)
    await ledger.reserve(a, rid(), "k", "m", Estimate(1, 1, 1))  # runs the reaper
    assert (await ledger.period_state(a)).reaped == 0


async def test_new_period_starts_at_zero_and_old_ones_expire(
    ledger: Ledger, clock: Clock, client: aioredis.Redis
) -> None:
    a = alloc(1000, Period.MONTHLY)
    r = rid()
    await ledger.reserve(a, r, "k", "m", Estimate(1000, 1, 1))
    await ledger.settle(a, r, "k", "m", 1, 1, 1000)
    assert not (await ledger.reserve(a, rid(), "k", "m", Estimate(1, 1, 1))).accepted
    clock.t = dt.datetime(2026, 12, 1, 0, 0, 1, tzinfo=dt.UTC).timestamp()
    assert (await ledger.period_state(a)).spent == 0
    assert (await ledger.reserve(a, rid(), "k", "m", Estimate(1000, 1, 1))).accepted
    ttl = await client.ttl(a.keys.period("m202611"))
    assert 0 < ttl <= (4 * 86400 + 100 * 86400)  # kept for the retention window, then gone


async def test_no_period_never_expires(ledger: Ledger, client: aioredis.Redis) -> None:
    a = alloc(1000, Period.NONE)
    await ledger.reserve(a, rid(), "k", "m", Estimate(1, 1, 1))
    assert await client.ttl(a.keys.period("all")) == -1


async def test_large_amounts_stay_exact(ledger: Ledger) -> None:
    budget = 5_000_000 * 10**9  # five million USD in nano-USD: beyond Lua's %.14g
    a = alloc(budget)
    r = rid()
    await ledger.reserve(a, r, "k", "m", Estimate(budget - 1, 1, 1))
    settled = await ledger.settle(a, r, "k", "m", 1, 1, budget - 1)
    assert settled.spent == budget - 1
    assert (await ledger.reserve(a, rid(), "k", "m", Estimate(1, 0, 0))).accepted
    assert not (await ledger.reserve(a, rid(), "k", "m", Estimate(1, 0, 0))).accepted


async def test_scripts_reload_after_script_flush(ledger: Ledger, client: aioredis.Redis) -> None:
    a = alloc(1000)
    await client.script_flush()
    assert (await ledger.reserve(a, rid(), "k", "m", Estimate(1, 1, 1))).accepted


async def test_refuses_separator_characters(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="must be non-empty"):
        await ledger.reserve(alloc(1), rid(), "bad|key", "m", Estimate(1, 1, 1))


async def test_a_reserve_past_its_deadline_writes_nothing(
    ledger: Ledger, client: aioredis.Redis, clock: Clock
) -> None:
    a = alloc(1000)
    crashed = rid()
    await ledger.reserve(a, crashed, "k", "m", Estimate(400, 1, 1))
    clock.advance(minutes=11)  # a lease to reap: an expired reserve does not even run the reaper
    before = {k: await client.dump(k) for k in await client.keys(f"{a.keys.prefix}*")}
    late = await ledger.reserve(a, rid(), "k", "m", Estimate(1, 1, 1), deadline=time.time() - 0.01)
    assert late.status is ReserveStatus.EXPIRED
    assert not late.accepted
    assert (late.spent, late.reserved, late.tokens, late.reserved_tokens) == (0, 0, 0, 0)
    assert {k: await client.dump(k) for k in await client.keys(f"{a.keys.prefix}*")} == before
    assert ledger.clock_syncs == 0  # the deadline had passed here too: no clock trouble, no retry
    ok = await ledger.reserve(a, rid(), "k", "m", Estimate(1, 1, 1), deadline=time.time() + 5)
    assert ok.status is ReserveStatus.RESERVED
    assert (await ledger.period_state(a)).reaped == 1


async def test_clock_offset_is_measured_and_repaired_on_a_spurious_expiry(ledger: Ledger) -> None:
    assert ledger.clock_offset == 0.0
    assert ledger.reserve_timeout == 0.5  # connect()'s socket timeout
    assert abs(await ledger.sync_clock()) < 0.5  # same machine
    assert ledger.clock_syncs == 1
    # a process whose clock runs 5 s behind Redis's believes every deadline is 5 s later than
    # Redis does: Redis refuses in time, the ledger re-measures once and retries
    ledger.clock_offset -= 5
    a = alloc(1000)
    outcome = await ledger.reserve(a, rid(), "k", "m", Estimate(7, 1, 1))
    assert outcome.status is ReserveStatus.RESERVED
    assert ledger.clock_syncs == 2
    assert abs(ledger.clock_offset) < 0.5
    assert (await ledger.period_state(a)).reserved == 7


async def test_a_reserve_that_can_never_meet_its_deadline_is_expired(client: aioredis.Redis) -> None:
    ledger = Ledger(client, reserve_timeout=-1.0)  # every deadline passes before Redis runs it
    a = alloc(1000)
    outcome = await ledger.reserve(a, rid(), "k", "m", Estimate(7, 1, 1))
    assert outcome.status is ReserveStatus.EXPIRED  # retried once with a fresh deadline, then given up
    assert ledger.clock_syncs == 0  # late here too: nothing wrong with the clocks
    assert await ledger.period_state(a) == PeriodState()


async def test_restore_raises_a_lost_period_to_its_floors(ledger: Ledger, client: aioredis.Redis) -> None:
    a = alloc(1000)
    assert not (await ledger.period_state(a)).exists  # no traffic yet, or lost: the same to Redis
    restored = await ledger.restore(a, "m202611", 900, 40, 3, {"alice": 600, "bob": 300})
    assert restored == RestoreOutcome(
        existed=False, spent=900, tokens=40, requests=3, key_spend={"alice": 600, "bob": 300}
    )
    assert restored.restored
    assert await ledger.period_state(a) == PeriodState(spent=900, tokens=40, requests=3, exists=True)
    assert await ledger.key_spend(a) == {"alice": 600, "bob": 300}
    for key in (a.keys.period("m202611"), a.keys.key_spend("m202611")):
        assert 0 < await client.ttl(key) <= (4 + 100) * 86400  # as reserve and settle set them
    # idempotent
    again = await ledger.restore(a, "m202611", 900, 40, 3, {"alice": 600, "bob": 300})
    assert again == RestoreOutcome(existed=True)
    assert not again.restored
    # the budget holds against what was restored
    assert (await ledger.reserve(a, rid(), "k", "m", Estimate(101, 1, 1))).status is ReserveStatus.OVER_BUDGET
    assert (await ledger.reserve(a, rid(), "k", "m", Estimate(100, 1, 1))).accepted


async def test_restore_never_lowers_anything(ledger: Ledger) -> None:
    a = alloc(10_000)
    for key, cost in (("alice", 700), ("bob", 100)):
        r = rid()
        await ledger.reserve(a, r, key, "m", Estimate(cost, 10, 10))
        await ledger.settle(a, r, key, "m", 10, 10, cost)  # spent 800, tokens 40, requests 2
    held = await ledger.reserve(a, rid(), "k", "m", Estimate(50, 1, 1))
    assert held.accepted
    outcome = await ledger.restore(a, "m202611", 500, 60, 1, {"alice": 300, "bob": 250, "carol": 5})
    assert outcome == RestoreOutcome(existed=True, tokens=20, key_spend={"bob": 150, "carol": 5})
    state = await ledger.period_state(a)
    assert (state.spent, state.tokens, state.requests, state.reserved) == (800, 60, 2, 50)
    assert await ledger.key_spend(a) == {"alice": 700, "bob": 250, "carol": 5}


async def test_restore_refuses_what_it_cannot_place(ledger: Ledger) -> None:
    a = alloc(1000)
    for bad in ("d20261127", "m2026xx", "all", "m202613"):
        with pytest.raises(ValueError, match="is not the id of a Monthly period"):
            await ledger.restore(a, bad, 1, 1, 1)
    with pytest.raises(ValueError, match="spent"):
        await ledger.restore(a, "m202611", -1, 0, 0)
    with pytest.raises(ValueError, match="must be non-empty"):
        await ledger.restore(a, "m202611", 1, 0, 0, {"a|b": 1})
    # a period long past its retention is left alone
    assert await ledger.restore(a, "m202501", 1, 1, 1) == RestoreOutcome(existed=False)
    assert not (await ledger.period_state(a, dt.datetime(2025, 1, 15, tzinfo=dt.UTC))).exists
    # other period kinds
    assert (await ledger.restore(alloc(1, Period.NONE), "all", 1, 0, 0)).spent == 1
    assert (await ledger.restore(alloc(1, Period.WEEKLY), "w20261123", 1, 0, 0)).spent == 1
    assert (await ledger.restore(alloc(1, Period.DAILY), "d20261127", 1, 0, 0)).spent == 1


async def test_an_estimate_beyond_what_the_ledger_can_count_is_over_budget(ledger: Ledger) -> None:
    a = alloc(MAX_AMOUNT)  # even the largest budget cannot cover it
    held = await ledger.reserve(a, rid(), "k", "m", Estimate(10, 1, 1))
    for huge in (
        Estimate(MAX_AMOUNT + 1, 1, 1),
        Estimate(1, MAX_AMOUNT + 1, 0),
        Estimate(1, 0, 2**64),
        Estimate(1, MAX_AMOUNT, 1),  # the tokens together
    ):
        refused = await ledger.reserve(a, rid(), "k", "m", huge)
        assert refused.status is ReserveStatus.OVER_BUDGET
        assert (refused.spent, refused.reserved, refused.reserved_tokens) == (0, 10, 2)  # the real counters
    assert (await ledger.period_state(a)).reserved == held.reserved
    assert (
        await ledger.reserve(a, rid(), "k", "m", Estimate(MAX_AMOUNT - 10, 0, 0))
    ).accepted  # fits exactly
    with pytest.raises(ValueError, match="non-negative"):
        await ledger.reserve(a, rid(), "k", "m", Estimate(-1, 0, 0))
    with pytest.raises(ValueError, match="2\\^53"):
        await ledger.settle(a, rid(), "k", "m", 1, 1, MAX_AMOUNT + 1)


async def test_changes_hand_out_each_charged_key_once(ledger: Ledger, clock: Clock) -> None:
    """The operator's status refresh reads the keys charged since it last looked (the `dirty` set
    the settle and reap write), so its work follows the traffic, not the number of keys."""
    a, idle = alloc(10_000), alloc(10_000)
    assert await ledger.changes([a, idle]) == [Changes(PeriodState()), Changes(PeriodState())]
    for key, cost in (("alice", 100), ("bob", 20), ("alice", 30)):
        r = rid()
        await ledger.reserve(a, r, key, "m", Estimate(cost, 1, 1))
        await ledger.settle(a, r, key, "m", 1, 1, cost)
    held = rid()
    await ledger.reserve(a, held, "carol", "m", Estimate(7, 1, 1))  # its gateway dies: reaped later
    [changed, untouched] = await ledger.changes([a, idle])
    assert sorted(changed.keys) == ["alice", "bob"]
    assert (changed.state.spent, changed.state.reserved, changed.state.requests) == (150, 7, 3)
    assert untouched == Changes(PeriodState())
    assert [c.keys for c in await ledger.changes([a, idle])] == [(), ()]  # taken: handed out once

    clock.advance(minutes=11)  # past carol's lease: the next settle reaps it at its estimate
    r = rid()
    await ledger.reserve(a, r, "bob", "m", Estimate(5, 1, 1))
    await ledger.settle(a, r, "bob", "m", 1, 1, 5)
    [changed] = await ledger.changes([a])
    assert sorted(changed.keys) == ["bob", "carol"]
    assert changed.state.reaped == 1

    uses = await ledger.key_use([(a, ["alice", "carol", "nobody"]), (idle, []), (idle, ["x"])])
    now = dt.datetime.fromtimestamp(clock.t, dt.UTC)
    assert uses == [
        {
            "alice": KeyUse(130, dt.datetime.fromtimestamp(NOV, dt.UTC)),
            "carol": KeyUse(7, None),  # reaped: charged, never used by a settle
            "nobody": KeyUse(0, None),
        },
        {},
        {"x": KeyUse(0, None)},
    ]
    assert (await ledger.key_use([(a, ["bob"])]))[0]["bob"] == KeyUse(25, now)


async def test_keys_are_counted_by_identity_and_shown_by_label(ledger: Ledger, clock: Clock) -> None:
    """The gateway passes the AIKey's uid as the key and its name and owner as the label: a new
    key named like a deleted one has its own spend, last use, rate window and usage rows, and
    the deleted one's rows still carry its name and owner (also for a lease reaped after it)."""
    a = alloc(10_000)
    old, new = KeyLabel("k", "alice|ops@example.com"), KeyLabel("k", None)  # an owner may hold "|"
    one_a_minute = RateLimit(1, None, 60_000)
    r = rid()
    await ledger.reserve(a, r, "uid-1", "m", Estimate(100, 1, 1), key_limits=one_a_minute, label=old)
    await ledger.settle(a, r, "uid-1", "m", 1, 1, 100, old)
    held = rid()  # its gateway dies: reaped at its estimate later
    assert (await ledger.reserve(a, held, "uid-1", "m", Estimate(7, 1, 1), label=old)).accepted
    refused = await ledger.reserve(a, rid(), "uid-1", "m", Estimate(1, 1, 1), key_limits=one_a_minute)
    assert refused.status is ReserveStatus.RATE_LIMITED_REQUESTS
    r = rid()  # the new `k`: a rate window of its own
    outcome = await ledger.reserve(a, r, "uid-2", "m", Estimate(30, 1, 1), key_limits=one_a_minute, label=new)
    assert outcome.accepted
    await ledger.settle(a, r, "uid-2", "m", 1, 1, 30, new)
    clock.advance(minutes=11)
    await ledger.settle(a, rid(), "uid-2", "m", 1, 1, 0, new)  # reaps uid-1's lease

    assert await ledger.key_spend(a) == {"uid-1": 107, "uid-2": 30}
    assert set(await ledger.last_used(a)) == {"uid-1", "uid-2"}
    assert sorted((await ledger.changes([a]))[0].keys) == ["uid-1", "uid-2"]
    rows = await ledger.usage(a, ["20261127"])
    assert [(r.key, r.label, r.requests, r.cost) for r in rows] == [
        ("uid-1", old, 2, 107),
        ("uid-2", new, 2, 30),
    ]
    restored = await ledger.restore(a, window(a.period, ledger.now()).id, 0, 0, 0, {"uid-2": 50})
    assert restored.key_spend == {"uid-2": 20}
    assert (await ledger.key_spend(a))["uid-1"] == 107

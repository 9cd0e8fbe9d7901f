"""Failure policy and the settle backlog, with a real redis-server that goes away."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aikeys_dev.devstack.redis import RedisServer, launch_redis

from aikeys.ledger.meter import UNMETERED, FailurePolicy, Meter, PendingSettle
from aikeys.ledger.store import (
    Allocation,
    Estimate,
    Ledger,
    LedgerUnavailable,
    ReserveOutcome,
    ReserveStatus,
    SettleStatus,
    connect,
)
from tests.integration.stalls import stall

pytestmark = pytest.mark.integration


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = launch_redis(tmp_path / "r", ("--appendonly", "yes"))
    yield server
    server.stop()


def kill(server: RedisServer) -> None:
    assert server.child.proc is not None
    server.child.proc.kill()
    server.child.proc.wait()


async def test_fail_closed_refuses_and_queued_settles_land_when_redis_returns(own_redis: RedisServer) -> None:
    meter = Meter(Ledger(connect(own_redis.url, timeout=0.3)))
    a = Allocation("ns", "a", budget=1000)
    assert not isinstance(await meter.reserve(a, "r1", "k", "m", Estimate(100, 1, 1)), type(UNMETERED))
    kill(own_redis)
    # the model already answered r1: its charge must not be lost
    assert await meter.settle(PendingSettle(a, "r1", "k", "m", 1, 1, 60)) is None
    assert len(meter.backlog) == 1
    with pytest.raises(LedgerUnavailable):
        await meter.reserve(a, "r2", "k", "m", Estimate(100, 1, 1))
    assert await meter.drain_once() == 0
    own_redis.start()
    drainer = asyncio.create_task(meter.run_drainer(interval=0.1))
    for _ in range(100):
        if not meter.backlog:
            break
        await asyncio.sleep(0.05)
    drainer.cancel()
    state = await meter.ledger.period_state(a)
    assert (state.spent, state.reserved, state.requests) == (60, 0, 1)
    assert meter.errors >= 2
    assert meter.unmetered == 0


async def test_fail_open_serves_counts_and_still_charges(own_redis: RedisServer) -> None:
    meter = Meter(Ledger(connect(own_redis.url, timeout=0.3)), FailurePolicy.OPEN)
    a = Allocation("ns", "b", budget=1000)
    kill(own_redis)
    assert await meter.reserve(a, "r1", "k", "m", Estimate(100, 1, 1)) is UNMETERED
    assert meter.unmetered == 1
    await meter.settle(PendingSettle(a, "r1", "k", "m", 1, 1, 70))
    own_redis.start()
    assert await meter.drain_once() == 1
    assert (await meter.ledger.period_state(a)).spent == 70


async def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("offset", [0.0, 10.0], ids=["deadline", "clock-off-by-10s"])
async def test_a_request_answered_503_during_a_redis_stall_is_never_charged(
    debuggable_redis: RedisServer, offset: float
) -> None:
    """Redis stalls 2.5 s in a burst; the gateway gives up on the reserve after its socket timeout
    (503). Redis runs the reserve when it resumes: with a correct clock offset the deadline makes it
    a no-op; with a clock off by 10 s it does reserve, and the background release gives it back."""
    client = connect(debuggable_redis.url, timeout=0.3)
    meter = Meter(Ledger(client))
    a = Allocation("ns", f"stall-{int(offset)}", budget=1000)
    assert isinstance(await meter.reserve(a, "warm", "k", "m", Estimate(1, 1, 1)), ReserveOutcome)
    await meter.ledger.sync_clock()
    meter.ledger.clock_offset += offset
    stalled = await stall(debuggable_redis.url, 2.5)
    with pytest.raises(LedgerUnavailable):
        await meter.reserve(a, "late", "k", "m", Estimate(500, 1, 1))
    assert meter.pending_releases == 1
    await asyncio.wait_for(stalled, 10)
    await asyncio.sleep(0.2)
    # Redis has run the late reserve: a no-op before its deadline, held if the clock misled it
    assert (await meter.ledger.period_state(a)).reserved == (501 if offset else 1)
    drainer = asyncio.create_task(meter.run_drainer(interval=0.1))
    try:
        await until(lambda: meter.pending_releases == 0)
    finally:
        drainer.cancel()
    state = await meter.ledger.period_state(a)
    assert (state.reserved, state.spent, state.reserved_tokens) == (1, 0, 2)
    assert not await client.hexists(a.keys.reservations, "late")
    assert str(await client.get(a.keys.done("late"))).startswith("released|")
    assert meter.released_in_background == 1
    assert meter.live_reservations == 1  # "warm" only
    # a retry of that reserve arriving even later is refused by the tombstone
    outcome = await meter.ledger.reserve(a, "late", "k", "m", Estimate(500, 1, 1), time.time() + 60)
    assert outcome.status is ReserveStatus.ALREADY_SETTLED
    await client.aclose()


async def test_fail_open_does_not_release_a_failed_reserve(own_redis: RedisServer) -> None:
    meter = Meter(Ledger(connect(own_redis.url, timeout=0.3)), FailurePolicy.OPEN)
    a = Allocation("ns", "open", budget=1000)
    kill(own_redis)
    assert await meter.reserve(a, "r1", "k", "m", Estimate(100, 1, 1)) is UNMETERED
    assert meter.pending_releases == 0  # its settle must charge, a release would void it


async def test_a_release_that_cannot_reach_redis_lands_later(own_redis: RedisServer) -> None:
    meter = Meter(Ledger(connect(own_redis.url, timeout=0.3)))
    a = Allocation("ns", "rel", budget=1000)
    assert isinstance(await meter.reserve(a, "r1", "k", "m", Estimate(100, 1, 1)), ReserveOutcome)
    assert meter.live_reservations == 1
    kill(own_redis)
    await meter.release(a, "r1")
    assert (meter.pending_releases, meter.live_reservations) == (1, 0)
    assert await meter.drain_once() == 0
    own_redis.start()
    assert await meter.drain_once() == 1
    assert meter.pending_releases == 0
    state = await meter.ledger.period_state(a)
    assert (state.reserved, state.spent) == (0, 0)


async def test_background_releases_give_up_after_one_lease(own_redis: RedisServer) -> None:
    meter = Meter(Ledger(connect(own_redis.url, timeout=0.3), lease=dt.timedelta(seconds=0.3)))
    a = Allocation("ns", "giveup", budget=1000)
    kill(own_redis)
    with pytest.raises(LedgerUnavailable):
        await meter.reserve(a, "r1", "k", "m", Estimate(100, 1, 1))
    assert meter.pending_releases == 1
    await asyncio.sleep(0.4)
    own_redis.start()
    assert await meter.drain_once() == 0
    assert (meter.pending_releases, meter.releases_dropped) == (0, 1)


async def test_heartbeat_keeps_a_long_stream_alive_and_a_dead_gateways_lease_is_reaped(
    redis_server: RedisServer,
) -> None:
    lease = dt.timedelta(seconds=1)
    alive = Meter(Ledger(connect(redis_server.url), lease=lease))
    dead = Meter(Ledger(connect(redis_server.url), lease=lease))  # a gateway that died: no heartbeat
    a = Allocation("ns", f"hb-{uuid.uuid4().hex[:8]}", budget=1000)
    assert isinstance(await alive.reserve(a, "stream", "k", "m", Estimate(300, 1, 1)), ReserveOutcome)
    assert isinstance(await dead.reserve(a, "orphan", "k", "m", Estimate(200, 1, 1)), ReserveOutcome)
    heartbeat = asyncio.create_task(alive.run_heartbeat())
    try:
        for _ in range(6):  # 3 s: three leases; any reserve runs the reaper
            await asyncio.sleep(0.5)
            probe = uuid.uuid4().hex
            assert isinstance(await alive.reserve(a, probe, "k", "m", Estimate(1, 0, 0)), ReserveOutcome)
            await alive.release(a, probe)
    finally:
        heartbeat.cancel()
    state = await alive.ledger.period_state(a)
    assert (state.reaped, state.spent, state.reserved) == (1, 200, 300)  # the orphan, at its estimate
    assert alive.leases_extended >= 4
    assert alive.ledger.clock_syncs == 1  # the heartbeat measured the clock offset first
    settled = await alive.settle(PendingSettle(a, "stream", "k", "m", 1, 1, 250))
    assert settled is not None
    assert settled.status is SettleStatus.CHARGED  # never reaped: charged once, at the actual cost
    assert alive.live_reservations == 0
    assert await alive.heartbeat_once() == 0


async def test_heartbeat_drops_a_reservation_held_too_long_or_found_gone(redis_server: RedisServer) -> None:
    meter = Meter(Ledger(connect(redis_server.url), lease=dt.timedelta(seconds=0.2)), max_hold=0.5)
    a = Allocation("ns", f"hold-{uuid.uuid4().hex[:8]}", budget=1000)
    for r in ("leaked", "gone"):
        assert isinstance(await meter.reserve(a, r, "k", "m", Estimate(1, 1, 1)), ReserveOutcome)
    await meter.ledger.release(a, "gone")  # released behind the meter's back
    await asyncio.sleep(0.1)
    assert await meter.heartbeat_once() == 1
    assert (meter.live_reservations, meter.leases_lost) == (1, 1)
    await asyncio.sleep(0.5)
    assert await meter.heartbeat_once() == 0
    assert (meter.live_reservations, meter.holds_dropped) == (0, 1)

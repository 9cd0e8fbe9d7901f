"""Failure policy and the settle backlog, with a real redis-server that goes away."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from aikeys.devstack.redis import RedisServer, launch_redis
from aikeys.ledger.meter import UNMETERED, FailurePolicy, Meter, PendingSettle
from aikeys.ledger.store import Allocation, Estimate, Ledger, LedgerUnavailable, connect

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

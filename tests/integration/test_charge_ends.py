"""Nothing leaves a reservation held (issue 21, #2 and #4): a Reservation ends exactly once, released
only while its request cannot have been generated, charged otherwise — also when the code that
settles it fails — and the lease heartbeat renews only reservations whose request is in flight.
Real redis-server; the pipeline's own guard (`_settle_later`) and Reservation, with failures injected."""

from __future__ import annotations

import asyncio
import gc
import uuid
from typing import Any, cast

import pytest
from aikeys_dev.devstack.redis import RedisServer
from aikeys_gateway.cache.catalog import KeyEntry, KeySpec, KeyStatus, ModelEntry, ProviderEntry
from aikeys_gateway.config import Settings
from aikeys_gateway.observe.metrics import Metrics
from aikeys_gateway.pipeline.exchange import Exchange
from aikeys_gateway.pipeline.pipeline import Pipeline
from aikeys_gateway.pipeline.reservation import RELEASE, Reservation, State, answered
from aikeys_gateway.pipeline.routing import Route
from aikeys_gateway.upstreams.client import Client

from aikeys.ledger.meter import Meter
from aikeys.ledger.store import Allocation, Estimate, Ledger, connect
from aikeys.money import Price
from aikeys.usage import Output

pytestmark = pytest.mark.integration
PRICE = Price.parse("1.00", "2.00")
BOUND = Estimate(PRICE.cost(100, 50), 100, 50)


def route() -> Route:
    model = ModelEntry("m", "m", PRICE, None, None, False)
    provider = ProviderEntry(
        "ns", "p", cast(Any, "openai"), "http://127.0.0.1:9/v1", None, False, frozenset(), True, 5.0,
        "127.0.0.1", "max_tokens", {"m": model},
    )  # fmt: skip
    return Route("ns:p/m", provider, model, None)


def key() -> KeyEntry:
    status = KeyStatus("h", "hint")
    return KeyEntry("ns", "k", "a", KeySpec(False, (), None), status, (), None, uid="uid-k")


async def world(redis_server: RedisServer) -> tuple[Pipeline, Allocation]:
    meter = Meter(Ledger(connect(redis_server.url)))
    gw = Pipeline(Settings(redis_server.url), cast(Any, None), meter, Metrics(), Client())
    return gw, Allocation("charge-ends", uuid.uuid4().hex[:8], budget=10**12)


async def held(gw: Pipeline, alloc: Allocation) -> tuple[Reservation, Exchange]:
    ex = Exchange("rid", "chat/completions", 0.0, status=200)
    charge = Reservation(gw.books, alloc, key(), route(), BOUND, BOUND, ex.tally, uuid.uuid4().hex, ex.rid)
    flight = charge.in_flight()
    outcome = await gw.meter.reserve(alloc, charge.ledger_rid, "k", "ns:p/m", BOUND, in_flight=flight)
    assert getattr(outcome, "accepted", False)
    ex.reservation = charge
    return charge, ex


async def spent_reserved(gw: Pipeline, alloc: Allocation) -> tuple[int, int, int]:
    s = await gw.meter.ledger.period_state(alloc)
    return s.spent, s.reserved, s.requests


def failures(gw: Pipeline) -> float:
    return float(gw.metrics.background_failures._value.get())


async def test_a_request_that_never_left_is_released(redis_server: RedisServer) -> None:
    gw, alloc = await world(redis_server)
    charge, _ = await held(gw, alloc)
    await charge.close(RELEASE)
    assert await spent_reserved(gw, alloc) == (0, 0, 0)
    assert charge.ended and not gw.meter.live


async def test_a_request_that_left_is_never_simply_released(redis_server: RedisServer) -> None:
    gw, alloc = await world(redis_server)
    charge, _ = await held(gw, alloc)
    charge.attempt(route(), BOUND, None)  # written upstream; then a timeout, reset or our own failure
    await charge.close(RELEASE)
    assert await spent_reserved(gw, alloc) == (BOUND.cost, 0, 1)
    await charge.close(RELEASE)  # ending twice changes nothing
    await charge.close(answered(None, Output()))
    assert await spent_reserved(gw, alloc) == (BOUND.cost, 0, 1)


async def test_an_error_answer_is_not_billed(redis_server: RedisServer) -> None:
    gw, alloc = await world(redis_server)
    charge, _ = await held(gw, alloc)
    charge.attempt(route(), BOUND, None)
    charge.not_billed()  # the upstream answered 4xx/5xx: providers bill no errors
    await charge.close(RELEASE)
    assert await spent_reserved(gw, alloc) == (0, 0, 0)


@pytest.mark.parametrize("failure", [AttributeError("translation bug"), KeyError("x"), ValueError("bad")])
async def test_a_settle_that_fails_still_ends_the_charge_and_says_so(
    redis_server: RedisServer, failure: Exception
) -> None:
    gw, alloc = await world(redis_server)
    charge, ex = await held(gw, alloc)
    charge.attempt(route(), BOUND, None)

    async def broken() -> None:  # e.g. a stream's read-on whose parser raises
        await asyncio.sleep(0)
        raise failure

    ex.pending += 1  # the settle's part of the exchange
    gw._settle_later(charge, ex, broken())
    await gw.drain()
    assert await spent_reserved(gw, alloc) == (BOUND.cost, 0, 1)
    assert failures(gw) == 1 and not gw.meter.live


async def test_a_settle_that_fails_before_sending_releases(redis_server: RedisServer) -> None:
    gw, alloc = await world(redis_server)
    charge, _ = await held(gw, alloc)

    async def broken() -> None:
        raise RuntimeError("before the upstream")

    await charge.closing(broken())
    assert await spent_reserved(gw, alloc) == (0, 0, 0)


async def test_a_failing_background_task_is_logged_and_counted(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    gw, _ = await world(redis_server)

    async def broken() -> None:
        raise RuntimeError("boom")

    gw.background.spawn(broken())
    await gw.drain()
    await asyncio.sleep(0)
    assert failures(gw) == 1
    assert any("background task failed" in r.message for r in caplog.records)


async def test_the_heartbeat_renews_only_reservations_still_in_flight(redis_server: RedisServer) -> None:
    gw, alloc = await world(redis_server)
    kept, _kept_ex = await held(gw, alloc)
    lost, lost_ex = await held(gw, alloc)
    for live in gw.meter.live.values():
        live.renewed -= gw.meter.ledger.lease_ms  # all due for renewal
    lost_rid = lost.ledger_rid
    del lost, lost_ex  # its request is gone (a task that died): nobody can end it any more
    gc.collect()
    renewed = await gw.meter.heartbeat_once()
    assert renewed == 1
    assert [ref[1] for ref in gw.meter.live] == [kept.ledger_rid]
    assert lost_rid not in {ref[1] for ref in gw.meter.live}
    assert gw.meter.holds_dropped == 1
    kept.state = State.SETTLED  # ended (by any path): no longer renewed either
    for live in gw.meter.live.values():
        live.renewed -= gw.meter.ledger.lease_ms
    assert await gw.meter.heartbeat_once() == 0 and not gw.meter.live

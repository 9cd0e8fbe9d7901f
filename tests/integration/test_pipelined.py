"""The ledger's pipelined Redis connection on a real redis-server: replies reach the right caller,
a stall or a dead Redis fails the calls waiting (and only them), scripts survive a Redis that lost
them, AUTH and SELECT from the URL."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.exceptions
from aikeys_dev.devstack.redis import RedisServer, launch_redis

from aikeys.ledger import scripts
from aikeys.ledger.pipelined import Pipelined, Target, encode
from aikeys.ledger.store import (
    Allocation,
    Estimate,
    Ledger,
    LedgerUnavailable,
    ReserveStatus,
    connect,
    pipelined,
)
from aikeys.periods import Period
from tests.integration.stalls import stall

pytestmark = pytest.mark.integration

SOURCES = {name: scripts.source(name) for name in scripts.NAMES}


@pytest.fixture
async def wire(debuggable_redis: RedisServer) -> AsyncIterator[Pipelined]:
    p = Pipelined.from_url(debuggable_redis.url, SOURCES, timeout=2.0)
    yield p
    await p.close()


def test_commands_are_encoded_as_resp_arrays_of_bulk_strings() -> None:
    assert (
        encode(["SET", "k", 12, b"\x00\r\n"])
        == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n$3\r\n\x00\r\n\r\n"
    )
    assert encode(["PING"]) == b"*1\r\n$4\r\nPING\r\n"
    assert encode(["ECHO", "é"]) == b"*2\r\n$4\r\nECHO\r\n$2\r\n\xc3\xa9\r\n"


def test_targets_come_from_the_url() -> None:
    t = Target.from_url("redis://:s3cret@redis.example:6380/4")
    assert (t.host, t.port, t.db, t.password, t.username, t.tls) == (
        "redis.example",
        6380,
        4,
        "s3cret",
        None,
        None,
    )
    t = Target.from_url("redis://app:pw@r:1/0", password="ignored")
    assert (t.username, t.password) == ("app", "pw")
    assert Target.from_url("redis://r:1/0", password="from-env").password == "from-env"
    tls = Target.from_url("rediss://r:6379/0").tls
    assert tls is not None and tls.check_hostname
    relaxed = Target.from_url("rediss://r:6379/0?ssl_cert_reqs=none").tls
    assert relaxed is not None and not relaxed.check_hostname
    by_ip = Target.from_url("rediss://10.0.0.1:6379/0?ssl_check_hostname=false").tls
    assert by_ip is not None and not by_ip.check_hostname and by_ip.verify_mode == ssl.CERT_REQUIRED
    assert Target.from_url("unix:///run/redis.sock?db=2").path == "/run/redis.sock"
    with pytest.raises(ValueError, match="not a single Redis URL"):
        Target.from_url("redis+cluster://r:6379")
    assert pipelined("redis+cluster://r:6379") is None
    assert pipelined("redis://r:6379/0?cluster=true") is None
    assert isinstance(pipelined("redis://r:6379/0"), Pipelined)


async def test_concurrent_calls_share_one_connection_and_get_their_own_replies(
    wire: Pipelined, debuggable_redis: RedisServer
) -> None:
    replies = await asyncio.gather(*(wire.command("INCR", "n") for _ in range(200)))
    assert replies == list(range(1, 201))  # issued in order, answered in order
    echoed = await asyncio.gather(*(wire.command("ECHO", f"call-{i}") for i in range(50)))
    assert echoed == [f"call-{i}" for i in range(50)]
    assert wire.connects == 1


async def test_a_script_error_reaches_its_caller_and_leaves_the_connection_up(wire: Pipelined) -> None:
    await wire.command("SET", "s", "not a hash")
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        await wire.command("HINCRBY", "s", "f", 1)
    assert await wire.command("PING") == "PONG"
    assert wire.connects == 1


async def test_a_cancelled_caller_does_not_shift_the_replies_of_others(
    wire: Pipelined, debuggable_redis: RedisServer
) -> None:
    await wire.command("PING")
    blocked = await stall(debuggable_redis.url, 0.5)
    calls = [asyncio.create_task(wire.command("ECHO", f"r{i}")) for i in range(5)]
    await asyncio.sleep(0.05)
    calls[1].cancel()
    calls[3].cancel()
    await blocked
    assert [await calls[i] for i in (0, 2, 4)] == ["r0", "r2", "r4"]
    assert await wire.command("ECHO", "after") == "after"
    assert wire.connects == 1


async def test_a_stall_longer_than_the_timeout_fails_each_waiting_call_alone(
    debuggable_redis: RedisServer,
) -> None:
    """Each call gives up after its own timeout; the connection stays (a short stall is not a dead
    Redis), the late replies are read and dropped, and the next call is answered on it."""
    wire = Pipelined.from_url(debuggable_redis.url, SOURCES, timeout=0.3)
    try:
        await wire.command("PING")
        blocked = await stall(debuggable_redis.url, 0.8)
        started = time.monotonic()
        results = await asyncio.gather(*(wire.command("INCR", "t") for _ in range(5)), return_exceptions=True)
        waited = time.monotonic() - started
        assert all(isinstance(r, TimeoutError) for r in results), results
        assert waited < 0.7  # they did not wait for the stall to end
        await blocked
        assert await wire.command("ECHO", "after") == "after"  # the five late replies were skipped
        assert await wire.command("GET", "t") == "5"  # Redis did run them: the caller must not assume
        assert wire.connects == 1
    finally:
        await wire.close()


async def test_a_connection_silent_for_four_timeouts_is_dropped_and_made_again(
    debuggable_redis: RedisServer,
) -> None:
    wire = Pipelined.from_url(debuggable_redis.url, SOURCES, timeout=0.2)
    try:
        await wire.command("PING")
        blocked = await stall(debuggable_redis.url, 2.0)
        outcomes: list[BaseException | object] = []
        for _ in range(8):  # keep asking through the stall, as traffic would
            outcomes.append((await asyncio.gather(wire.command("PING"), return_exceptions=True))[0])
        assert all(isinstance(o, TimeoutError | ConnectionError) for o in outcomes), outcomes
        dropped = [o for o in outcomes if "no connection within" in str(o)]  # trying a new one
        assert dropped and outcomes.index(dropped[0]) >= 4, outcomes  # after ≥ 4 silent timeouts
        await blocked
        assert await wire.command("PING") == "PONG"
        assert wire.connects >= 2
    finally:
        await wire.close()


async def test_a_redis_that_cannot_serve_is_unavailable_not_a_script_error(
    debuggable_redis: RedisServer,
) -> None:
    wire = Pipelined.from_url(debuggable_redis.url, SOURCES, timeout=2.0)
    admin = connect(debuggable_redis.url)
    try:
        await wire.command("PING")
        await admin.config_set("requirepass", "now-required")
        await admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        with pytest.raises(ConnectionError):  # NOAUTH on a new connection: the ledger is unavailable
            await wire.command("PING")
    finally:
        again = connect(f"redis://:now-required@127.0.0.1:{debuggable_redis.port}/0")
        await again.config_set("requirepass", "")
        await again.aclose()
        await admin.aclose()
        await wire.close()


def test_the_password_never_shows_in_a_target() -> None:
    assert "s3cret" not in repr(Target.from_url("redis://:s3cret@r:1/0"))


async def test_a_dead_redis_is_a_connection_error_and_a_restarted_empty_one_gets_the_scripts_again(
    debuggable_redis: RedisServer,
) -> None:
    wire = Pipelined.from_url(debuggable_redis.url, SOURCES, timeout=1.0)
    ledger = Ledger(connect(debuggable_redis.url), pipelined=wire)
    alloc = Allocation("ns", "a", 10_000, Period.MONTHLY)
    try:
        ok = await ledger.reserve(alloc, "r1", "k", "m", Estimate(100, 1, 1))
        assert ok.status is ReserveStatus.RESERVED
        debuggable_redis.stop()
        with pytest.raises(LedgerUnavailable):
            await ledger.reserve(alloc, "r2", "k", "m", Estimate(100, 1, 1))
        debuggable_redis.start()  # empty: no data, no scripts
        again = await ledger.reserve(alloc, "r3", "k", "m", Estimate(100, 1, 1))
        assert again.status is ReserveStatus.RESERVED and again.reserved == 100
    finally:
        await wire.close()
        await ledger.client.aclose()


async def test_scripts_flushed_under_a_live_connection_are_loaded_again(
    wire: Pipelined, debuggable_redis: RedisServer
) -> None:
    ledger = Ledger(connect(debuggable_redis.url), pipelined=wire)
    alloc = Allocation("ns", "flush", 10_000, Period.MONTHLY)
    try:
        await ledger.reserve(alloc, "r1", "k", "m", Estimate(100, 1, 1))
        await wire.command("SCRIPT", "FLUSH")
        outcome = await ledger.reserve(alloc, "r2", "k", "m", Estimate(100, 1, 1))
        assert outcome.status is ReserveStatus.RESERVED and outcome.reserved == 200
        assert wire.connects == 1
    finally:
        await ledger.client.aclose()


async def test_password_and_database_from_the_url(tmp_path: Path) -> None:
    server = launch_redis(tmp_path / "auth")
    try:
        base = f"127.0.0.1:{server.port}"
        admin = connect(server.url)
        await admin.config_set("requirepass", "s3cret")
        await admin.aclose()
        wire = Pipelined.from_url(f"redis://:s3cret@{base}/3", SOURCES, timeout=2.0)
        await wire.command("SET", "where", "db3")
        other = connect(f"redis://:s3cret@{base}/3")
        assert await other.get("where") == "db3"
        await other.aclose()
        await wire.close()
        from_env = Pipelined.from_url(f"redis://{base}/0", SOURCES, timeout=2.0, password="s3cret")
        assert await from_env.command("PING") == "PONG"
        await from_env.close()
        wrong = Pipelined.from_url(f"redis://:nope@{base}/0", SOURCES, timeout=2.0)
        with pytest.raises(ConnectionError, match=r"WRONGPASS|invalid"):
            await wrong.command("PING")
        await wrong.close()
    finally:
        server.stop()


async def test_nothing_listening_fails_fast(tmp_path: Path) -> None:
    server = launch_redis(tmp_path / "gone")
    url = server.url
    server.stop()
    wire = Pipelined.from_url(url, SOURCES, timeout=2.0)
    started = time.monotonic()
    with pytest.raises(ConnectionError):
        await wire.command("PING")
    assert time.monotonic() - started < 1.0

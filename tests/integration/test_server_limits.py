"""Slow, idle and oversized clients against a real gateway process (raw sockets over loopback): a
trickled head gets 408 and is closed, a quiet connection is closed, an oversized head gets 431, a
/ui form that does not arrive in time gets 408 — each within the (here short) configured bounds."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import pytest
from aikeys_dev.devstack.controlplane import ControlPlane
from aikeys_dev.devstack.redis import RedisServer
from aikeys_dev.devstack.services import GatewayProcess

from tests.conftest import CREDENTIALS
from tests.integration.kube import install_crds

CLIENTS = 50  # of each kind, as in the finding
HEADER_TIMEOUT = 1.0
IDLE_TIMEOUT = 1
BODY_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def bounded(
    control_plane: ControlPlane, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """A gateway with short header, idle and body timeouts, default size bounds, and the pages on."""
    install_crds(control_plane)
    control_plane.kubectl("create", "namespace", "aikeys-system", check=False)
    gw = GatewayProcess(
        control_plane.kubeconfig,
        redis_server.url,
        tmp_path_factory.mktemp("bounded-gateway") / "gateway.log",
        CREDENTIALS,
        extra_env={
            "AIKEYS_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
            "AIKEYS_IDLE_TIMEOUT": str(IDLE_TIMEOUT),
            "AIKEYS_BODY_TIMEOUT": str(BODY_TIMEOUT),
            "AIKEYS_UI": "true",
            "AIKEYS_UI_SESSION_KEY": "server-limits-session-key-0123456789abcdef",
        },
    ).start()
    try:
        yield gw
    finally:
        gw.stop()


async def until_closed(reader: asyncio.StreamReader, within: float) -> bytes:
    """Everything the gateway sends until it closes the connection; fails if it has not by `within`."""
    data = b""
    async with asyncio.timeout(within):
        with contextlib.suppress(ConnectionResetError):
            while chunk := await reader.read(65536):
                data += chunk
    return data


async def test_trickled_heads_and_idle_connections_are_closed(bounded: GatewayProcess) -> None:
    started = time.monotonic()
    idle = [await asyncio.open_connection("127.0.0.1", bounded.port) for _ in range(CLIENTS)]
    trickling = [await asyncio.open_connection("127.0.0.1", bounded.port) for _ in range(CLIENTS)]

    async def trickle(writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        for i in range(200):  # a header every 100 ms, never the blank line
            await asyncio.sleep(0.1)
            writer.write(b"x-%d: y\r\n" % i)

    tasks = [asyncio.create_task(trickle(w)) for _, w in trickling]
    try:
        answers = await asyncio.gather(*(until_closed(r, within=6) for r, _ in idle + trickling))
    finally:
        for task in tasks:
            task.cancel()
        for _, w in idle + trickling:
            w.close()
    elapsed = time.monotonic() - started
    assert answers[:CLIENTS] == [b""] * CLIENTS  # idle: closed without a word
    for answer in answers[CLIENTS:]:
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer[:80]
        assert b'"code":"request_timeout"' in answer
    assert elapsed < 5, elapsed


@pytest.mark.parametrize(
    "head",
    [
        b"x-big: " + b"a" * 1024 * 1024 + b"\r\n",  # one 1 MB header
        b"".join(b"x-%d: y\r\n" % i for i in range(10_000)),  # 10,000 headers
    ],
    ids=["1MB-header", "10000-headers"],
)
async def test_an_oversized_head_gets_431_and_is_closed(bounded: GatewayProcess, head: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", bounded.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n")
    answer = await until_closed(reader, within=5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), answer[:80]
    assert b'"code":"request_header_fields_too_large"' in answer


async def test_a_ui_form_that_does_not_arrive_in_time_gets_408(bounded: GatewayProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", bounded.port)
    started = time.monotonic()
    writer.write(
        b"POST /ui/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 100\r\n\r\ncsrf=abc&credential="  # 80 bytes short, and nothing more
    )
    answer = await until_closed(reader, within=BODY_TIMEOUT + 4)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer[:80]
    assert b"not received within 1 seconds" in answer
    assert time.monotonic() - started >= BODY_TIMEOUT * 0.9

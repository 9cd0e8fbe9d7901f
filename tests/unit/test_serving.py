"""The gateway's uvicorn protocol joins the writes of one loop turn (a response's head and body),
and bounds what a client may hold: a request's head in size, count and time, a quiet connection in
time (raw sockets over loopback, with the bounds made small)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator

import pytest
import uvicorn
from aikeys_gateway.config import ServerSettings
from aikeys_gateway.serving import CoalescingTransport, GatewayHttpProtocol


class Recording(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0


async def test_writes_of_one_turn_leave_as_one_at_its_end() -> None:
    real = Recording()
    t = CoalescingTransport(real, asyncio.get_running_loop())
    t.write(b"HTTP/1.1 200 OK\r\n\r\n")
    t.write(b"body")
    assert real.writes == [] and t.get_write_buffer_size() == 23
    await asyncio.sleep(0)
    assert real.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    t.write(memoryview(b"next"))
    await asyncio.sleep(0)
    assert real.writes[1:] == [b"next"]


async def test_close_sends_what_is_pending_first_and_abort_drops_it() -> None:
    loop = asyncio.get_running_loop()
    real = Recording()
    t = CoalescingTransport(real, loop)
    t.write(b"last words")
    t.close()
    assert real.writes == [b"last words"] and real.closed
    other = Recording()
    t = CoalescingTransport(other, loop)
    t.write(b"never sent")
    t.abort()
    await asyncio.sleep(0)
    assert other.writes == [] and other.aborted


async def test_uvicorn_with_the_protocol_answers_in_one_segment_and_keeps_the_connection() -> None:
    async def app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        assert scope["type"] == "http"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"ok"})  # type: ignore[operator]

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, http=GatewayHttpProtocol, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to wait on
        await asyncio.sleep(0.01)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(2):  # kept alive: the second request on the same connection
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            assert await asyncio.wait_for(reader.readexactly(2), 10) == b"ok"
        writer.close()
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


class Bounded(GatewayHttpProtocol):
    limits = ServerSettings(max_header_bytes=16 * 1024, max_headers=40, header_timeout=0.5)


async def answer(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
    """200 "ok", without reading the request's body."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": b"ok"})  # type: ignore[operator]


@pytest.fixture
async def port() -> AsyncIterator[int]:
    """A uvicorn server with `Bounded` and an idle timeout of 1 s; its port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(answer, http=Bounded, lifespan="off", log_level="warning", timeout_keep_alive=1)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to wait on
        await asyncio.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def until_closed(reader: asyncio.StreamReader, within: float) -> bytes:
    """Everything the server sends until it closes the connection; fails if it has not by `within`."""
    data = b""
    async with asyncio.timeout(within):
        with contextlib.suppress(ConnectionResetError):
            while chunk := await reader.read(65536):
                data += chunk
    return data


async def test_a_head_within_the_bounds_is_served(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    fields = b"".join(b"x-f%d: %s\r\n" % (i, b"v" * 300) for i in range(38))  # 38 + Host < 40, ~12 KB
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 200 OK")
    writer.close()


async def test_a_trickled_head_gets_408_and_is_closed_after_the_header_timeout(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(b"GET / HTTP/1.1\r\n")

    async def trickle() -> None:
        for i in range(100):  # a header every 50 ms: bytes keep coming, the head never ends
            await asyncio.sleep(0.05)
            writer.write(b"x-%d: y\r\n" % i)

    trickling = asyncio.create_task(trickle())
    try:
        data = await until_closed(reader, within=3)
    finally:
        trickling.cancel()
    assert 0.4 < time.monotonic() - started < 2.5
    assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"connection: close" in data and b'"code":"request_timeout"' in data
    writer.close()


async def test_quiet_connections_are_closed_after_the_idle_timeout(port: int) -> None:
    started = time.monotonic()
    silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(20)]  # never send a byte
    assert [await until_closed(r, within=3) for r, _ in silent] == [b""] * 20
    assert 0.9 < time.monotonic() - started < 3

    reader, writer = await asyncio.open_connection("127.0.0.1", port)  # a body nobody reads, trickled
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 200 OK")
    assert await reader.readexactly(2) == b"ok"

    async def trickle() -> None:
        for _ in range(100):
            await asyncio.sleep(0.05)
            writer.write(b"x")

    trickling = asyncio.create_task(trickle())
    started = time.monotonic()
    try:
        assert await until_closed(reader, within=3) == b""
    finally:
        trickling.cancel()
    assert time.monotonic() - started < 2
    for _, w in silent:
        w.close()
    writer.close()


@pytest.mark.parametrize(
    ("head", "why"),
    [
        (b"x-big: " + b"a" * 1024 * 1024 + b"\r\n", b"larger than 16384 bytes"),  # one 1 MB header
        (b"".join(b"x-%d: y\r\n" % i for i in range(10_000)), b""),  # 10,000 headers (~100 KB)
        (b"".join(b"x-%d: y\r\n" % i for i in range(50)), b"more than 40 header fields"),  # small, many
    ],
    ids=["1MB-header", "10000-headers", "50-headers"],
)
async def test_an_oversized_head_gets_431_and_is_closed(port: int, head: bytes, why: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n")
    data = await until_closed(reader, within=5)
    assert data.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), data[:100]
    assert b"connection: close" in data and why in data
    writer.close()

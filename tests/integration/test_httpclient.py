"""The gateway's own HTTP/1.1 upstream client (aikeys_gateway.upstreams.client) over real loopback sockets.

Most servers here are small asyncio servers in this file that send exact bytes and record exact
bytes (`RawServer`); a few tests use the project's mock upstream and a real nginx. Every test is
bounded (pytest-timeout below, and `total=` on requests that should succeed) and asserts what a
caller of the client sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import ipaddress
import json
import logging
import os
import shutil
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aikeys_dev.devstack.processes import Child, free_port
from aikeys_dev.devstack.upstream import MockUpstreamProcess
from aikeys_gateway.upstreams.client import (
    HIGH_WATER,
    Client,
    Response,
    UnansweredError,
    UpstreamError,
    UpstreamTooLarge,
    origin,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

pytestmark = pytest.mark.timeout(60)

OK = 10.0  # `total` for exchanges that should succeed: generous, the machine may be busy


# --- a scripted server ---------------------------------------------------------------------------


@dataclass
class Req:
    """One request as the server received it."""

    raw: bytes  # head and body, byte for byte
    request_line: str
    headers: list[tuple[str, str]]  # as sent (case kept)
    body: bytes

    @property
    def method(self) -> str:
        return self.request_line.split(" ")[0]

    @property
    def target(self) -> str:
        return self.request_line.split(" ")[1]

    def values(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]


class Conn:
    """The server's side of one connection."""

    def __init__(self, server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.server = server
        self.reader = reader
        self.writer = writer

    async def request(self) -> Req | None:
        """The next request on this connection, or None when the client closed it."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        lines = head.decode("latin-1").split("\r\n")[:-2]
        headers = [(n, v.strip()) for n, _, v in (line.partition(":") for line in lines[1:])]
        length = sum(int(v) for n, v in headers if n.lower() == "content-length")
        body = await self.reader.readexactly(length) if length else b""
        req = Req(head + body, lines[0], headers, body)
        self.server.requests.append(req)
        return req

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def drain(self) -> None:
        await self.writer.drain()

    def reset(self) -> None:
        """Close with a TCP RST (SO_LINGER 0) instead of a FIN."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    async def eof(self, within: float = 5.0) -> bool:
        """Wait for the client to close this connection; True if it did `within` seconds."""
        try:
            async with asyncio.timeout(within):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            pass
        return True


Handler = Callable[[Conn], Awaitable[None]]


class RawServer:
    """An asyncio server on 127.0.0.1 (or `host`) running `handler` per connection; it counts
    connections and records every request."""

    def __init__(self, handler: Handler, *, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1"):
        self.handler = handler
        self.tls = tls
        self.host = host
        self.connections = 0
        self.requests: list[Req] = []
        self.closed_by_client: list[bool] = []  # per connection whose handler ran out: EOF seen
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    def url(self, path: str = "/", scheme: str = "http", host: str | None = None) -> str:
        h = host or self.host
        h = f"[{h}]" if ":" in h else h
        return f"{scheme}://{h}:{self.port}{path}"

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, self.host, 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handler(Conn(self, reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except asyncio.CancelledError:  # the test is over: end normally (streams log cancelled ones)
            pass
        finally:
            writer.transport.abort() if writer.transport.is_closing() else writer.close()
            self._tasks.discard(task)


def http(status: int = 200, body: bytes = b"", headers: tuple[str, ...] = (), reason: str = "OK") -> bytes:
    head = [f"HTTP/1.1 {status} {reason}", *headers, f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(head).encode("latin-1") + body


def keep_alive(answer: Callable[[Req], bytes]) -> Handler:
    """A handler answering every request on the connection with `answer(request)`."""

    async def handler(c: Conn) -> None:
        while (req := await c.request()) is not None:
            c.send(answer(req))
            await c.drain()

    return handler


def ok(body: bytes = b"ok") -> Handler:
    return keep_alive(lambda _: http(200, body))


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    c = Client(connect_timeout=5.0)
    yield c
    await c.close()


async def get(client: Client, url: str, total: float = OK) -> tuple[Response, bytes]:
    resp = await client.request("GET", url, total=total)
    return resp, await resp.read()


async def fetch(client: Client, url: str) -> bytes:
    return (await get(client, url))[1]


async def collect(resp: Response, pieces: list[bytes]) -> None:
    """iter_any() into `pieces` (what arrived stays there when the iterator raises)."""
    async for piece in resp.iter_any():
        pieces.append(piece)


# --- responses: status, headers, bodies ---------------------------------------------------------


async def test_status_lowercased_headers_duplicates_joined_and_content_length_body(client: Client) -> None:
    raw = (
        b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nX-Dup: a\r\nx-dup: b\r\n"
        b"X-RateLimit-Remaining: 7\r\nContent-Length: 11\r\n\r\nhello world"
    )
    async with RawServer(keep_alive(lambda _: raw)) as srv:
        resp = await client.request("POST", srv.url("/v1"), b"{}", total=OK)
        assert resp.status == 201
        assert resp.headers == {
            "content-type": "application/json",
            "x-dup": "a, b",
            "x-ratelimit-remaining": "7",
            "content-length": "11",
        }
        assert await resp.read() == b"hello world"


async def test_chunked_body_with_extensions_and_trailers_then_reuse(client: Client) -> None:
    async def handler(c: Conn) -> None:
        while await c.request() is not None:
            c.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Head: h\r\n\r\n")
            for piece in (b"5;ext=1\r\nhello\r\n", b'1;a=b;c="d"\r\n \r\n', b"a\r\nworld, all\r\n"):
                c.send(piece)
                await c.drain()
                await asyncio.sleep(0.01)
            c.send(b"0\r\nX-Trailer: t\r\nX-Other: o\r\n\r\n")
            await c.drain()

    async with RawServer(handler) as srv:
        for _ in range(2):
            resp, body = await get(client, srv.url())
            assert (resp.status, body) == (200, b"hello world, all")
            assert resp.headers["transfer-encoding"] == "chunked" and resp.headers["x-head"] == "h"
            assert "x-trailer" not in resp.headers
        # the trailer ended the message: the connection was reused
        assert client.connections == 1 and srv.connections == 1 and len(srv.requests) == 2


async def test_body_delimited_by_close_is_read_whole(client: Client) -> None:
    parts = [b"first part, ", b"second part, ", os.urandom(300_000), b"the end"]

    async def handler(c: Conn) -> None:
        await c.request()
        c.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        for p in parts:
            c.send(p)
            await c.drain()
            await asyncio.sleep(0.02)
        c.writer.close()  # FIN: the body's end

    async with RawServer(handler) as srv:
        resp, body = await get(client, srv.url())
        assert resp.status == 200 and "content-length" not in resp.headers
        assert body == b"".join(parts)
        # the connection is gone: the next request opens another
        resp, body = await get(client, srv.url())
        assert body == b"".join(parts)
        assert client.connections == 2 and srv.connections == 2


async def test_body_delimited_by_close_in_http_1_0(client: Client) -> None:
    async def handler(c: Conn) -> None:
        await c.request()
        c.send(b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\nold school body")
        await c.drain()
        c.writer.close()

    async with RawServer(handler) as srv:
        resp, body = await get(client, srv.url())
        assert (resp.status, resp.headers, body) == (200, {"server": "old"}, b"old school body")


async def test_204_has_no_body_and_keeps_the_connection(client: Client) -> None:
    async with RawServer(keep_alive(lambda _: b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n")) as srv:
        for _ in range(3):
            resp, body = await get(client, srv.url())
            assert (resp.status, body, resp.headers) == (204, b"", {"x-a": "1"})
        assert client.connections == 1 and srv.connections == 1


@pytest.mark.parametrize("split", [False, True], ids=["one-write", "separate-writes"])
async def test_informational_responses_are_skipped(client: Client, split: bool) -> None:
    pieces = [
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Final: yes\r\nContent-Length: 5\r\n\r\nfinal",
    ]

    async def handler(c: Conn) -> None:
        while await c.request() is not None:
            for p in pieces if split else [b"".join(pieces)]:
                c.send(p)
                await c.drain()
                await asyncio.sleep(0.02)

    async with RawServer(handler) as srv:
        for _ in range(2):
            resp = await client.request("POST", srv.url(), b"x", total=OK)
            assert resp.status == 200
            assert resp.headers == {"x-final": "yes", "content-length": "5"}
            assert await resp.read() == b"final"
        assert client.connections == 1


# --- the request as the server receives it ------------------------------------------------------


async def test_request_bytes_on_the_wire(client: Client) -> None:
    async with RawServer(ok()) as srv:
        body = b'{"model": "m", "messages": []}'
        headers = {"Authorization": "Bearer sk-test", "Content-Type": "application/json", "X-Trace": "t-1"}
        url = srv.url("/v1/chat/completions?api-version=2024-10-21&x=a%20b")
        resp = await client.request("POST", url, body, headers, total=OK)
        assert await resp.read() == b"ok"

        [req] = srv.requests
        assert req.request_line == "POST /v1/chat/completions?api-version=2024-10-21&x=a%20b HTTP/1.1"
        assert req.raw.count(b"HTTP/1.1") == 1  # one request line, nothing else on the wire
        assert req.raw.startswith(b"POST ")
        assert req.values("host") == [f"127.0.0.1:{srv.port}"]
        assert req.values("Authorization") == ["Bearer sk-test"]
        assert req.values("Content-Type") == ["application/json"]
        assert req.values("X-Trace") == ["t-1"]
        assert req.values("content-length") == [str(len(body))]
        assert req.values("accept-encoding") == []
        assert sorted(n.lower() for n, _ in req.headers) == [
            "authorization",
            "content-length",
            "content-type",
            "host",
            "x-trace",
        ]
        assert req.body == body


async def test_get_without_body_and_empty_post(client: Client) -> None:
    async with RawServer(ok()) as srv:
        await (await client.request("GET", srv.url("/v1/responses/r1"), total=OK)).read()
        await (await client.request("DELETE", srv.url("/v1/responses/r1"), total=OK)).read()
        await (await client.request("POST", srv.url("/empty"), total=OK)).read()
        get_, delete, post = srv.requests
        assert get_.request_line == "GET /v1/responses/r1 HTTP/1.1" and get_.body == b""
        assert delete.request_line == "DELETE /v1/responses/r1 HTTP/1.1" and delete.body == b""
        assert post.values("content-length") == ["0"]  # a POST always says how long its body is
        assert client.connections == 1


async def test_large_request_body_arrives_intact(client: Client) -> None:
    body = os.urandom(5 * 1024 * 1024 + 17)
    answer = keep_alive(lambda req: http(200, hashlib.sha256(req.body).hexdigest().encode()))
    async with RawServer(answer) as srv:
        resp = await client.request("POST", srv.url("/upload"), body, {"X-N": "1"}, total=OK)
        assert await resp.read() == hashlib.sha256(body).hexdigest().encode()
        [req] = srv.requests
        assert req.values("content-length") == [str(len(body))]
        assert req.body == body


# --- keep-alive ----------------------------------------------------------------------------------


async def test_sequential_requests_reuse_one_connection(client: Client) -> None:
    async with RawServer(keep_alive(lambda req: http(200, req.target.encode()))) as srv:
        for i in range(5):
            resp = await client.request("POST", srv.url(f"/r{i}"), b"b", total=OK)
            assert await resp.read() == f"/r{i}".encode()
        assert client.connections == 1 and srv.connections == 1 and len(srv.requests) == 5


async def test_connection_close_from_the_server_means_a_new_connection(client: Client) -> None:
    async def handler(c: Conn) -> None:
        await c.request()
        c.send(http(200, b"bye", ("Connection: close",)))
        await c.drain()
        await c.eof()  # the client closes it, not the server

    async with RawServer(handler) as srv:
        for _ in range(3):
            resp, body = await get(client, srv.url())
            assert body == b"bye" and resp.headers["connection"] == "close"
        assert client.connections == 3 and srv.connections == 3


async def test_idle_connection_closed_by_the_server_is_dropped(client: Client) -> None:
    async def handler(c: Conn) -> None:
        await c.request()
        c.send(http(200, b"once"))  # keep-alive as far as the client knows
        await c.drain()
        c.writer.close()  # ... then the server closes the idle connection

    async with RawServer(handler) as srv:
        for _ in range(3):
            _, body = await get(client, srv.url())
            assert body == b"once"
            await asyncio.sleep(0.1)  # the FIN arrives while the connection is idle
            assert client.idle.get(("http", "127.0.0.1", srv.port), []) == []
        assert client.connections == 3 and srv.connections == 3 and len(srv.requests) == 3


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_reused_connection_dying_unanswered_is_retried_once_unless_it_is_a_post(
    client: Client, method: str
) -> None:
    """An idempotent request is sent again; a POST the upstream had is not: it may have generated
    (and billed) it, so the caller gets Unanswered and charges it (issue 21, #2)."""

    async def handler(c: Conn) -> None:
        if c.server.connections == 1:
            await c.request()
            c.send(http(200, b"first"))
            await c.drain()
            await c.request()  # the second request arrives on the kept-alive connection ...
            c.reset()  # ... and the connection dies without a byte of answer
            return
        await keep_alive(lambda req: http(200, b"fresh " + req.body))(c)

    async with RawServer(handler) as srv:
        _, body = await get(client, srv.url())
        assert body == b"first"
        if method == "POST":
            with pytest.raises(UnansweredError):
                await client.request("POST", srv.url(), b"again", total=OK)
            assert [r.body for r in srv.requests] == [b"", b"again"]  # sent once
            return
        resp = await client.request(method, srv.url(), b"again", total=OK)
        assert await resp.read() == b"fresh again"
        assert client.connections == 2 and srv.connections == 2
        assert [r.body for r in srv.requests] == [b"", b"again", b"again"]  # sent twice: once per connection


async def test_reused_connection_closed_just_before_the_request_is_retried(client: Client) -> None:
    """The server answers and closes at once (data and FIN together); the caller's next request
    takes the pooled connection before the client's loop has processed the FIN, so the request goes
    to a dead connection: the client must notice (no answer byte) and retry on a fresh one."""

    async def handler(c: Conn) -> None:
        if c.server.connections == 1:
            await c.request()
            c.send(http(200, b"first"))
            c.writer.close()  # no await in between: the FIN follows the answer
            return
        await ok(b"second")(c)

    async with RawServer(handler) as srv:
        for _ in range(3):
            srv.connections = 0
            srv.requests.clear()
            before = client.connections
            resp = await client.request("GET", srv.url(), total=OK)
            assert await resp.read() == b"first"
            [pooled] = client.idle[("http", "127.0.0.1", srv.port)]
            assert not pooled.closed  # the race this test is about: the FIN is not processed yet
            resp = await client.request("GET", srv.url(), total=OK)
            assert await resp.read() == b"second"
            assert client.connections - before == 2 and srv.connections == 2
            assert len(srv.requests) == 2  # the one on the dead connection never reached a handler
            await client.close()  # an empty pool for the next round


async def test_reused_connection_dying_after_the_upstream_had_the_request_a_while_is_not_retried(
    client: Client,
) -> None:
    """A POST the upstream held (and may have started generating, and billing) before its
    connection died is an error, not a second request."""

    async def handler(c: Conn) -> None:
        await c.request()
        c.send(http(200, b"first"))
        await c.drain()
        await c.request()
        await asyncio.sleep(0.3)  # working on it...
        c.reset()

    async with RawServer(handler) as srv:
        assert (await get(client, srv.url()))[1] == b"first"
        with pytest.raises(UpstreamError):
            await client.request("POST", srv.url(), b"generate", total=OK)
        assert [r.body for r in srv.requests] == [b"", b"generate"] and srv.connections == 1


async def test_bytes_beyond_the_announced_body_are_dropped_with_the_connection(client: Client) -> None:
    """An upstream that sends more than its Content-Length (here a whole second answer): the
    caller gets exactly the announced body, and the connection, out of step, is not reused."""

    async def handler(c: Conn) -> None:
        if c.server.connections == 1:
            await c.request()
            c.send(http(200, b"mine") + http(200, b"someone else's"))
            await c.drain()
            await asyncio.sleep(5)
            return
        await ok(b"fresh")(c)

    async with RawServer(handler) as srv:
        resp, body = await get(client, srv.url())
        assert (resp.status, body) == (200, b"mine")
        assert await fetch(client, srv.url()) == b"fresh"
        assert client.connections == 2


async def test_fresh_connection_closed_without_answer_is_not_retried(client: Client) -> None:
    async def handler(c: Conn) -> None:
        await c.request()
        c.writer.close()

    async with RawServer(handler) as srv:
        started = time.monotonic()
        with pytest.raises(UpstreamError):
            await client.request("POST", srv.url(), b"only once", total=OK)
        assert time.monotonic() - started < 5
        await asyncio.sleep(0.1)
        assert len(srv.requests) == 1 and srv.connections == 1 and client.connections == 1


async def test_reused_connection_broken_after_part_of_the_answer_is_not_retried(client: Client) -> None:
    async def handler(c: Conn) -> None:
        await c.request()
        c.send(http(200, b"first"))
        await c.drain()
        await c.request()
        c.send(b"HTTP/1.1 200 OK\r\nContent-Le")  # part of an answer: the upstream saw the request
        await c.drain()
        await asyncio.sleep(0.05)
        c.writer.close()

    async with RawServer(handler) as srv:
        await get(client, srv.url())
        with pytest.raises(UpstreamError):
            await client.request("POST", srv.url(), b"x", total=OK)
        await asyncio.sleep(0.1)
        assert len(srv.requests) == 2 and srv.connections == 1 and client.connections == 1


async def test_idle_seconds_expire_connections(client: Client) -> None:
    c = Client(idle_seconds=0.2)
    try:
        async with RawServer(ok()) as srv:
            await get(c, srv.url())
            await get(c, srv.url())
            assert c.connections == 1
            await asyncio.sleep(0.3)
            await get(c, srv.url())
            assert c.connections == 2 and srv.connections == 2
    finally:
        await c.close()


async def test_releasing_an_old_response_does_not_touch_the_next_exchange(client: Client) -> None:
    async def handler(c: Conn) -> None:
        while (req := await c.request()) is not None:
            c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n" + req.target.encode()[:3])
            await c.drain()
            await asyncio.sleep(0.05)
            c.send(req.target.encode()[3:6])
            await c.drain()

    async with RawServer(handler) as srv:
        r1 = await client.request("GET", srv.url("/aaaaa"), total=OK)
        assert await r1.read() == b"/aaaaa"
        r2 = await client.request("GET", srv.url("/bbbbb"), total=OK)  # same connection
        r1.close()
        r1.release()
        assert await r2.read() == b"/bbbbb"
        r3 = await client.request("GET", srv.url("/ccccc"), total=OK)
        assert await r3.read() == b"/ccccc"
        assert client.connections == 1 and srv.connections == 1


# --- release / close -----------------------------------------------------------------------------


async def test_release_without_reading_closes_the_connection(client: Client) -> None:
    async with RawServer(keep_alive(lambda _: http(200, b"x" * 100_000))) as srv:
        resp = await client.request("GET", srv.url(), total=OK)
        resp.release()  # the body is not read
        _, body = await get(client, srv.url())
        assert body == b"x" * 100_000
        assert client.connections == 2 and srv.connections == 2


async def test_release_after_reading_reuses_the_connection(client: Client) -> None:
    async with RawServer(ok(b"y" * 1000)) as srv:
        resp = await client.request("GET", srv.url(), total=OK)
        chunks = [c async for c in resp.iter_any()]
        assert b"".join(chunks) == b"y" * 1000
        resp.release()
        resp.release()  # twice is harmless
        await get(client, srv.url())
        assert client.connections == 1 and srv.connections == 1


async def test_close_does_not_reuse_the_connection(client: Client) -> None:
    async with RawServer(ok()) as srv:
        resp = await client.request("GET", srv.url(), total=OK)
        assert b"".join([p async for p in resp.iter_any()]) == b"ok"  # the whole body, then close()
        resp.close()
        await get(client, srv.url())
        assert client.connections == 2 and srv.connections == 2


async def test_read_releases_so_a_later_close_is_a_no_op(client: Client) -> None:
    """read() hands the connection back itself; a close() afterwards must not kill it (it may
    already carry someone else's exchange)."""
    async with RawServer(ok()) as srv:
        resp = await client.request("GET", srv.url(), total=OK)
        assert await resp.read() == b"ok"
        resp.close()
        await get(client, srv.url())
        assert client.connections == 1 and srv.connections == 1


async def test_cancelled_caller_does_not_leave_the_connection_for_reuse(client: Client) -> None:
    gate = asyncio.Event()
    seen_eof: list[bool] = []

    async def handler(c: Conn) -> None:
        await c.request()
        if c.server.connections == 1:
            seen_eof.append(await c.eof())
            return
        c.send(http(200, b"late"))
        await c.drain()
        await gate.wait()

    async with RawServer(handler) as srv:
        task = asyncio.create_task(client.request("GET", srv.url(), total=OK))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        _, body = await get(client, srv.url())
        assert body == b"late" and client.connections == 2
        for _ in range(50):
            if seen_eof:
                break
            await asyncio.sleep(0.05)
        assert seen_eof == [True]  # the client closed the abandoned connection
        gate.set()


# --- concurrency ---------------------------------------------------------------------------------


async def test_fifty_concurrent_requests_get_their_own_answers(client: Client) -> None:
    async def handler(c: Conn) -> None:
        while (req := await c.request()) is not None:
            n = int(req.target.rsplit("/", 1)[1])
            await asyncio.sleep((n % 7) * 0.01)  # answers finish out of order
            c.send(http(200, json.dumps({"n": n, "body": req.body.decode()}).encode() * (1 + n % 5)))
            await c.drain()

    async def one(n: int) -> bytes:
        resp = await client.request("POST", srv.url(f"/item/{n}"), f"payload-{n}".encode(), total=OK)
        assert resp.status == 200
        return await resp.read()

    async with RawServer(handler) as srv:
        for _wave in range(2):
            bodies = await asyncio.gather(*(one(n) for n in range(50)))
            for n, body in enumerate(bodies):
                assert body == json.dumps({"n": n, "body": f"payload-{n}"}).encode() * (1 + n % 5)
        assert len(srv.requests) == 100
        assert client.connections == srv.connections <= 50  # the second wave found the first's connections


# --- streaming -----------------------------------------------------------------------------------


async def test_iter_any_yields_pieces_as_they_arrive(client: Client) -> None:
    got_first = asyncio.Event()
    second_sent = asyncio.Event()

    async def handler(c: Conn) -> None:
        await c.request()
        c.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst \r\n")
        await c.drain()
        # a client that buffered the body would never set got_first: the server goes on after 3 s
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3):
                await got_first.wait()
        await asyncio.sleep(0.2)
        second_sent.set()
        c.send(b"6\r\nsecond\r\n0\r\n\r\n")
        await c.drain()

    async with RawServer(handler) as srv:
        started = time.monotonic()
        resp = await client.request("POST", srv.url("/stream"), b"{}", total=OK)
        pieces: list[bytes] = []
        first_before_second: bool | None = None
        async for piece in resp.iter_any():
            if not pieces:
                first_before_second = not second_sent.is_set()
                got_first.set()
            pieces.append(piece)
        assert pieces == [b"first ", b"second"]
        assert first_before_second is True
        assert time.monotonic() - started < 2.5  # the server never waited out its 3 s


async def test_slow_reader_pauses_reading_and_gets_every_byte_in_order(client: Client) -> None:
    body = os.urandom(16 * 1024 * 1024)
    server_done = asyncio.Event()

    async def handler(c: Conn) -> None:
        while await c.request() is not None:
            c.send(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode())
            for i in range(0, len(body), 65536):
                c.send(body[i : i + 65536])
                await c.drain()
            server_done.set()

    async with RawServer(handler) as srv:
        resp = await client.request("GET", srv.url("/big"), total=30)
        conn = resp._conn
        pieces: list[bytes] = []
        paused_seen = False
        done_early = True
        async for piece in resp.iter_any():
            pieces.append(piece)
            await asyncio.sleep(0.3 if len(pieces) == 1 else 0.002)  # a slow reader
            paused_seen = paused_seen or conn.paused
            if len(pieces) == 1:
                done_early = server_done.is_set()
        resp.release()
        assert b"".join(pieces) == body
        assert paused_seen, "the client never paused reading for its slow reader"
        assert not done_early, "the server wrote 16 MB while the reader held back: nothing pushed back"
        # what waits for the reader is bounded: HIGH_WATER plus at most one read (256 KiB in asyncio)
        assert max(len(p) for p in pieces) <= HIGH_WATER + 256 * 1024
        assert not conn.paused
        # a whole body read after pausing: the connection is reused, and reads again
        _, again = await get(client, srv.url("/big"), total=30)
        assert again == body and client.connections == 1


# --- a cap on what is read ------------------------------------------------------------------------


def endless(sent: list[int], announce: bool) -> Handler:
    """A handler answering /small with a small body, anything else with a 200 MB body made as it
    goes (64 KiB at a time, counted in `sent`): with its Content-Length announced, or chunked."""
    piece = b"x" * 65536
    size = 200 * 1024 * 1024

    async def handler(c: Conn) -> None:
        while (req := await c.request()) is not None:
            if req.target == "/small":
                c.send(http(200, b"small"))
                continue
            framing = f"Content-Length: {size}" if announce else "Transfer-Encoding: chunked"
            c.send(f"HTTP/1.1 200 OK\r\n{framing}\r\n\r\n".encode())
            chunk = piece if announce else b"10000\r\n" + piece + b"\r\n"
            for _ in range(size // len(piece)):
                c.send(chunk)
                sent[0] += len(piece)
                await c.drain()

    return handler


@pytest.mark.parametrize("announce", [True, False], ids=["content-length", "chunked"])
async def test_read_stops_at_its_limit_and_drops_the_connection(client: Client, announce: bool) -> None:
    sent = [0]
    limit = 1024 * 1024
    async with RawServer(endless(sent, announce)) as srv:
        resp = await client.request("POST", srv.url("/big"), b"{}", total=OK)
        with pytest.raises(UpstreamTooLarge) as refused:
            await resp.read(limit)
        assert refused.value.limit == limit and str(limit) in str(refused.value)
        assert resp._conn.closed  # dropped: the rest is never read
        await asyncio.sleep(0.2)
        # what the server could write is bounded by the limit and the sockets' buffers, not 200 MB
        assert sent[0] < limit + 16 * 1024 * 1024
        if announce:  # refused on the announced length: nothing of the body taken
            assert sent[0] < 16 * 1024 * 1024
        assert await fetch(client, srv.url("/small")) == b"small"  # on a new connection
        assert client.connections == 2


async def test_read_within_its_limit_is_whole(client: Client) -> None:
    async with RawServer(ok(b"y" * 1000)) as srv:
        resp = await client.request("GET", srv.url("/"), total=OK)
        assert await resp.read(1000) == b"y" * 1000
        assert (await fetch(client, srv.url("/"))) == b"y" * 1000 and client.connections == 1


# --- timeouts ------------------------------------------------------------------------------------


async def test_total_elapses_while_waiting_for_headers(client: Client) -> None:
    eof_seen: list[bool] = []

    async def handler(c: Conn) -> None:
        await c.request()
        if c.server.connections == 1:
            eof_seen.append(await c.eof())  # no answer; the client gives up and closes
            return
        c.send(http(200, b"answered"))
        await c.drain()
        await c.eof()

    async with RawServer(handler) as srv:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await client.request("POST", srv.url(), b"x", total=0.3)
        elapsed = time.monotonic() - started
        assert 0.28 <= elapsed < 2.0
        _, body = await get(client, srv.url())
        assert body == b"answered" and client.connections == 2 and srv.connections == 2
        for _ in range(50):
            if eof_seen:
                break
            await asyncio.sleep(0.05)
        assert eof_seen == [True]


async def test_total_elapses_mid_body_in_iter_any(client: Client) -> None:
    async def handler(c: Conn) -> None:
        if c.server.connections > 1:
            return await ok()(c)
        await c.request()
        c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        await c.drain()
        await c.eof()
        return None

    async with RawServer(handler) as srv:
        started = time.monotonic()
        resp = await client.request("GET", srv.url(), total=0.5)
        pieces: list[bytes] = []
        with pytest.raises(TimeoutError):
            await collect(resp, pieces)
        assert pieces == [b"0123456789"]
        assert 0.45 <= time.monotonic() - started < 2.5
        resp.release()
        await get(client, srv.url())
        assert client.connections == 2


async def test_total_covers_the_body_for_read(client: Client) -> None:
    async def handler(c: Conn) -> None:
        await c.request()
        c.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(100):  # a trickle that would last 5 s
            c.send(b"1\r\n.\r\n")
            await c.drain()
            await asyncio.sleep(0.05)

    async with RawServer(handler) as srv:
        started = time.monotonic()
        resp = await client.request("GET", srv.url(), total=0.4)
        with pytest.raises(TimeoutError):
            await resp.read()
        assert 0.35 <= time.monotonic() - started < 2.0


async def test_connect_timeout_with_a_full_backlog() -> None:
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(2):  # fill the accept queue; later SYNs are dropped
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", port))
            fillers.append(s)
        await asyncio.sleep(0.05)
        probe = socket.socket()
        probe.settimeout(0.2)
        try:
            probe.connect(("127.0.0.1", port))
            pytest.skip("this kernel accepts connections beyond the backlog")
        except TimeoutError:
            pass
        finally:
            probe.close()
        c = Client(connect_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="no connection"):
            await c.request("GET", f"http://127.0.0.1:{port}/", total=OK)
        assert 0.28 <= time.monotonic() - started < 2.0
        assert c.connections == 0
    finally:
        for s in fillers:
            s.close()
        listener.close()


async def test_connect_timeout_covers_the_tls_handshake() -> None:
    async def handler(c: Conn) -> None:
        await c.eof()  # a TCP server that never answers the ClientHello

    async with RawServer(handler) as srv:
        c = Client(connect_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await c.request("GET", srv.url(scheme="https"), total=OK)
        assert 0.28 <= time.monotonic() - started < 2.0
        assert c.connections == 0


async def test_connection_refused_is_an_upstream_error(client: Client) -> None:
    port = free_port()  # nothing listens there
    started = time.monotonic()
    with pytest.raises(UpstreamError, match="ConnectionRefusedError"):
        await client.request("GET", f"http://127.0.0.1:{port}/", total=OK)
    assert time.monotonic() - started < 2.0


# --- broken servers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n",
        b"HTTP/1.1 abc Nope\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\nBad Header Line\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=["ssh-banner", "bad-status", "two-lengths", "bad-header", "bad-chunk"],
)
async def test_garbage_from_the_server_is_an_upstream_error(client: Client, garbage: bytes) -> None:
    async def handler(c: Conn) -> None:
        await c.request()
        c.send(garbage)
        await c.drain()
        await c.eof()

    async with RawServer(handler) as srv:
        started = time.monotonic()
        with pytest.raises(UpstreamError):
            await fetch(client, srv.url())
        assert time.monotonic() - started < 5
        assert len(srv.requests) == 1


async def test_switching_protocols_is_an_upstream_error(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(c: Conn) -> None:
        await c.request()
        c.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nxyz")
        await c.drain()
        await c.eof()

    async with RawServer(handler) as srv:
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            with pytest.raises(UpstreamError, match="invalid HTTP response"):
                await client.request("GET", srv.url(), total=OK)
            await asyncio.sleep(0.05)
        assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []


async def test_garbage_then_close_is_an_upstream_error(client: Client) -> None:
    async def handler(c: Conn) -> None:
        await c.request()
        c.send(b"HTT")
        await c.drain()
        c.writer.close()

    async with RawServer(handler) as srv:
        with pytest.raises(UpstreamError):
            await client.request("GET", srv.url(), total=OK)


async def test_server_talking_out_of_turn_on_an_idle_connection(client: Client) -> None:
    async def handler(c: Conn) -> None:
        while await c.request() is not None:
            c.send(http(200, b"ok"))
            await c.drain()
            await asyncio.sleep(0.05)
            c.send(http(200, b"unasked"))  # a second answer nobody asked for
            await c.drain()

    async with RawServer(handler) as srv:
        _, body = await get(client, srv.url())
        assert body == b"ok"
        await asyncio.sleep(0.2)
        _, body = await get(client, srv.url())  # not the stray answer
        assert body == b"ok" and client.connections == 2


@pytest.mark.parametrize("framing", ["content-length", "chunked", "until-close"])
async def test_reset_mid_body_is_an_upstream_error(client: Client, framing: str) -> None:
    head = {
        "content-length": b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n",
        "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n",
        "until-close": b"HTTP/1.1 200 OK\r\n\r\n",
    }[framing]

    async def handler(c: Conn) -> None:
        await c.request()
        c.send(head + b"a" * 1000)
        await c.drain()
        await asyncio.sleep(0.1)  # the client has it
        c.reset()

    async with RawServer(handler) as srv:
        resp = await client.request("GET", srv.url(), total=OK)
        assert resp.status == 200
        with pytest.raises(UpstreamError):
            await resp.read()


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_close_mid_body_is_an_upstream_error(client: Client, framing: str) -> None:
    head = {
        "content-length": b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n",
        "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n",
    }[framing]

    async def handler(c: Conn) -> None:
        await c.request()
        c.send(head + b"a" * 1000)
        await c.drain()
        await asyncio.sleep(0.05)
        c.writer.close()  # a FIN before the body's end

    async with RawServer(handler) as srv:
        resp = await client.request("GET", srv.url(), total=OK)
        pieces: list[bytes] = []
        with pytest.raises(UpstreamError):
            await collect(resp, pieces)
        assert b"".join(pieces) == b"a" * 1000


# --- request validation, origin() ---------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Evil": "a\r\nX-Injected: 1"},
        {"X-Evil": "a\nX-Injected: 1"},
        {"X-Evil": "a\rb"},
        {"X-Evil\r\nX-Injected": "1"},
    ],
    ids=["crlf-value", "lf-value", "cr-value", "crlf-name"],
)
async def test_header_injection_is_refused_before_anything_is_sent(
    client: Client, headers: dict[str, str]
) -> None:
    async with RawServer(ok()) as srv:
        with pytest.raises(UpstreamError, match="line break"):
            await client.request("POST", srv.url(), b"{}", headers, total=OK)
        await asyncio.sleep(0.05)
        assert srv.connections == 0 and srv.requests == [] and client.connections == 0


async def test_header_not_encodable_is_an_upstream_error(client: Client) -> None:
    async with RawServer(ok()) as srv:
        with pytest.raises(UpstreamError):
            await client.request("POST", srv.url(), b"{}", {"Authorization": "Bearer s€cret"}, total=OK)
        assert srv.connections == 0 and client.connections == 0


def test_origin() -> None:
    o = origin("http://api.example.com/v1/chat/completions")
    assert (o.scheme, o.host, o.port, o.target, o.host_header) == (
        "http",
        "api.example.com",
        80,
        "/v1/chat/completions",
        "api.example.com",
    )
    o = origin("https://api.example.com")
    assert (o.port, o.target, o.host_header) == (443, "/", "api.example.com")
    assert origin("https://api.example.com:443/x").host_header == "api.example.com"
    assert origin("http://api.example.com:80/x").host_header == "api.example.com"
    assert origin("https://api.example.com:8443/x").host_header == "api.example.com:8443"
    assert origin("http://api.example.com:443/x").host_header == "api.example.com:443"  # not http's default
    o = origin("http://[::1]:8080/v1/models?limit=5&after=m#frag")
    assert (o.host, o.port, o.target, o.host_header) == (
        "::1",
        8080,
        "/v1/models?limit=5&after=m",
        "[::1]:8080",
    )
    assert origin("https://[2001:db8::1]/").host_header == "[2001:db8::1]"
    assert origin("http://user:pw@host:81/p").host_header == "host:81"
    assert origin("HTTP://Example.COM/Path").host_header == "example.com"  # the path keeps its case
    assert origin("HTTP://Example.COM/Path").target == "/Path"
    assert origin("http://h/?").target == "/"
    assert origin("http://h?q=1").target == "/?q=1"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/file",
        "ws://example.com/socket",
        "example.com/v1",
        "http:///no-host",
        "",
        "http://host:99999/",
        "http://host:port/",
        "http://[::1/",
    ],
)
async def test_bad_urls_are_upstream_errors(client: Client, url: str) -> None:
    with pytest.raises(UpstreamError):
        origin(url)
    with pytest.raises(UpstreamError):
        await client.request("GET", url, total=OK)
    assert client.connections == 0


async def test_ipv6_loopback(client: Client) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        srv = RawServer(ok(b"six"), host="::1")
        await srv.__aenter__()
    except OSError as err:
        pytest.skip(f"no IPv6 loopback: {err}")
    try:
        resp, body = await get(client, srv.url("/v6?q=1"))
        assert (resp.status, body) == (200, b"six")
        [req] = srv.requests
        assert req.values("host") == [f"[::1]:{srv.port}"]
        assert req.request_line == "GET /v6?q=1 HTTP/1.1"
    finally:
        await srv.__aexit__(None, None, None)


# --- TLS -----------------------------------------------------------------------------------------


@dataclass
class Cert:
    cert: Path
    key: Path


def _self_signed(directory: Path, name: str, dns: list[str], ips: list[str]) -> Cert:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    out = Cert(directory / f"{name}.crt", directory / f"{name}.key")
    out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    out.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return out


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Cert]:
    d = tmp_path_factory.mktemp("tls")
    return {
        "loopback": _self_signed(d, "localhost", ["localhost"], ["127.0.0.1"]),
        "elsewhere": _self_signed(d, "upstream.example", ["upstream.example"], []),
    }


def _server_tls(cert: Cert, sni: list[str | None]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert.cert, cert.key)

    def record(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        sni.append(name)

    ctx.sni_callback = record
    return ctx


async def test_tls_with_a_trusted_self_signed_cert(certs: dict[str, Cert]) -> None:
    sni: list[str | None] = []
    big = os.urandom(2 * 1024 * 1024)
    answer = keep_alive(lambda req: http(200, big if req.target == "/big" else b"secure " + req.body))
    async with RawServer(answer, tls=_server_tls(certs["loopback"], sni)) as srv:
        c = Client(connect_timeout=5, tls=ssl.create_default_context(cafile=str(certs["loopback"].cert)))
        try:
            for _ in range(2):
                resp = await c.request(
                    "POST", srv.url("/x", scheme="https", host="localhost"), b"hi", total=OK
                )
                assert (resp.status, await resp.read()) == (200, b"secure hi")
            _, body = await get(c, srv.url("/big", scheme="https", host="localhost"))
            assert body == big
            assert c.connections == 1 and srv.connections == 1  # kept alive over TLS
            assert sni == ["localhost"]  # SNI sent for a name
            assert srv.requests[0].values("host") == [f"localhost:{srv.port}"]
            # the IP SAN matches a request by address (no SNI for an IP)
            _, body = await get(c, srv.url("/big", scheme="https", host="127.0.0.1"))
            assert body == big and sni == ["localhost", None]
        finally:
            await c.close()


async def test_tls_body_delimited_by_close(certs: dict[str, Cert]) -> None:
    async def handler(c: Conn) -> None:
        await c.request()
        c.send(b"HTTP/1.1 200 OK\r\n\r\nuntil the close_notify")
        await c.drain()
        c.writer.close()

    async with RawServer(handler, tls=_server_tls(certs["loopback"], [])) as srv:
        c = Client(connect_timeout=5, tls=ssl.create_default_context(cafile=str(certs["loopback"].cert)))
        try:
            _, body = await get(c, srv.url(scheme="https", host="localhost"))
            assert body == b"until the close_notify"
        finally:
            await c.close()


async def test_tls_hostname_mismatch_is_an_upstream_error(certs: dict[str, Cert]) -> None:
    async with RawServer(ok(), tls=_server_tls(certs["elsewhere"], [])) as srv:
        c = Client(connect_timeout=5, tls=ssl.create_default_context(cafile=str(certs["elsewhere"].cert)))
        try:
            with pytest.raises(UpstreamError, match="mismatch"):
                await c.request("GET", srv.url(scheme="https", host="localhost"), total=OK)
            assert srv.requests == [] and c.connections == 0
        finally:
            await c.close()


async def test_tls_untrusted_cert_with_the_default_context(certs: dict[str, Cert]) -> None:
    async with RawServer(ok(), tls=_server_tls(certs["loopback"], [])) as srv:
        c = Client(connect_timeout=5)  # the system's trust store
        try:
            with pytest.raises(UpstreamError, match="CERTIFICATE_VERIFY_FAILED"):
                await c.request("GET", srv.url(scheme="https", host="localhost"), total=OK)
            assert srv.requests == [] and c.connections == 0
        finally:
            await c.close()


async def test_plain_http_to_a_tls_server_is_an_upstream_error(
    client: Client, certs: dict[str, Cert]
) -> None:
    async with RawServer(ok(), tls=_server_tls(certs["loopback"], [])) as srv:
        with pytest.raises(UpstreamError):
            await fetch(client, srv.url())


# --- the project's mock upstream -----------------------------------------------------------------


async def test_mock_upstream_json_and_stream(client: Client, mock_upstream: MockUpstreamProcess) -> None:
    url = f"{mock_upstream.url}/chat/completions"
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-mock"}
    messages = [{"role": "user", "content": "Say hello to the client"}]
    payload = json.dumps({"model": "gpt-4o-mini", "messages": messages}).encode()
    resp = await client.request("POST", url, payload, headers, total=OK)
    assert resp.status == 200 and resp.headers["content-type"].startswith("application/json")
    completion = json.loads(await resp.read())
    assert completion["object"] == "chat.completion" and completion["usage"]["total_tokens"] > 0

    mock_upstream.configure(chunk_delay_ms=20.0)
    stream = {"model": "gpt-4o-mini", "messages": messages, "stream": True}
    stream["stream_options"] = {"include_usage": True}
    resp = await client.request("POST", url, json.dumps(stream).encode(), headers, total=OK)
    assert resp.status == 200 and resp.headers["content-type"].startswith("text/event-stream")
    pieces = [p async for p in resp.iter_any()]
    resp.release()
    text = b"".join(pieces).decode()
    assert len(pieces) > 3  # paced chunks arrive as they are sent
    events = [line[6:] for line in text.split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-1]["usage"]["completion_tokens"] > 0
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])

    resp = await client.request("GET", f"{mock_upstream.url}/models", total=OK)
    assert resp.status == 200 and json.loads(await resp.read())["object"] == "list"
    assert client.connections == 1  # one kept-alive connection for JSON, the stream and the GET
    posts = [r for r in mock_upstream.requests() if r["method"] == "POST"]
    assert [r["body"].get("stream", False) for r in posts] == [False, True]
    assert all("accept-encoding" not in {h.lower() for h in r["headers"]} for r in posts)


# --- nginx ---------------------------------------------------------------------------------------

NGINX_CONFIG = """daemon off;
worker_processes 1;
{user}pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_max_body_size 16m;
  keepalive_requests 2;
  keepalive_timeout 1s;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  server {{
    listen 127.0.0.1:{port};
    root {dir}/www;
    location = /hello {{ default_type text/plain; return 200 'hello from nginx'; }}
  }}
}}
"""


@dataclass
class Nginx:
    port: int
    big: bytes
    child: Child = field(repr=False)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    binary = shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin")
    if binary is None:
        pytest.skip("nginx is not installed")
    d = tmp_path_factory.mktemp("nginx")
    (d / "www").mkdir()
    big = os.urandom(3 * 1024 * 1024)
    (d / "www" / "big.bin").write_bytes(big)
    port = free_port()
    user = "user root;\n" if os.geteuid() == 0 else ""
    (d / "nginx.conf").write_text(NGINX_CONFIG.format(user=user, dir=d, port=port))
    argv = [binary, "-p", str(d), "-e", str(d / "error.log"), "-c", str(d / "nginx.conf")]
    child = Child(f"nginx-{port}", argv, d / "stdout.log").start()

    def up() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True

    try:
        child.wait_until(up, timeout=20)
        yield Nginx(port, big, child)
    finally:
        child.stop()


async def test_nginx_keepalive_requests_and_idle_timeout(client: Client, nginx: Nginx) -> None:
    bodies = []
    closes = []
    for _ in range(3):
        resp, body = await get(client, nginx.url("/hello"))
        bodies.append(body)
        closes.append(resp.headers.get("connection"))
    assert bodies == [b"hello from nginx"] * 3
    assert closes == ["keep-alive", "close", "keep-alive"]  # keepalive_requests 2
    assert client.connections == 2
    await asyncio.sleep(1.5)  # past keepalive_timeout: nginx closes the idle connection
    _, body = await get(client, nginx.url("/hello"))
    assert body == b"hello from nginx" and client.connections == 3


async def test_nginx_large_bodies_both_ways(client: Client, nginx: Nginx) -> None:
    resp, body = await get(client, nginx.url("/big.bin"))
    assert resp.status == 200 and resp.headers["content-length"] == str(len(nginx.big))
    assert body == nginx.big
    resp = await client.request("POST", nginx.url("/hello"), os.urandom(2 * 1024 * 1024), total=OK)
    assert (resp.status, await resp.read()) == (200, b"hello from nginx")
    assert client.connections == 1
    resp, body = await get(client, nginx.url("/missing"))
    assert resp.status == 404 and b"404" in body


# --- the same exchanges on uvloop (the gateway's loop) -------------------------------------------

UVLOOP_CASES: dict[str, Callable[[Client, dict[str, Cert]], Awaitable[None]]] = {
    "chunked": lambda c, _: test_chunked_body_with_extensions_and_trailers_then_reuse(c),
    "until-close": lambda c, _: test_body_delimited_by_close_is_read_whole(c),
    "1xx": lambda c, _: test_informational_responses_are_skipped(c, True),
    "large-request": lambda c, _: test_large_request_body_arrives_intact(c),
    "idle-closed": lambda c, _: test_idle_connection_closed_by_the_server_is_dropped(c),
    "retry": lambda c, _: test_reused_connection_dying_unanswered_is_retried_once_unless_it_is_a_post(
        c, "GET"
    ),
    "retry-race": lambda c, _: test_reused_connection_closed_just_before_the_request_is_retried(c),
    "no-retry": lambda c, _: test_fresh_connection_closed_without_answer_is_not_retried(c),
    "concurrent": lambda c, _: test_fifty_concurrent_requests_get_their_own_answers(c),
    "streaming": lambda c, _: test_iter_any_yields_pieces_as_they_arrive(c),
    "slow-reader": lambda c, _: test_slow_reader_pauses_reading_and_gets_every_byte_in_order(c),
    "headers-timeout": lambda c, _: test_total_elapses_while_waiting_for_headers(c),
    "body-timeout": lambda c, _: test_total_elapses_mid_body_in_iter_any(c),
    "refused": lambda c, _: test_connection_refused_is_an_upstream_error(c),
    "reset-length": lambda c, _: test_reset_mid_body_is_an_upstream_error(c, "content-length"),
    "reset-until-close": lambda c, _: test_reset_mid_body_is_an_upstream_error(c, "until-close"),
    "close-mid-body": lambda c, _: test_close_mid_body_is_an_upstream_error(c, "chunked"),
    "tls": lambda _, certs: test_tls_with_a_trusted_self_signed_cert(certs),
    "tls-until-close": lambda _, certs: test_tls_body_delimited_by_close(certs),
    "tls-untrusted": lambda _, certs: test_tls_untrusted_cert_with_the_default_context(certs),
}


@pytest.mark.parametrize("case", list(UVLOOP_CASES))
def test_on_uvloop(case: str, certs: dict[str, Cert]) -> None:
    uvloop = pytest.importorskip("uvloop")

    async def run() -> None:
        c = Client(connect_timeout=5.0)
        try:
            await UVLOOP_CASES[case](c, certs)
        finally:
            await c.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert "uvloop" in type(runner.get_loop()).__module__
        runner.run(run())

"""The gateway's HTTP/1.1 client for upstream calls: keep-alive connections, httptools parsing.

Why our own: the upstream call through aiohttp's ClientSession cost about a quarter of the
gateway's CPU per request (cookie jar, tracing hooks, redirects, auto headers, a task and a timer
per request; docs/performance.md). An upstream call needs much less: one POST (or GET/DELETE for
stored responses) with a body whose length is known, and the response as it arrives — whole, or
chunk by chunk for a stream. What this client does:

* one write per request (request line, headers and body together); no `Accept-Encoding`, so
  bodies come uncompressed, as the gateway reads them (usage) and hands them on;
* responses parsed by httptools (llhttp: Content-Length, chunked, or until the connection
  closes); the body reaches the caller as it arrives, reading pauses while more than
  `HIGH_WATER` bytes wait for a slow reader;
* connections kept per (scheme, host, port) and reused after a complete response the server let
  live; idle ones are dropped after `idle_seconds` (4 s: below the 5 s keep-alive of uvicorn,
  which most model servers run on, so the server does not close one as it is reused), or as soon
  as the server closes them. An idempotent request (GET, DELETE, …) that meets a kept-alive
  connection the server closed at that moment is sent once more on a new one (`RETRY_WINDOW`); a
  POST never is: once written, the upstream may have started on it, and it bills what it
  generated (the caller gets `Unanswered`, and charges it);
* TLS with the system's trust store (`ssl.create_default_context()`), SNI, hostname checks;
* `connect_timeout` for the connection (and TLS handshake), `timeout` for the whole exchange,
  from sending to the body's end (aiohttp's `total`).

Failures before the request was written are `UpstreamError` (nothing usable came) or the
built-in `TimeoutError`; after it, their `Unanswered` kinds. An answer past the caller's size
limit is `UpstreamTooLarge` (an `UpstreamError`), raised as soon as the limit is passed. No proxy
support (the gateway calls its providers directly) and no redirects (an API that redirects a POST
is misconfigured; the 3xx is handed on).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import httptools

HIGH_WATER = 256 * 1024  # bytes of a response waiting for its reader before reading pauses
# A request on a reused connection that died before any answer is sent again only when it died at
# once: the server had closed the idle connection as we wrote (the keep-alive race). Later, the
# upstream may have been working on it: that is an error. A POST is never sent twice (the mock's
# reset fault showed it: generated, billed, cut within 0.1 s, sent again, billed twice).
RETRY_WINDOW = 0.1
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "PUT"})


class UpstreamError(Exception):
    """The upstream could not be reached, or broke off / garbled its response."""


class Unanswered(Exception):
    """The request was written but no answer came (a timeout, a reset, an EOF before the status
    line): the upstream may be generating it — and billing it."""


class UnansweredTimeout(Unanswered, TimeoutError):
    pass


class UnansweredError(Unanswered, UpstreamError):
    pass


class UpstreamTooLarge(UpstreamError):
    """An answer (or one event of a stream) larger than the gateway takes: the read stopped at the
    cap and the connection was dropped. Whether it is charged is the caller's decision."""

    def __init__(self, what: str, limit: int):
        super().__init__(f"the upstream's {what} is larger than {limit} bytes")
        self.what, self.limit = what, limit


class _Stray(Exception):
    """More bytes than the answer: the connection is out of step and must not be reused."""


@dataclass(frozen=True)
class Origin:
    """Where a URL's request goes, and the request target and Host header for it."""

    scheme: str
    host: str
    port: int
    target: str  # path and query
    host_header: str


@lru_cache(maxsize=4096)
def origin(url: str) -> Origin:
    try:
        parts = urlsplit(url)
        explicit_port = parts.port  # raises ValueError for a port that is not a number in 0-65535
    except ValueError as err:  # also an unclosed IPv6 bracket
        raise UpstreamError(f"not a valid URL: {err}") from err
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UpstreamError(f"not an http(s) URL: {parts.scheme}://")
    port = explicit_port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname
    default = port == (443 if parts.scheme == "https" else 80)
    name = f"[{host}]" if ":" in host else host
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Origin(parts.scheme, host, port, target, name if default else f"{name}:{port}")


def _request_bytes(method: str, o: Origin, headers: Mapping[str, str], body: bytes) -> bytes:
    lines = [f"{method} {o.target} HTTP/1.1", f"Host: {o.host_header}"]
    for name, value in headers.items():
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
            raise UpstreamError(f"the request header {name!r} contains a line break")
        lines.append(f"{name}: {value}")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    lines.append("\r\n")
    try:
        return "\r\n".join(lines).encode("latin-1") + body
    except UnicodeEncodeError as err:
        raise UpstreamError(f"a request header is not latin-1: {err}") from err


class Response:
    """An upstream response: status and headers at once, the body as it arrives."""

    def __init__(self, conn: _Connection):
        self._conn = conn
        self.status = 0
        self.headers: dict[str, str] = {}  # lower-case names
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._complete = False
        self._error: BaseException | None = None
        self._wakeup: asyncio.Future[None] | None = None

    # --- fed by the connection ---------------------------------------------------------------

    def _body(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER:
            self._conn.pause()
        self._wake()

    def _finished(self, error: BaseException | None = None) -> None:
        if self._complete or self._error is not None:
            return
        if error is None:
            self._complete = True
        else:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        w = self._wakeup
        if w is not None and not w.done():
            w.set_result(None)

    # --- read by the caller -------------------------------------------------------------------

    async def _more(self) -> bytes | None:
        """What has arrived since the last call (waiting for something), or None at the end."""
        while not self._chunks:
            if self._complete:
                return None
            if self._error is not None:
                raise self._error
            self._wakeup = self._conn.loop.create_future()
            await self._wakeup
            self._wakeup = None
        data = b"".join(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
        self._chunks.clear()
        self._buffered = 0
        self._conn.resume()
        return data

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body. Past `limit` bytes (announced or arrived) `UpstreamTooLarge`: the read
        stops there and the connection is dropped, so what is held stays bounded."""
        declared = self.headers.get("content-length", "")
        if limit is not None and declared.isdigit() and int(declared) > limit:
            self.close()
            raise UpstreamTooLarge("answer", limit)
        parts = []
        size = 0
        while (data := await self._more()) is not None:
            size += len(data)
            if limit is not None and size > limit:
                self.close()
                raise UpstreamTooLarge("answer", limit)
            parts.append(data)
        self.release()
        return b"".join(parts)

    async def iter_any(self) -> AsyncIterator[bytes]:
        """The body in the pieces it arrives in."""
        while (data := await self._more()) is not None:
            yield data

    def release(self) -> None:
        """Done with it: the connection goes back to the pool if the body was read to its end."""
        self._conn.done(self, reusable=self._complete and not self._chunks)

    def close(self) -> None:
        """Done with it, and with its connection."""
        self._conn.done(self, reusable=False)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one exchange at a time."""

    def __init__(self, client: Client, key: tuple[str, str, int]):
        self.client = client
        self.key = key
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.headers_received: asyncio.Future[None] | None = None
        self.deadline: asyncio.TimerHandle | None = None
        self.closed = False
        self.keep_alive = False
        self.paused = False
        self.idle_since = 0.0
        self.heard = False  # any byte of the current exchange's response arrived
        self.sent_at = 0.0  # loop time the current request was written
        self.stray: _Stray | None = None
        self._header: list[tuple[bytes, bytes]] = []
        self._length_known = False
        self._informational = False  # a 1xx response before the real one

    # --- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport

    def data_received(self, data: bytes) -> None:
        if self.response is None:  # nothing asked: a server talking out of turn
            self.abort()
            return
        self.heard = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            if not isinstance(self.stray, _Stray):
                raise
            self.abort()  # the complete answer is kept; the connection is out of step
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as err:  # 101: not an answer
            self._fail(UpstreamError(f"invalid HTTP response: {err}"))
            self.abort()

    def eof_received(self) -> bool | None:
        self.closed = True  # the server is done with it: never handed out again
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.client.forget(self)
        r = self.response
        if exc is None and r is not None and r.status and not self._length_known and not r._complete:
            r._finished()  # a body delimited by the connection's end (a clean one: not a reset)
        else:
            self._fail(UpstreamError("the upstream closed the connection"))

    # --- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        r = self.response
        if r is None or r._complete:  # bytes beyond the answer (a body longer than announced…)
            self.stray = _Stray()
            raise self.stray  # stops the parser: the connection is dropped, the answer stays whole

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header.append((name, value))

    def on_headers_complete(self) -> None:
        r = self.response
        if r is None:
            return
        status = self.parser.get_status_code()
        if status < 200:  # 1xx: informational, the response follows
            self._header = []
            self._informational = True
            return
        r.status = status
        headers: dict[str, str] = {}
        for name, value in self._header:
            n = name.decode("latin-1").lower()
            v = value.decode("latin-1")
            headers[n] = f"{headers[n]}, {v}" if n in headers else v
            if n in ("content-length", "transfer-encoding"):
                self._length_known = True
        r.headers = headers
        self._header = []
        self.keep_alive = self.parser.should_keep_alive()
        if self.headers_received is not None and not self.headers_received.done():
            self.headers_received.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response._body(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        if self.response is not None:
            self.response._finished()

    # --- the exchange --------------------------------------------------------------------------

    def send(self, data: bytes, timeout: float) -> Response:
        assert self.transport is not None
        self.response = r = Response(self)
        self._header = []
        self._length_known = False
        self._informational = False
        self.heard = False
        self.sent_at = self.loop.time()
        self.keep_alive = False
        self.headers_received = self.loop.create_future()
        self.deadline = self.loop.call_later(timeout, self._timed_out)
        self.transport.write(data)
        return r

    def _timed_out(self) -> None:
        self.deadline = None
        self._fail(TimeoutError("the upstream did not answer in time"))
        self.abort()

    def _fail(self, err: BaseException) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        h = self.headers_received
        if h is not None and not h.done():
            h.set_exception(err)
            h.exception()  # retrieved: a caller that already left must not log it
        if self.response is not None:
            self.response._finished(err)

    def done(self, response: Response, reusable: bool) -> None:
        if response is not self.response:
            return
        self.response = None
        self.headers_received = None
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        if reusable and self.keep_alive and not self.closed:
            self.resume()
            self.client.give_back(self)
        else:
            self.abort()

    def pause(self) -> None:
        if not self.paused and self.transport is not None and not self.closed:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class Client:
    """Requests to upstreams over kept-alive HTTP/1.1 connections."""

    def __init__(
        self,
        connect_timeout: float = 10.0,
        idle_seconds: float = 4.0,
        tls: ssl.SSLContext | None = None,
    ):
        self.connect_timeout = connect_timeout
        self.idle_seconds = idle_seconds
        self.tls = tls or ssl.create_default_context()
        self.idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self.connections = 0  # opened so far (metrics, tests)

    async def request(
        self,
        method: str,
        url: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        total: float = 600.0,
    ) -> Response:
        """Send a request; returns once the response's status and headers have arrived. `total`
        (seconds) bounds the whole exchange, to the body's end. Failures before the request was
        written raise `UpstreamError` / `TimeoutError`; after it, their `Unanswered` kinds."""
        o = origin(url)
        data = _request_bytes(method, o, headers or {}, body)
        for retry in (False, True):
            conn = self._reusable((o.scheme, o.host, o.port))
            reused = conn is not None
            if conn is None:
                conn = await self._connect(o)
            response = conn.send(data, total)
            assert conn.headers_received is not None
            try:
                await conn.headers_received
            except UpstreamError as err:
                response.close()
                if (
                    reused
                    and method in IDEMPOTENT
                    and not conn.heard
                    and not retry
                    and conn.loop.time() - conn.sent_at < RETRY_WINDOW
                ):
                    continue  # a kept-alive connection the server closed as we wrote: not an answer
                raise UnansweredError(str(err)) from err
            except TimeoutError as err:
                response.close()
                raise UnansweredTimeout(str(err)) from err
            except BaseException:
                response.close()
                raise
            return response
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _reusable(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self.idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self.idle_seconds:
                return conn
            conn.abort()
        return None

    async def _connect(self, o: Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        key = (o.scheme, o.host, o.port)
        tls: Any = self.tls if o.scheme == "https" else None
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, key),
                    o.host,
                    o.port,
                    ssl=tls,
                    server_hostname=o.host if tls else None,
                )
        except TimeoutError as err:
            raise TimeoutError(f"no connection to {o.host}:{o.port} within {self.connect_timeout} s") from err
        except (OSError, ssl.SSLError) as err:
            raise UpstreamError(f"{type(err).__name__}: {err}") from err
        self.connections += 1
        return conn

    def give_back(self, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        idle = self.idle.setdefault(conn.key, [])
        while idle and conn.idle_since - idle[0].idle_since >= self.idle_seconds:
            idle.pop(0).abort()  # the oldest have been idle too long
        idle.append(conn)

    def forget(self, conn: _Connection) -> None:
        idle = self.idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    async def close(self) -> None:
        for idle in self.idle.values():
            for conn in idle:
                conn.abort()
        self.idle.clear()

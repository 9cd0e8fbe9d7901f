"""One pipelined Redis connection for the ledger's scripts: the gateway's hot path.

Every request through the gateway makes two script calls (reserve, settle). Through redis-py's
asyncio client each call checks a connection out of the pool, writes, and waits under its own
timeout task: about a fifth of a request's CPU (docs/performance.md). Here every call of a
process shares one connection:

* commands issued in the same turn of the event loop leave in one write (one syscall, and one
  read for Redis), replies are matched to callers in order (Redis answers in order);
* a call waits at most `timeout` (a timer, not a task), then fails alone: its reply, when it
  comes, is read and dropped. A connection that has answered nothing for `4 × timeout` while
  calls wait is taken for dead (a half-open socket, a vanished host): it is dropped, every call
  waiting on it fails, and the next call connects again;
* scripts go as EVALSHA; they are loaded (SCRIPT LOAD) on each new connection and again after a
  NOSCRIPT (Redis restarted empty or SCRIPT FLUSH).

Failures are the built-in ConnectionError and TimeoutError (both OSError, which the ledger turns
into LedgerUnavailable); a script's own error is redis-py's ResponseError, as before. Redis
Cluster keeps redis-py's client (it routes by slot); this is for one Redis (`redis://`,
`rediss://`, `unix://`).
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import hiredis
import redis.connection
import redis.exceptions

Arg = str | bytes | int


def encode(args: Sequence[Arg]) -> bytes:
    """One command in RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        b = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


@dataclass(frozen=True)
class Target:
    """Where and how to connect, from a `redis://`, `rediss://` or `unix://` URL."""

    host: str = "localhost"
    port: int = 6379
    path: str | None = None  # a unix socket
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: ssl.SSLContext | None = None

    @classmethod
    def from_url(cls, url: str, password: str | None = None) -> Target:
        scheme = urlsplit(url).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"not a single Redis URL: {scheme}://")
        kw: dict[str, Any] = redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
        tls = None
        if scheme == "rediss":
            tls = ssl.create_default_context(cafile=kw.get("ssl_ca_certs"))
            if kw.get("ssl_certfile"):  # a client certificate (Redis's tls-auth-clients)
                tls.load_cert_chain(kw["ssl_certfile"], kw.get("ssl_keyfile"), kw.get("ssl_password"))
            if kw.get("ssl_check_hostname") in (False, "false", "False", "0", "no"):
                tls.check_hostname = False
            reqs = kw.get("ssl_cert_reqs")
            if reqs in ("none", ssl.CERT_NONE):
                tls.check_hostname = False
                tls.verify_mode = ssl.CERT_NONE
            elif reqs in ("optional", ssl.CERT_OPTIONAL):
                tls.verify_mode = ssl.CERT_OPTIONAL
        return cls(
            host=kw.get("host", "localhost"),
            port=int(kw.get("port", 6379)),
            path=kw.get("path"),
            db=int(kw.get("db", 0) or 0),
            username=kw.get("username"),
            password=kw.get("password") or password,
            tls=tls,
        )


class _Connection(asyncio.Protocol):
    """The wire: writes coalesced per loop turn, replies handed to waiters in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.reader = hiredis.Reader(encoding="utf-8", errors="replace")
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.out: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.heard = loop.time()  # when it last answered, or began waiting from silence

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport

    def send(self, command: bytes) -> asyncio.Future[Any]:
        if self.closed:
            raise ConnectionError("redis: connection closed")
        fut = self.loop.create_future()
        if not self.waiting:
            self.heard = self.loop.time()
        self.waiting.append(fut)
        if not self.out:
            self.loop.call_soon(self._flush)
        self.out.append(command)
        return fut

    def _flush(self) -> None:
        out, self.out = self.out, []
        if self.transport is not None and not self.closed:
            self.transport.write(b"".join(out))

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as err:
                self.abort(ConnectionError(f"redis: protocol error: {err}"))
                return
            if reply is False:
                return
            if not self.waiting:  # a reply nobody asked for: the stream is out of step
                self.abort(ConnectionError("redis: unexpected reply"))
                return
            self.heard = self.loop.time()
            fut = self.waiting.popleft()
            if fut.done():
                continue
            if isinstance(reply, hiredis.ReplyError):
                fut.set_exception(_error(str(reply)))
                if str(reply).startswith(_RECONNECT):  # a replica now, or our login is gone
                    self.abort(ConnectionError(f"redis: {reply}"))
                    return
            else:
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"redis: connection lost: {exc or 'closed'}"))

    def abort(self, err: Exception) -> None:
        """Drop the connection; everyone waiting on it gets `err`."""
        self._fail(err)
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, err: Exception) -> None:
        self.closed = True
        while self.waiting:
            fut = self.waiting.popleft()
            if not fut.done():
                fut.set_exception(err)


class Pipelined:
    """Script calls (and plain commands) over one shared, pipelined connection."""

    def __init__(self, target: Target, scripts: Mapping[str, str], timeout: float = 0.5):
        self.target = target
        self.timeout = timeout
        self.sources = dict(scripts)
        self.shas = {name: hashlib.sha1(src.encode()).hexdigest() for name, src in scripts.items()}  # noqa: S324 - Redis names scripts by SHA-1
        self.connects = 0  # connections made (metrics, tests)
        self._conn: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None

    @classmethod
    def from_url(
        cls, url: str, scripts: Mapping[str, str], timeout: float = 0.5, password: str | None = None
    ) -> Pipelined:
        return cls(Target.from_url(url, password), scripts, timeout)

    async def run(self, name: str, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """EVALSHA script `name`; loads it again after a NOSCRIPT (Redis lost its script cache)."""
        command = encode(["EVALSHA", self.shas[name], len(keys), *keys, *args])
        try:
            return await self.execute(command)
        except redis.exceptions.ResponseError as err:
            if not str(err).startswith("NOSCRIPT"):
                raise
        await self.execute(encode(["SCRIPT", "LOAD", self.sources[name]]))
        return await self.execute(command)

    async def command(self, *args: Arg) -> Any:
        return await self.execute(encode(args))

    async def execute(self, command: bytes) -> Any:
        """Send one encoded command and wait for its reply (at most `timeout`)."""
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connection()
        fut = conn.send(command)
        timer = conn.loop.call_later(self.timeout, _expire, conn, fut, 4 * self.timeout)
        try:
            return await fut
        finally:
            timer.cancel()

    async def _connection(self) -> _Connection:
        """A new connection (one attempt at a time, shared by every caller that needs one)."""
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._connect())
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        t = self.target
        conn: _Connection | None = None
        try:
            async with asyncio.timeout(self.timeout):
                if t.path is not None:
                    _, conn = await loop.create_unix_connection(lambda: _Connection(loop), t.path)
                else:
                    _, conn = await loop.create_connection(
                        lambda: _Connection(loop), t.host, t.port, ssl=t.tls
                    )
                hello: list[asyncio.Future[Any]] = []
                if t.password:
                    auth = ["AUTH", t.username, t.password] if t.username else ["AUTH", t.password]
                    hello.append(conn.send(encode(auth)))
                if t.db:
                    hello.append(conn.send(encode(["SELECT", t.db])))
                hello += [conn.send(encode(["SCRIPT", "LOAD", src])) for src in self.sources.values()]
                await asyncio.gather(*hello)
        except BaseException as err:
            if conn is not None:
                conn.abort(ConnectionError("redis: connection set-up failed"))
            if isinstance(err, redis.exceptions.ResponseError):  # a wrong password, a bad db
                raise ConnectionError(f"redis: {err}") from err
            if isinstance(err, TimeoutError):
                raise TimeoutError(f"redis: no connection within {self.timeout} s") from err
            raise
        self.connects += 1
        self._conn = conn
        return conn

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.abort(ConnectionError("redis: client closed"))
            self._conn = None


# Error replies that mean "this Redis cannot serve the ledger now", as redis-py treats them: they
# are the caller's LedgerUnavailable (503, or the settle backlog), not a script error.
_UNAVAILABLE = ("LOADING", "BUSY", "MASTERDOWN", "NOAUTH", "READONLY", "CLUSTERDOWN", "TRYAGAIN")
_RECONNECT = ("READONLY", "NOAUTH")


def _error(message: str) -> Exception:
    if message.startswith(_UNAVAILABLE):
        return ConnectionError(f"redis: {message}")
    return redis.exceptions.ResponseError(message)


def _expire(conn: _Connection, fut: asyncio.Future[Any], dead_after: float) -> None:
    if fut.done():
        return
    fut.set_exception(TimeoutError("redis: no reply in time"))
    if conn.loop.time() - conn.heard >= dead_after:
        conn.abort(ConnectionError(f"redis: no answer for {dead_after:g} s; connecting again"))

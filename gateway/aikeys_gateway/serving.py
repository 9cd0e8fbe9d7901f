"""uvicorn's HTTP protocol (httptools), with a response's writes of one loop turn sent together,
and bounds on what a client may hold.

uvicorn writes a response's head as soon as the app sends `http.response.start`, and its body
with `http.response.body`: two `send()` calls, two segments on the wire, two wake-ups of the
client, for every answer. The gateway sends both in the same turn of the event loop, so here the
writes of one turn are joined and leave at its end (`call_soon`): one syscall per answer, and
no delay a client could notice (a stream's events still leave in the turn they are sent in).

uvicorn bounds neither a request's head nor a quiet connection: it arms its keep-alive timer only
after a response, and any byte disarms it. Here (`ServerSettings`): a request's line and headers
are refused past AIKEYS_MAX_HEADER_BYTES or AIKEYS_MAX_HEADERS (431) or when not complete within
AIKEYS_HEADER_TIMEOUT of its first byte (408), the connection closed; a connection with no
request in progress — before its first, between two, or trickling the rest of a body nobody
reads — is closed after the idle timeout (uvicorn's `timeout_keep_alive`), which only a new
request disarms. Bodies being read are the app's to bound (AIKEYS_BODY_TIMEOUT: 408). A head
that arrives in one read, as nearly every one does, costs no timer and no clock read.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, ClassVar

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from aikeys_gateway.config import ServerSettings


class CoalescingTransport:
    """A transport whose writes of one loop turn go out as one; everything else is the real one's."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._loop = loop
        self._out: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._out:
            self._loop.call_soon(self._flush)
        self._out.append(bytes(data))

    def _flush(self) -> None:
        out, self._out = self._out, []
        if out and not self._transport.is_closing():
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(b) for b in self._out)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._out = []
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


@functools.cache
def _from_env() -> ServerSettings:
    return ServerSettings.from_env()  # main() has checked it already, with the variable's name


class Refused(Exception):
    """A request the server answers itself, and then closes the connection."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def answer(self) -> bytes:
        error = {"message": self.message, "type": "invalid_request_error", "param": None, "code": self.code}
        body = orjson.dumps({"error": error})
        head = b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        return STATUS_LINE[self.status] + head % len(body) + body


class GatewayHttpProtocol(HttpToolsProtocol):
    """`uvicorn.run(http=GatewayHttpProtocol)`: httptools, with coalesced writes and bounded heads
    and idle connections (`limits`: a subclass's own, else from the environment)."""

    limits: ClassVar[ServerSettings | None] = None

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.bounds = self.limits or _from_env()
        self.head: int | None = None  # bytes of the request head being read; None: not in one
        self.head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
        # idle until the first request, too (uvicorn arms this only after a response)
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._stop_head_timer()

    def data_received(self, data: bytes) -> None:
        """uvicorn's, except that bytes alone do not disarm the idle timer (a new request does),
        and a head still incomplete after a read is bounded in size and time."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError as err:
            if isinstance(err.__context__, Refused):
                self.refuse(err.__context__)
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        if self.head is not None:  # rare: a head split over reads
            self.head += len(data)
            if self.head > self.bounds.max_header_bytes:
                self.refuse(
                    Refused(
                        431,
                        "request_header_fields_too_large",
                        f"The request line and headers are larger than {self.bounds.max_header_bytes} bytes.",
                    )
                )
            elif self.head_timer is None:
                self.head_timer = self.loop.call_later(self.bounds.header_timeout, self._head_timeout)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._unset_keepalive_if_required()  # a request began: no longer idle
        self.head = 0

    def on_headers_complete(self) -> None:
        self.head = None
        if self.head_timer is not None:
            self._stop_head_timer()
        if len(self.headers) > self.bounds.max_headers:
            raise Refused(
                431,
                "request_header_fields_too_large",
                f"The request has more than {self.bounds.max_headers} header fields.",
            )
        super().on_headers_complete()

    def refuse(self, refused: Refused) -> None:
        """Answer it and close the connection (what is still arriving is not read)."""
        self.head = None
        self._stop_head_timer()
        if not self.transport.is_closing():
            self.transport.write(refused.answer())
            self.transport.close()

    def _head_timeout(self) -> None:
        self.head_timer = None
        if self.head is None:
            return
        if self.cycle is not None and not self.cycle.response_complete:  # a pipelined head behind a
            self.head_timer = self.loop.call_later(self.bounds.header_timeout, self._head_timeout)
            return  # response still being sent: that response first
        seconds = self.bounds.header_timeout
        self.refuse(
            Refused(
                408, "request_timeout", f"The request headers were not received within {seconds:g} seconds."
            )
        )

    def _stop_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

"""uvicorn's HTTP protocol (httptools), with a response's writes of one loop turn sent together.

uvicorn writes a response's head as soon as the app sends `http.response.start`, and its body
with `http.response.body`: two `send()` calls, two segments on the wire, two wake-ups of the
client, for every answer. The gateway sends both in the same turn of the event loop, so here the
writes of one turn are joined and leave at its end (`call_soon`): one syscall per answer, and
no delay a client could notice (a stream's events still leave in the turn they are sent in).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


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


class GatewayHttpProtocol(HttpToolsProtocol):
    """`uvicorn.run(http=GatewayHttpProtocol)`: httptools, with coalesced writes."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]

"""The gateway's uvicorn protocol joins the writes of one loop turn (a response's head and body)."""

from __future__ import annotations

import asyncio
import socket

import uvicorn
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

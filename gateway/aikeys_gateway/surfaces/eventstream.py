"""A streamed answer (SSE) on plain asyncio tasks.

Starlette's StreamingResponse, on servers that speak ASGI 2.3 like uvicorn, runs the stream and a
watch for the client leaving in an anyio task group: a cancel scope and two tasks per stream,
about a fifth of a millisecond before the first event reaches the client. Here the stream runs
in the request's own task and one small task waits for `http.disconnect`; when the client
leaves, the stream's task is cancelled (the proxy's generator then reads on for the usage, as
before) and the answer ends quietly. Whatever way the answer ends, the body's generator is closed
(its `finally` runs now, not when the garbage collector gets to it) and then `on_close` is called:
the place for work that must happen even when the generator never started (a client that left
while the head was still waiting to be sent).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class EventStream(StreamingResponse):
    def __init__(
        self, content: AsyncIterator[bytes], *args: Any, on_close: Callable[[], None] | None = None, **kw: Any
    ):
        super().__init__(content, *args, **kw)
        self.content = content
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = asyncio.current_task()
        assert stream is not None
        left = False

        async def watch() -> None:
            nonlocal left
            while (await receive())["type"] != "http.disconnect":
                pass
            left = True
            stream.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await self._send_all(send)
        except asyncio.CancelledError:
            if not left:
                raise
            stream.uncancel()  # ours: the client left, the request itself goes on (background work)
        finally:
            watcher.cancel()
            closing = getattr(self.content, "aclose", None)
            if closing is not None:
                await closing()
            if self.on_close is not None:
                self.on_close()
        if self.background is not None:
            await self.background()

    async def _send_all(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        chunk: Any
        async for chunk in self.body_iterator:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

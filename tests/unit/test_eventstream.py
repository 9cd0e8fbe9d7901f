"""A streamed answer on plain asyncio: every event sent as it comes, and a client that leaves
stops the stream (its generator sees the cancellation) without failing the request's task."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aikeys_gateway.surfaces.eventstream import EventStream
from starlette.background import BackgroundTask
from starlette.types import Message


async def test_every_event_is_sent_then_the_end_then_the_background() -> None:
    async def events() -> AsyncIterator[bytes]:
        for i in range(3):
            yield f"data: {i}\n\n".encode()

    sent: list[Message] = []
    ran: list[str] = []

    async def background() -> None:
        ran.append("background")

    async def receive() -> Message:
        await asyncio.Event().wait()  # the client stays
        raise AssertionError

    async def send(message: Message) -> None:
        sent.append(message)

    response = EventStream(events(), media_type="text/event-stream")
    response.background = None
    await response({"type": "http"}, receive, send)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert [m.get("body") for m in sent[1:]] == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n", b""]
    assert sent[-1]["more_body"] is False
    again = EventStream(events(), background=BackgroundTask(background))
    await again({"type": "http"}, receive, send)
    assert ran == ["background"]


async def test_a_client_that_leaves_cancels_the_stream_and_the_task_goes_on() -> None:
    gone = asyncio.Event()
    generator_saw: list[str] = []

    async def events() -> AsyncIterator[bytes]:
        yield b"data: first\n\n"
        try:
            await asyncio.Event().wait()  # the upstream is still generating
            yield b"never"
        except asyncio.CancelledError:
            generator_saw.append("cancelled")
            raise

    async def receive() -> Message:
        await gone.wait()
        return {"type": "http.disconnect"}

    sent: list[bytes] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            sent.append(message["body"])
            gone.set()  # the client leaves after the first event

    async def request() -> str:
        await EventStream(events())({"type": "http"}, receive, send)
        await asyncio.sleep(0)  # the task was not left cancelled
        return "done"

    assert await asyncio.wait_for(request(), 5) == "done"
    assert sent == [b"data: first\n\n"]
    assert generator_saw == ["cancelled"]


async def test_a_cancellation_from_outside_is_not_swallowed() -> None:
    async def events() -> AsyncIterator[bytes]:
        await asyncio.Event().wait()
        yield b""

    async def receive() -> Message:
        await asyncio.Event().wait()
        raise AssertionError

    async def send(message: Message) -> None:
        pass

    task = asyncio.create_task(EventStream(events())({"type": "http"}, receive, send))
    await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_a_client_gone_before_the_head_was_sent_still_calls_on_close() -> None:
    """The head waits on flow control when the client leaves: the body never starts, so only
    `on_close` can settle the charge."""
    gone = asyncio.Event()
    started: list[str] = []
    closed: list[str] = []

    async def events() -> AsyncIterator[bytes]:
        started.append("started")
        yield b"data: x\n\n"

    async def receive() -> Message:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        gone.set()
        await asyncio.Event().wait()  # the head is stuck behind a client that does not read

    stream = EventStream(events(), on_close=lambda: closed.append("closed"))
    await asyncio.wait_for(stream({"type": "http"}, receive, send), 5)
    assert started == [] and closed == ["closed"]


async def test_a_client_gone_while_an_event_is_being_sent_closes_the_generator_at_once() -> None:
    """Cancelled inside `send` (the generator waits at its `yield`): its `finally` runs before the
    answer returns, not whenever the garbage collector closes it."""
    gone = asyncio.Event()
    order: list[str] = []

    async def events() -> AsyncIterator[bytes]:
        try:
            yield b"data: first\n\n"
            yield b"data: second\n\n"
        finally:
            order.append("generator finally")

    async def receive() -> Message:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message.get("body") == b"data: first\n\n":
            gone.set()
            await asyncio.Event().wait()  # stuck sending the first event

    stream = EventStream(events(), on_close=lambda: order.append("on_close"))
    await asyncio.wait_for(stream({"type": "http"}, receive, send), 5)
    assert order == ["generator finally", "on_close"]

"""Server-sent events between upstream and client: forward as they come, read each one.

`SSEFilter.feed` takes raw upstream bytes and returns the bytes to send on. Events are parsed as
the SSE specification says, not pattern-matched: lines end in LF, CRLF or CR; `data:` with or
without one space; several `data:` lines join with LF; comments and other fields pass through.
Each data payload is read as JSON by a *reader* that knows the API's events:

* `ChatReader` (chat and text completions): usage from the usage chunk — hidden from a client
  that did not ask for it (we may have asked the upstream on our own) —, generated parts from
  the choices, `[DONE]` as the end.
* `ResponsesReader` (the Responses API): generated parts from the `*.delta` events, usage and
  the end from `response.completed` / `response.incomplete` / `response.failed`.

A reader may also rewrite what is forwarded (`translate.ChatToResponses` turns a chat stream
into Responses events), so the usage found and the parts counted are the same whatever the client sees.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from aikeys.generated import Output, Usage, reported_usage
from aikeys_gateway.upstreams.client import UpstreamTooLarge

DONE = b"[DONE]"
_ENDS = ("response.completed", "response.incomplete", "response.failed")


class Reader(Protocol):
    @property
    def usage(self) -> Usage | None: ...

    @property
    def output(self) -> Output: ...

    @property
    def done(self) -> bool:
        """The stream said it is complete."""
        ...

    def read(self, raw: bytes, data: Any) -> bytes:
        """One event (`data`: its parsed JSON, or DONE); returns the bytes to forward."""
        ...

    def close(self) -> bytes:
        """The upstream closed the stream; returns any last bytes to forward."""
        ...


class ChatReader:
    def __init__(self, client_wants_usage: bool):
        self.client_wants_usage = client_wants_usage
        self.usage: Usage | None = None
        self.output = Output()
        self.done = False
        self.finished = False  # a choice carried a finish_reason

    def read(self, raw: bytes, data: Any) -> bytes:
        if data is DONE:
            self.done = True
            return raw
        if not isinstance(data, dict):
            return raw
        self.output.add_choices(data)
        choices = data.get("choices")
        if isinstance(choices, list) and any(isinstance(c, dict) and c.get("finish_reason") for c in choices):
            self.finished = True
        usage = data.get("usage")
        if usage is not None:
            found = reported_usage(usage)
            if found is not None:
                self.usage = found
            if not choices and not self.client_wants_usage:
                return b""  # the extra usage chunk we asked for: the client never sees it
        return raw

    def close(self) -> bytes:
        return b""


class ResponsesReader:
    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.output = Output()
        self.done = False
        self.response_id: str | None = None

    def read(self, raw: bytes, data: Any) -> bytes:
        if not isinstance(data, dict):
            return raw
        self.output.add_event(data)
        kind = data.get("type")
        if kind == "response.created":
            response = data.get("response")
            if isinstance(response, dict) and isinstance(response.get("id"), str):
                self.response_id = response["id"]
        elif kind in _ENDS:
            self.done = True
            response = data.get("response")
            if isinstance(response, dict):
                self.usage = reported_usage(response.get("usage"))
        return raw

    def close(self) -> bytes:
        return b""


MAX_EVENT_BYTES = 8 * 1024 * 1024  # the largest single event taken from an upstream (by default)


class SSEFilter:
    """Parses as the bytes come, in time linear in them: the pieces of an event that is not
    complete yet are kept as they arrived and only the new bytes are searched for its end. An
    event larger than `max_event` bytes is `UpstreamTooLarge`, raised once that many are held."""

    def __init__(self, reader: Reader, max_event: int = MAX_EVENT_BYTES):
        self.reader = reader
        self.max_event = max_event
        self.pending: list[bytes] = []  # the start of an event, its end not seen yet
        self.pending_size = 0
        self.held_cr = False  # the last chunk ended in CR: its LF may start the next

    @property
    def usage(self) -> Usage | None:
        return self.reader.usage

    @property
    def output(self) -> Output:
        return self.reader.output

    @property
    def done(self) -> bool:
        return self.reader.done

    def feed(self, chunk: bytes) -> bytes:
        chunk = self._lines(chunk)
        out: list[bytes] = []
        pending = self.pending
        start = 0
        if pending and chunk[:1] == b"\n" and pending[-1].endswith(b"\n"):  # the blank line spans chunks
            out.append(self._complete(b"\n"))
            start = 1
        while (end := chunk.find(b"\n\n", start)) >= 0:
            out.append(self._complete(chunk[start : end + 2]))
            start = end + 2
        if start < len(chunk):
            rest = chunk[start:] if start else chunk
            pending.append(rest)
            self.pending_size += len(rest)
            if self.pending_size > self.max_event:
                raise UpstreamTooLarge("stream event", self.max_event)
        return b"".join(out)

    def _lines(self, chunk: bytes) -> bytes:
        """The chunk with its line ends as LF (a CR at its end is held: an LF may follow)."""
        if self.held_cr:
            chunk = b"\r" + chunk
            self.held_cr = False
        if b"\r" not in chunk:
            return chunk
        if chunk.endswith(b"\r"):
            self.held_cr = True
            chunk = chunk[:-1]
        return chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")

    def _complete(self, last: bytes) -> bytes:
        """The event that `last` ends (with the pieces before it), read."""
        if self.pending:
            self.pending.append(last)
            last = b"".join(self.pending)
            self.pending.clear()
            self.pending_size = 0
        if len(last) > self.max_event:
            raise UpstreamTooLarge("stream event", self.max_event)
        return self._event(last)

    def end(self) -> bytes:
        """The upstream closed the stream: a CR held back for a possible LF ends its line."""
        out = b""
        if self.held_cr:
            self.held_cr = False
            out = self.feed(b"\n")
        return out + self.reader.close()

    def _event(self, event: bytes) -> bytes:
        one_line = event.startswith(b"data: ") and event.count(b"\n") == 2  # the common form
        raw = event[6:-2] if one_line else _data(event)
        if raw is None:
            return event  # comments, keep-alives, other fields: pass through
        if raw == DONE:
            return self.reader.read(event, DONE)
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return event
        return self.reader.read(event, parsed)


def _data(event: bytes) -> bytes | None:
    """The data of one event (its `data:` lines joined with LF), or None when it has none."""
    lines = [line for line in event.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    values = [line[6:] if line[5:6] == b" " else line[5:] for line in lines]
    return b"\n".join(values)


def json_output(body: Any, with_output: bool = True) -> tuple[Usage | None, Output]:
    """Usage and generated parts of a non-streamed response (embeddings report no output)."""
    output = Output()
    output.add_choices(body)
    output.add_response(body)
    usage = body.get("usage") if isinstance(body, dict) else None
    return reported_usage(usage, with_output), output

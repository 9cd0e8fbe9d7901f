"""Server-sent events between upstream and client: forward as they come, read each one.

`SSEFilter.feed` takes raw upstream bytes and returns the bytes to send on. Events are parsed as
the SSE specification says, not pattern-matched: lines end in LF, CRLF or CR; `data:` with or
without one space; several `data:` lines join with LF; comments and other fields pass through.
Each data payload is read as JSON by a *reader* that knows the upstream's events (one per upstream
kind: `upstreams/openai.py`'s chat and Responses readers), and may rewrite what is forwarded (a
translator, e.g. `surfaces/openai/translate.ChatToResponses`), so the usage found and the parts
counted are the same whatever the client sees. A reader that wraps another (translators, the
trace's tap) is a `Delegating` reader.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from aikeys.usage import Output, Usage
from aikeys_gateway.upstreams.client import UpstreamTooLarge

DONE = b"[DONE]"


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


class Delegates:
    """Usage, output and the end of a stream are its inner reader's."""

    inner: Reader

    @property
    def usage(self) -> Usage | None:
        return self.inner.usage

    @property
    def output(self) -> Output:
        return self.inner.output

    @property
    def done(self) -> bool:
        return self.inner.done


class Delegating(Delegates):
    """A reader around another (a translator, the trace's tap): `read` and `close` hand on
    unchanged unless overridden."""

    def __init__(self, inner: Reader):
        self.inner = inner

    def read(self, raw: bytes, data: Any) -> bytes:
        return self.inner.read(raw, data)

    def close(self) -> bytes:
        return self.inner.close()


MAX_EVENT_BYTES = 8 * 1024 * 1024  # the largest single event taken from an upstream (by default)


class SSEFilter(Delegates):
    """Parses as the bytes come, in time linear in them: the pieces of an event that is not
    complete yet are kept as they arrived and only the new bytes are searched for its end. An
    event larger than `max_event` bytes is `UpstreamTooLarge`, raised once that many are held."""

    def __init__(self, reader: Reader, max_event: int = MAX_EVENT_BYTES):
        self.inner = reader
        self.max_event = max_event
        self.pending: list[bytes] = []  # the start of an event, its end not seen yet
        self.pending_size = 0
        self.held_cr = False  # the last chunk ended in CR: its LF may start the next

    @property
    def reader(self) -> Reader:
        return self.inner

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

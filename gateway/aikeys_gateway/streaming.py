"""Server-sent events between upstream and client: forward as they come, read each one.

`SSEFilter.feed` takes raw upstream bytes and returns the bytes to send on: every complete event,
except the usage-only chunk when the client did not ask for it (we may have asked the upstream
for it on our own). Events are parsed as the SSE specification says, not pattern-matched: lines
end in LF, CRLF or CR; `data:` with or without one space; several `data:` lines join with LF;
comments and other fields pass through. Each data payload is read as JSON, so usage is found
whatever its spacing, and every generated part is counted for a stream that ends without usage.
"""

from __future__ import annotations

from typing import Any

import orjson

from aikeys.generated import Output, Usage, reported_usage


class SSEFilter:
    def __init__(self, client_wants_usage: bool):
        self.client_wants_usage = client_wants_usage
        self.buffer = b""
        self.usage: Usage | None = None
        self.output = Output()
        self.done = False  # [DONE] seen
        self.finished = False  # a chunk carried a finish_reason (the model stopped generating)

    def feed(self, chunk: bytes) -> bytes:
        buffer = self.buffer + chunk
        if b"\r" in buffer:
            held = buffer.endswith(b"\r")  # its LF may be in the next chunk
            if held:
                buffer = buffer[:-1]
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if held:
                buffer += b"\r"
        out: list[bytes] = []
        start = 0
        while True:
            end = buffer.find(b"\n\n", start)
            if end < 0:
                break
            event = buffer[start : end + 2]
            start = end + 2
            if self._keep(event):
                out.append(event)
        self.buffer = buffer[start:]
        return b"".join(out)

    def end(self) -> bytes:
        """The upstream closed the stream: a CR held back for a possible LF ends its line."""
        if self.buffer.endswith(b"\r"):
            self.buffer = self.buffer[:-1]
            return self.feed(b"\n")
        return b""

    def _keep(self, event: bytes) -> bool:
        one_line = event.startswith(b"data: ") and event.count(b"\n") == 2  # the common form
        data = event[6:-2] if one_line else _data(event)
        if data is None:
            return True  # comments, keep-alives, other fields: pass through
        if data == b"[DONE]":
            self.done = True
            return True
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            return True
        if not isinstance(parsed, dict):
            return True
        self.output.add_choices(parsed)
        choices = parsed.get("choices")
        if isinstance(choices, list) and any(isinstance(c, dict) and c.get("finish_reason") for c in choices):
            self.finished = True
        usage = parsed.get("usage")
        if usage is not None:
            found = reported_usage(usage)
            if found is not None:
                self.usage = found
            if not choices and not self.client_wants_usage:
                return False  # the extra usage chunk we asked for: the client never sees it
        return True


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
    usage = body.get("usage") if isinstance(body, dict) else None
    return reported_usage(usage, with_output), output

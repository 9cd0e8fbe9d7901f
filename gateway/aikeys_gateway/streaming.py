"""Server-sent events between upstream and client: forward as they come, watch for usage.

`SSEFilter.feed` takes raw upstream bytes and returns the bytes to send on: every complete
event, except the usage-only chunk when the client did not ask for it (we may have asked the
upstream for it on our own). It remembers the usage when one arrives and the events seen, so
that a stream cut short can be charged for the text it carried.
"""

from __future__ import annotations

from typing import Any

import orjson

from aikeys.tokenizers import encoding, encoding_for_model

_USAGE = b'"usage":{'


class SSEFilter:
    def __init__(self, client_wants_usage: bool):
        self.client_wants_usage = client_wants_usage
        self.buffer = b""
        self.usage: dict[str, Any] | None = None
        self.events: list[bytes] = []  # data payloads seen, for counting when no usage arrives
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        self.buffer += chunk
        if b"\r" in self.buffer:  # some servers frame events with CRLF
            self.buffer = self.buffer.replace(b"\r\n", b"\n")
        out: list[bytes] = []
        while True:
            end = self.buffer.find(b"\n\n")
            if end < 0:
                break
            event, self.buffer = self.buffer[: end + 2], self.buffer[end + 2 :]
            if self._keep(event):
                out.append(event)
        return b"".join(out)

    def _keep(self, event: bytes) -> bool:
        data = event[6:-2] if event.startswith(b"data: ") else None
        if data is None:
            return True  # comments, keep-alives, other fields: pass through
        if data == b"[DONE]":
            self.done = True
            return True
        self.events.append(data)
        if _USAGE in data:
            parsed = orjson.loads(data)
            usage = parsed.get("usage")
            if isinstance(usage, dict):
                self.usage = usage
                if not parsed.get("choices") and not self.client_wants_usage:
                    return False  # the extra usage chunk we asked for: the client never sees it
        return True

    def generated_text(self) -> tuple[str, int]:
        """(text, number of content-bearing chunks) of everything streamed so far."""
        parts: list[str] = []
        pieces = 0
        for data in self.events:
            try:
                parsed = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            for choice in parsed.get("choices") or []:
                text = (choice.get("delta") or {}).get("content") or choice.get("text") or ""
                if text:
                    parts.append(text)
                    pieces += 1
        return "".join(parts), pieces


def count_output(text: str, pieces: int, upstream_model: str) -> int:
    """Tokens of generated text when the upstream reported none: the model's tiktoken encoding
    (o200k_base for non-OpenAI models), and never fewer than the chunks that carried text."""
    enc = encoding_for_model(upstream_model) or encoding("o200k_base")
    return max(len(enc.encode(text, disallowed_special=())), pieces)


def response_text(body: dict[str, Any]) -> str:
    """Generated text of a non-streamed chat or text completion."""
    parts = []
    for choice in body.get("choices") or []:
        message = choice.get("message") or {}
        parts.append(message.get("content") or choice.get("text") or "")
    return "".join(p for p in parts if isinstance(p, str))

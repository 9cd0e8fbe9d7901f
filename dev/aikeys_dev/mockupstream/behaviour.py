"""What the mock upstream does, switch by switch: set on the command line and changed while it runs
with `PUT /_mock/config` (partial JSON), so a test can make it slow, failing, stingy with usage or
wrong about it."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from aikeys_dev.mockupstream import wire

REPLY_KINDS = ("text", "tool_call", "reasoning")


@dataclass
class Behaviour:
    """What the mock does; changed at run time with `PUT /_mock/config` (partial JSON)."""

    usage: bool = True  # include usage in responses (and in streams when asked for)
    reply_tokens: int = 16  # reply length when max_tokens does not cut it shorter
    latency_ms: float = 0.0  # wait before answering (before the first chunk when streaming)
    chunk_delay_ms: float = 0.0  # wait between stream chunks
    fail_status: int | None = None  # answer every request with this HTTP error ...
    fail_count: int | None = None  # ... for this many requests (None: until changed)
    break_after_chunks: int | None = None  # cut streams after this many content chunks (Responses: events)
    reject_stream_options: bool = False  # behave like a backend that refuses stream_options
    models: list[str] = field(default_factory=list)  # known models; empty accepts any
    api_key: str | None = None  # required bearer / api-key value; None accepts any
    ignore_max_tokens: bool = False  # generate reply_tokens whatever max_tokens says
    sse_framing: str = "standard"  # one of wire.FRAMINGS, for every streamed response
    json_spacing: bool = False  # non-streamed JSON bodies with ", " and ": " separators
    usage_as_strings: bool = False  # every integer in usage sent as a JSON string
    reply_kind: str = "text"  # "text" (see replies.plan), forced "tool_call" or "reasoning" answers
    usage_prompt_tokens: int | None = None  # report this prompt_tokens (input_tokens) instead of the count
    usage_completion_tokens: int | None = None  # report this completion_tokens (output_tokens) instead
    stall_before_usage_ms: float = 0.0  # streams: pause after the last delta, before the finish tail
    late_ms: float = 0.0  # JSON answers: generated (and billed) at once, sent this much later
    reset: bool = False  # JSON answers: generated (and billed), then the connection is cut unanswered
    fault_count: int | None = None  # late_ms / reset apply to this many answers (None: until changed)
    prompt_cache: bool = True  # report (and bill) a prompt prefix seen before as cached tokens (cache.py)
    cache_min_tokens: int = 1024  # ... when at least this many (OpenAI: prompts of 1024 tokens or more)
    cache_increment: int = 128  # ... rounded down to a multiple of this (OpenAI: 128)

    def update(self, changes: dict[str, Any]) -> None:
        names = {f.name for f in fields(self)}
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"unknown behaviour field(s): {', '.join(sorted(unknown))}")
        framing = changes.get("sse_framing", self.sse_framing)
        if framing not in wire.FRAMINGS:
            raise ValueError(f"sse_framing must be one of {', '.join(wire.FRAMINGS)}")
        kind = changes.get("reply_kind", self.reply_kind)
        if kind not in REPLY_KINDS:
            raise ValueError(f"reply_kind must be one of {', '.join(REPLY_KINDS)}")
        for key, least in (("cache_min_tokens", 0), ("cache_increment", 1)):
            value = changes.get(key, getattr(self, key))
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{key} must be an integer >= {least}")
        for key, value in changes.items():
            setattr(self, key, value)

"""OpenAI wire objects, shaped as the real API returns them (field names, order, nulls)."""

from __future__ import annotations

import base64
import json
import math
import secrets
import string
import struct
import time
from typing import Any

from aikeys_dev.mockupstream.tokens import TOOL_NAME

_ALNUM = string.ascii_letters + string.digits
FINGERPRINT = "fp_aikeysmock"


def new_id(prefix: str, length: int = 29) -> str:
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(length))


def dumps(obj: Any, spaced: bool = False) -> bytes:
    """Compact JSON as OpenAI sends it, or with `", "` / `": "` separators when `spaced`."""
    separators = (", ", ": ") if spaced else (",", ":")
    return json.dumps(obj, separators=separators, ensure_ascii=False).encode()


DONE = "[DONE]"
FRAMINGS = ("standard", "nospace", "crlf", "multiline", "comments", "keepalive", "spaced")
KEEP_ALIVE = b": keep-alive\n\n"


def sse(obj: Any) -> bytes:
    """One server-sent event as OpenAI frames it: `data: <compact json>` and a blank line."""
    return b"data: " + dumps(obj) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


class SSEFramer:
    """Frames the events of one stream (JSON objects, then `DONE`) in one of the `FRAMINGS`.

    All of them are valid server-sent events that decode to the same data:
    "standard" `data: {json}\\n\\n` (OpenAI); "nospace" `data:{json}`; "crlf" lines ending in
    `\\r\\n`; "multiline" the JSON pretty-printed over several `data:` lines of one event
    (joined with "\\n" by the spec); "comments" a `: keep-alive` comment event before each
    event and an `id:` line in each; "keepalive" the comment events without `id:` lines
    (OpenRouter-like); "spaced" JSON with `", "` and `": "` separators. An event with a type
    (Responses streams) has its `event: <type>` line before the data, framed the same way
    (`event:<type>` for "nospace", ending in `\\r\\n` for "crlf").

    The openai Python SDK (3.57 at least) cannot read "comments": once an `id:` was seen, its
    decoder dispatches comment-only events as empty events and fails to parse them as JSON
    (openai/openai-python#2722, #3833), although the spec drops events without data.
    """

    def __init__(self, style: str = "standard"):
        if style not in FRAMINGS:
            raise ValueError(f"unknown SSE framing {style!r}: use one of {', '.join(FRAMINGS)}")
        self.style = style
        self.sent = 0

    def event(self, payload: dict[str, Any] | str, event: str | None = None) -> bytes:
        """One framed event; `event` adds an `event:` line before the data (Responses streams)."""
        self.sent += 1
        style = self.style
        if isinstance(payload, str):
            data = payload.encode()
        elif style == "multiline":
            data = json.dumps(payload, indent=2, ensure_ascii=False).encode()
        else:
            data = dumps(payload, spaced=style == "spaced")
        name = b"" if event is None else event.encode()
        if style == "nospace":
            head = b"event:" + name + b"\n" if event is not None else b""
            return head + b"data:" + data + b"\n\n"
        if style == "crlf":
            head = b"event: " + name + b"\r\n" if event is not None else b""
            return head + b"data: " + data + b"\r\n\r\n"
        head = b"event: " + name + b"\n" if event is not None else b""
        if style == "multiline":
            return head + b"".join(b"data: " + line + b"\n" for line in data.split(b"\n")) + b"\n"
        if style == "comments":
            return KEEP_ALIVE + b"id: %d\n" % self.sent + head + b"data: " + data + b"\n\n"
        if style == "keepalive":
            return KEEP_ALIVE + head + b"data: " + data + b"\n\n"
        return head + b"data: " + data + b"\n\n"


def error(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def usage(prompt: int, completion: int, reasoning: int = 0, cached: int = 0) -> dict[str, Any]:
    """Chat usage with OpenAI's detail objects (`cached` of the prompt tokens were cached)."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def plain_usage(prompt: int, completion: int) -> dict[str, Any]:
    """Legacy completions usage: the three counts only."""
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def stringify_ints(obj: Any) -> Any:
    """Every integer in `obj` (nested) as a decimal string: an upstream that sends `"12"`."""
    if isinstance(obj, dict):
        return {k: stringify_ints(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [stringify_ints(v) for v in obj]
    if isinstance(obj, int) and not isinstance(obj, bool):
        return str(obj)
    return obj


def text_message(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text, "refusal": None, "annotations": []}


def tool_calls_message(calls: list[tuple[str, str, str]]) -> dict[str, Any]:
    """An assistant message that calls functions: `calls` are (call id, name, arguments)."""
    tool_calls = [
        {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        for call_id, name, arguments in calls
    ]
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": tool_calls,
        "refusal": None,
        "annotations": [],
    }


def tool_call_message(call_id: str, arguments: str, name: str = TOOL_NAME) -> dict[str, Any]:
    return tool_calls_message([(call_id, name, arguments)])


def reasoning_message(reasoning: str, content: str | None) -> dict[str, Any]:
    """DeepSeek / vLLM reasoning models: `reasoning_content` beside `content`."""
    return {
        "role": "assistant",
        "content": content,
        "reasoning_content": reasoning,
        "refusal": None,
        "annotations": [],
    }


def chat_completion(
    model: str, messages: list[dict[str, Any]], finish_reason: str, usage: dict[str, Any] | None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": i, "message": message, "logprobs": None, "finish_reason": finish_reason}
            for i, message in enumerate(messages)
        ],
    }
    if usage is not None:
        body["usage"] = usage
    body["service_tier"] = "default"
    body["system_fingerprint"] = FINGERPRINT
    return body


class ChunkStream:
    """Builds the `chat.completion.chunk` events of one streamed chat completion."""

    def __init__(self, model: str, with_usage_field: bool):
        self.base = {
            "id": new_id("chatcmpl-"),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
        }
        self.with_usage_field = with_usage_field

    def _chunk(self, index: int, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        chunk = {**self.base, "choices": [choice]}
        if self.with_usage_field:
            chunk["usage"] = None
        return chunk

    def role(self, index: int) -> dict[str, Any]:
        return self._chunk(index, {"role": "assistant", "content": "", "refusal": None})

    def content(self, index: int, text: str) -> dict[str, Any]:
        return self._chunk(index, {"content": text})

    def reasoning(self, index: int, text: str) -> dict[str, Any]:
        return self._chunk(index, {"reasoning_content": text})

    def tool_call_start(
        self, index: int, call_id: str, name: str = TOOL_NAME, call: int = 0, first: bool = True
    ) -> dict[str, Any]:
        """The header of tool call `call` of choice `index`: in the choice's first delta (with the
        role, null content and null refusal) when `first`, else alone, as OpenAI streams them."""
        header = {
            "index": call,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        if not first:
            return self._chunk(index, {"tool_calls": [header]})
        return self._chunk(
            index, {"role": "assistant", "content": None, "tool_calls": [header], "refusal": None}
        )

    def calls_role(self, index: int) -> dict[str, Any]:
        """The first delta of an answer with several tool calls: the role and null content only."""
        return self._chunk(index, {"role": "assistant", "content": None})

    def tool_call_arguments(self, index: int, text: str, call: int = 0) -> dict[str, Any]:
        return self._chunk(index, {"tool_calls": [{"index": call, "function": {"arguments": text}}]})

    def finish(self, index: int, reason: str) -> dict[str, Any]:
        return self._chunk(index, {}, reason)

    def usage(self, usage: dict[str, Any]) -> dict[str, Any]:
        return {**self.base, "choices": [], "usage": usage}


def text_completion(
    model: str, texts: list[str], finish_reason: str, usage: dict[str, Any] | None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": new_id("cmpl-"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"text": text, "index": i, "logprobs": None, "finish_reason": finish_reason}
            for i, text in enumerate(texts)
        ],
    }
    if usage is not None:
        body["usage"] = usage
    body["system_fingerprint"] = FINGERPRINT
    return body


class CompletionChunks:
    """Builds the `text_completion` events of one streamed (legacy) completion."""

    def __init__(self, model: str, with_usage_field: bool):
        self.base = {
            "id": new_id("cmpl-"),
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": FINGERPRINT,
        }
        self.with_usage_field = with_usage_field

    def text(self, index: int, text: str, finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"text": text, "index": index, "logprobs": None, "finish_reason": finish_reason}
        chunk: dict[str, Any] = {**self.base, "choices": [choice]}
        if self.with_usage_field:
            chunk["usage"] = None
        return chunk

    def usage(self, usage: dict[str, Any]) -> dict[str, Any]:
        return {**self.base, "choices": [], "usage": usage}


def _unit_vector(dimensions: int) -> list[float]:
    raw = [math.sin(i * 0.7 + 0.3) for i in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in raw))
    # round-trip through float32 so the float and base64 encodings carry the same numbers
    packed = struct.pack(f"<{dimensions}f", *(x / norm for x in raw))
    return list(struct.unpack(f"<{dimensions}f", packed))


_VECTORS: dict[int, tuple[list[float], str]] = {}


def embedding_vector(dimensions: int, encoding_format: str) -> list[float] | str:
    """A fixed unit vector, as floats or as base64 of little-endian float32 (the SDK's default)."""
    if dimensions not in _VECTORS:
        floats = _unit_vector(dimensions)
        _VECTORS[dimensions] = (floats, base64.b64encode(struct.pack(f"<{dimensions}f", *floats)).decode())
    floats, b64 = _VECTORS[dimensions]
    return b64 if encoding_format == "base64" else floats


def embeddings(
    model: str, count: int, dimensions: int, encoding_format: str, usage: dict[str, Any]
) -> dict[str, Any]:
    vector = embedding_vector(dimensions, encoding_format)
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": vector} for i in range(count)],
        "model": model,
        "usage": usage,
    }


def model_object(model: str, created: int) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": created, "owned_by": "aikeys-mock"}


def model_list(models: list[str], created: int) -> dict[str, Any]:
    return {"object": "list", "data": [model_object(m, created) for m in models]}

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

_ALNUM = string.ascii_letters + string.digits
FINGERPRINT = "fp_aikeysmock"


def new_id(prefix: str, length: int = 29) -> str:
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(length))


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def sse(obj: Any) -> bytes:
    """One server-sent event as OpenAI frames it: `data: <compact json>` and a blank line."""
    return b"data: " + dumps(obj) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


def error(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chat_completion(
    model: str,
    contents: list[str],
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
    include_usage: bool,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
            for i, text in enumerate(contents)
        ],
    }
    if include_usage:
        body["usage"] = usage(prompt_tokens, completion_tokens)
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

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        chunk = {**self.base, "choices": choices}
        if self.with_usage_field:
            chunk["usage"] = None
        return chunk

    def role(self, index: int) -> bytes:
        delta = {"role": "assistant", "content": "", "refusal": None}
        return sse(self._chunk([{"index": index, "delta": delta, "logprobs": None, "finish_reason": None}]))

    def content(self, index: int, text: str) -> bytes:
        return sse(
            self._chunk(
                [{"index": index, "delta": {"content": text}, "logprobs": None, "finish_reason": None}]
            )
        )

    def finish(self, index: int, reason: str) -> bytes:
        return sse(self._chunk([{"index": index, "delta": {}, "logprobs": None, "finish_reason": reason}]))

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        return sse({**self.base, "choices": [], "usage": usage(prompt_tokens, completion_tokens)})


def text_completion(
    model: str,
    texts: list[str],
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
    include_usage: bool,
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
    if include_usage:
        body["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
    body["system_fingerprint"] = FINGERPRINT
    return body


def completion_chunk(
    base: dict[str, Any], text: str, finish_reason: str | None, with_usage_field: bool
) -> bytes:
    chunk: dict[str, Any] = {
        **base,
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}],
    }
    if with_usage_field:
        chunk["usage"] = None
    return sse(chunk)


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
    model: str, count: int, dimensions: int, encoding_format: str, prompt_tokens: int
) -> dict[str, Any]:
    vector = embedding_vector(dimensions, encoding_format)
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": vector} for i in range(count)],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def model_list(models: list[str], created: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": created, "owned_by": "aikeys-mock"} for m in models],
    }

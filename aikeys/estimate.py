"""Upper bounds of what a request can cost, computed before it is sent.

Input tokens:
  * OpenAI model families (see `tokenizers`): the tiktoken count of every text the request
    carries (message contents, names, tool definitions, prompts), plus OpenAI's chat framing
    (3 tokens a message, 1 a name, 3 to prime the reply), plus a 1 % + 8 token margin.
  * Any other model: the UTF-8 byte count of the same texts plus 8 tokens a message. A
    byte-level BPE never spends more than one token per byte, so this bounds every such
    tokenizer (Llama, Qwen, Mistral, …), at the price of reserving more than needed.
  * Each image part adds `IMAGE_TOKENS` (a high-detail image is at most 1,105 tokens on
    OpenAI's models; we hold 1,536).
Output tokens: `max_completion_tokens`, else `max_tokens`, else the model's `maxOutputTokens`,
else `DEFAULT_MAX_OUTPUT` — times `n` (or `best_of` for completions). Embeddings produce none.

When the upstream respects max_tokens, actual cost ≤ estimate, so reserving the estimate means
an allocation cannot be overspent by concurrent requests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from aikeys.ledger.store import Estimate
from aikeys.money import Price, ceil_div
from aikeys.tokenizers import encoding_for_model

DEFAULT_MAX_OUTPUT = 4096
IMAGE_TOKENS = 1536
PER_MESSAGE = 3
PER_NAME = 1
REPLY_PRIMING = 3
UNKNOWN_PER_MESSAGE = 8
MARGIN_TOKENS = 8


class Endpoint(StrEnum):
    CHAT = "chat/completions"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"


@dataclass(frozen=True)
class _Texts:
    texts: list[str]
    messages: int
    names: int
    images: int
    token_ids: int  # inputs given as token-id arrays count exactly


def _content(content: Any, out: list[str]) -> int:
    """Collect the text of a message content; return how many image parts it has."""
    if isinstance(content, str):
        out.append(content)
        return 0
    images = 0
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            if isinstance(part.get("text"), str):
                out.append(part["text"])
            elif part.get("type") in ("image_url", "input_image", "image"):
                images += 1
            elif part.get("type") in ("input_audio", "file"):
                out.append(json.dumps(part))  # bounded by its size
    return images


def _prompt_texts(value: Any, out: list[str]) -> int:
    """Strings of a completions/embeddings input; returns the number of given token ids."""
    if isinstance(value, str):
        out.append(value)
        return 0
    if isinstance(value, list):
        if value and all(isinstance(x, int) for x in value):
            return len(value)
        return sum(_prompt_texts(v, out) for v in value)
    return 0


def _collect(endpoint: Endpoint, body: dict[str, Any]) -> _Texts:
    texts: list[str] = []
    messages = names = images = ids = 0
    if endpoint is Endpoint.CHAT:
        for message in body.get("messages") or []:
            if not isinstance(message, dict):
                continue
            messages += 1
            images += _content(message.get("content"), texts)
            if isinstance(message.get("name"), str):
                names += 1
                texts.append(message["name"])
            for extra in ("tool_calls", "function_call", "audio"):
                if message.get(extra) is not None:
                    texts.append(json.dumps(message[extra]))
        for extra in ("tools", "functions", "response_format"):
            if body.get(extra) is not None:
                texts.append(json.dumps(body[extra]))
    else:
        key = "prompt" if endpoint is Endpoint.COMPLETIONS else "input"
        ids = _prompt_texts(body.get(key), texts)
        if isinstance(body.get("suffix"), str):
            texts.append(body["suffix"])
    return _Texts(texts, messages, names, images, ids)


def _iter_nonempty(texts: list[str]) -> Iterator[str]:
    return (t for t in texts if t)


def input_tokens(endpoint: Endpoint, body: dict[str, Any], upstream_model: str) -> int:
    """Upper bound of the input tokens the upstream will count for this request."""
    c = _collect(endpoint, body)
    enc = encoding_for_model(upstream_model)
    images = c.images * IMAGE_TOKENS
    if enc is None:
        raw = sum(len(t.encode()) for t in _iter_nonempty(c.texts))
        return raw + c.token_ids + images + UNKNOWN_PER_MESSAGE * (c.messages + 1) + MARGIN_TOKENS
    counted = sum(len(enc.encode(t, disallowed_special=())) for t in _iter_nonempty(c.texts))
    framing = (PER_MESSAGE * c.messages + PER_NAME * c.names + REPLY_PRIMING) if c.messages else 0
    total = counted + c.token_ids + framing + images
    return total + ceil_div(total, 100) + MARGIN_TOKENS


def output_tokens(endpoint: Endpoint, body: dict[str, Any], model_max_output: int | None) -> int:
    """Upper bound of the output tokens (0 for embeddings)."""
    if endpoint is Endpoint.EMBEDDINGS:
        return 0
    limit = None
    for field in ("max_completion_tokens", "max_tokens"):
        value = body.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            limit = value
            break
    if limit is None:
        limit = model_max_output or DEFAULT_MAX_OUTPUT
    copies = body.get("best_of") if endpoint is Endpoint.COMPLETIONS else None
    copies = copies if isinstance(copies, int) and copies > 0 else body.get("n")
    n = copies if isinstance(copies, int) and not isinstance(copies, bool) and copies > 0 else 1
    return limit * n


def estimate(
    endpoint: Endpoint, body: dict[str, Any], upstream_model: str, price: Price, model_max_output: int | None
) -> Estimate:
    tin = input_tokens(endpoint, body, upstream_model)
    tout = output_tokens(endpoint, body, model_max_output)
    return Estimate(cost=price.cost(tin, tout), input_tokens=tin, output_tokens=tout)

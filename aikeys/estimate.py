"""Upper bounds of what a request can cost, computed before it is sent — and the output cap that
makes them hold.

Input tokens, by the model's tokenizer setting (`tokenizers.resolve`):
  * An OpenAI vocabulary (o200k_base, cl100k_base): the tiktoken count of every text the request
    carries (message contents, names, tool definitions, prompts), plus OpenAI's chat framing
    (3 tokens a message, 1 a name, 3 to prime the reply), plus a 1 % + 8 token margin.
  * bytes: the UTF-8 byte count of the same texts plus 8 tokens a message. A byte-level BPE never
    spends more than one token per byte, so this bounds every such tokenizer (Llama, Qwen,
    Mistral, …), at the price of reserving more than needed.
  * Each image part adds `IMAGE_TOKENS` (a high-detail image is at most 1,105 tokens on
    OpenAI's models; we hold 1,536).
Output tokens: a cap per choice × the number of choices the upstream generates. The cap is the
request's max_completion_tokens / max_tokens (the lower if both), clamped to the model's
maxOutputTokens; without either, the model's maxOutputTokens, else `DEFAULT_MAX_OUTPUT`. The
gateway *sends* that cap upstream (`apply_cap`), so an upstream that honours it never produces
more. Choices: `n` for chat; for completions one per prompt × max(n, best_of) (best_of are all
generated and billed). Embeddings produce none.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from aikeys import limits
from aikeys.ledger.store import Estimate
from aikeys.money import Price, ceil_div
from aikeys.tokenizers import encoding

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
    RESPONSES = "responses"


CAP_FIELDS = ("max_completion_tokens", "max_tokens")
RESPONSES_CAP = "max_output_tokens"


def _dump(value: Any) -> str:
    """JSON text of a request part, for counting (orjson refuses nesting deeper than 254)."""
    return orjson.dumps(value).decode()


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
                out.append(_dump(part))  # bounded by its size
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
                    texts.append(_dump(message[extra]))
        for extra in ("tools", "functions", "response_format"):
            if body.get(extra) is not None:
                texts.append(_dump(body[extra]))
    elif endpoint is Endpoint.RESPONSES:
        return _collect_responses(body)
    else:
        key = "prompt" if endpoint is Endpoint.COMPLETIONS else "input"
        ids = _prompt_texts(body.get(key), texts)
        if isinstance(body.get("suffix"), str):
            texts.append(body["suffix"])
    return _Texts(texts, messages, names, images, ids)


def _collect_responses(body: dict[str, Any]) -> _Texts:
    """Texts of a Responses request: instructions, every input item, tools and the text format."""
    texts: list[str] = []
    messages = images = 0
    if isinstance(body.get("instructions"), str):
        texts.append(body["instructions"])
        messages += 1
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        kind = item.get("type", "message")
        if kind == "message":
            messages += 1
            images += _content(item.get("content"), texts)
        elif kind == "function_call":
            texts += [v for v in (item.get("name"), item.get("arguments")) if isinstance(v, str)]
        elif kind == "function_call_output":
            images += _content(item.get("output"), texts)
        else:  # reasoning (with its encrypted content), hosted tool calls, …: bounded by their size
            texts.append(_dump(item))
    for extra in ("tools", "text"):
        if body.get(extra) is not None:
            texts.append(_dump(body[extra]))
    return _Texts(texts, messages, 0, images, 0)


def _iter_nonempty(texts: list[str]) -> Iterator[str]:
    return (t for t in texts if t)


def input_tokens(endpoint: Endpoint, body: dict[str, Any], encoding_name: str | None) -> int:
    """Upper bound of the input tokens the upstream will count for this request.
    `encoding_name`: an OpenAI vocabulary the model really uses, or None for the byte bound."""
    c = _collect(endpoint, body)
    images = c.images * IMAGE_TOKENS
    if encoding_name is None:
        raw = sum(len(t.encode()) for t in _iter_nonempty(c.texts))
        return raw + c.token_ids + images + UNKNOWN_PER_MESSAGE * (c.messages + 1) + MARGIN_TOKENS
    enc = encoding(encoding_name)
    counted = sum(len(enc.encode(t, disallowed_special=())) for t in _iter_nonempty(c.texts))
    framing = (PER_MESSAGE * c.messages + PER_NAME * c.names + REPLY_PRIMING) if c.messages else 0
    total = counted + c.token_ids + framing + images
    return total + ceil_div(total, 100) + MARGIN_TOKENS


def _count(value: Any) -> int | None:
    """A positive integer request field, or None (bools are not counts)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def prompt_count(prompt: Any) -> int:
    """How many prompts a completions request carries (OpenAI answers one choice per prompt)."""
    if isinstance(prompt, list) and prompt and not all(isinstance(x, int) for x in prompt):
        return len(prompt)
    return 1


@dataclass(frozen=True)
class OutputCap:
    """The output tokens one choice may generate, and how many choices the upstream generates."""

    per_choice: int
    choices: int

    @property
    def total(self) -> int:
        return self.per_choice * self.choices


def output_cap(endpoint: Endpoint, body: dict[str, Any], model_max_output: int | None) -> OutputCap:
    """The cap the gateway sends upstream and reserves for (zero for embeddings)."""
    if endpoint is Endpoint.EMBEDDINGS:
        return OutputCap(0, 0)
    fields = (RESPONSES_CAP,) if endpoint is Endpoint.RESPONSES else CAP_FIELDS
    asked = [v for v in (_count(body.get(f)) for f in fields) if v is not None]
    ceiling = model_max_output or limits.MAX_OUTPUT_TOKENS
    per_choice = min(*asked, ceiling) if asked else (model_max_output or DEFAULT_MAX_OUTPUT)
    n = 1 if endpoint is Endpoint.RESPONSES else _count(body.get("n")) or 1
    if endpoint is Endpoint.COMPLETIONS:
        n = max(n, _count(body.get("best_of")) or 1) * prompt_count(body.get("prompt"))
    return OutputCap(per_choice, n)


def apply_cap(endpoint: Endpoint, body: dict[str, Any], cap: OutputCap, parameter: str) -> None:
    """Write the cap into the upstream request: into the fields the client used, else into
    `parameter` (chat: the provider's max-tokens parameter; completions: always max_tokens)."""
    if endpoint is Endpoint.EMBEDDINGS:
        return
    if endpoint is Endpoint.RESPONSES:
        body[RESPONSES_CAP] = cap.per_choice
        return
    present = [f for f in CAP_FIELDS if body.get(f) is not None]
    if not present:
        present = [parameter if endpoint is Endpoint.CHAT else "max_tokens"]
    for f in present:
        body[f] = cap.per_choice


def estimate(
    endpoint: Endpoint, body: dict[str, Any], price: Price, encoding_name: str | None, cap: OutputCap
) -> Estimate:
    tin = input_tokens(endpoint, body, encoding_name)
    tout = cap.total
    return Estimate(cost=price.cost(tin, tout), input_tokens=tin, output_tokens=tout)

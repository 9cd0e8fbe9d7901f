"""Upper bounds of what a request can cost, computed before it is sent — and the output cap that
makes them hold.

Input tokens: one walk over the whole request body counts every string it carries, whatever its
field — a content part or field the gateway does not know yet is still inside the bound (roles and
part types are structure; tool and format definitions count as their JSON text, keys included). By
the model's tokenizer setting (`tokenizers.resolve`):
  * An OpenAI vocabulary (o200k_base, cl100k_base): the tiktoken count of those strings, plus
    OpenAI's chat framing (3 tokens a message, 1 a name, 3 to prime the reply), plus a 1 % + 8
    token margin.
  * bytes: the UTF-8 byte count of the same strings plus 8 tokens a message. A byte-level BPE never
    spends more than one token per byte, so this bounds every such tokenizer (Llama, Qwen,
    Mistral, …), at the price of reserving more than needed.
  * Each image part adds `IMAGE_TOKENS` (a high-detail image is at most 1,105 tokens on
    OpenAI's models; we hold 1,536); file and audio data count their decoded size, a token a byte.
  * Input the gateway cannot see — `previous_response_id`, a conversation, a stored prompt, item
    references, file ids and file URLs — is bounded by the model's context window (the most it
    reads); a model without `contextWindow` cannot take such requests (`UnboundedInput` → 400).
Output tokens: a cap per choice × the number of choices the upstream generates. The cap is the
request's max_completion_tokens / max_tokens (the lower if both), clamped to the model's
maxOutputTokens; without either, the model's maxOutputTokens, else `DEFAULT_MAX_OUTPUT`. The
gateway *sends* that cap upstream (`apply_cap`), so an upstream that honours it never produces
more. Choices: `n` for chat; for completions one per prompt × max(n, best_of) (best_of are all
generated and billed). Embeddings produce none.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
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


IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})
FILE_PARTS = frozenset({"file", "input_file", "input_audio"})
# values that are structure, not text the model reads (the framing below counts roles)
STRUCTURE_KEYS = frozenset({"role", "type"})
# definitions the model reads as rendered JSON, keys included: counted as their JSON text
JSON_KEYS = frozenset({"tools", "functions", "response_format", "text", "tool_calls", "function_call"})
# top-level fields of a Responses request that refer to input stored upstream
RESPONSES_REFERENCES = ("previous_response_id", "conversation", "prompt")


class UnboundedInput(ValueError):
    """The request refers to input the gateway cannot see, and the model has no context window to
    bound it by. `param` names the field."""

    def __init__(self, param: str):
        super().__init__(param)
        self.param = param


@dataclass
class _Texts:
    """What a request gives the model to read, gathered in one walk over the whole body."""

    texts: list[str] = field(default_factory=list)
    messages: int = 0
    names: int = 0
    images: int = 0
    token_ids: int = 0  # inputs given as token-id arrays count exactly
    data_bytes: int = 0  # decoded file and audio data: at most a token a byte
    reference: str | None = None  # the first field that refers to input stored upstream


def _decoded_size(data: str) -> int:
    """Bytes a base64 payload (optionally a data: URL) decodes to."""
    if data.startswith("data:") and "," in data:
        data = data.split(",", 1)[1]
    return len(data) * 3 // 4 + 3


def _file(part: dict[str, Any], out: _Texts) -> None:
    """A file or audio part: its data by decoded size, its name as text, a stored id or a URL as a
    reference (only the upstream sees what it holds)."""
    nested = part.get(str(part.get("type")))
    inner: dict[str, Any] = nested if isinstance(nested, dict) else part
    for name, value in inner.items():
        if name in ("file_data", "data") and isinstance(value, str):
            out.data_bytes += _decoded_size(value)
        elif name in ("file_id", "file_url") and value is not None and out.reference is None:
            out.reference = name
        elif name not in STRUCTURE_KEYS:
            _walk(value, out)


def _walk(value: Any, out: _Texts) -> None:
    """Every string a request part carries, whatever its field — so a content type or field the
    gateway does not know yet is still inside the bound. Images count `IMAGE_TOKENS`, decoded data
    its size, JSON definitions their JSON text, token-id arrays their length."""
    if isinstance(value, str):
        out.texts.append(value)
    elif isinstance(value, list):
        if value and all(isinstance(x, int) and not isinstance(x, bool) for x in value):
            out.token_ids += len(value)
            return
        for item in value:
            _walk(item, out)
    elif isinstance(value, dict):
        _object(value, out)


def _object(value: dict[str, Any], out: _Texts) -> None:
    kind = value.get("type")
    if kind in IMAGE_PARTS:
        out.images += 1
        if value.get("file_id") is not None and out.reference is None:
            out.reference = "file_id"
        return
    if kind in FILE_PARTS:
        _file(value, out)
        return
    if kind == "item_reference" and out.reference is None:
        out.reference = "item_reference"
    for name, item in value.items():
        if name in STRUCTURE_KEYS:
            continue
        if name in JSON_KEYS and isinstance(item, dict | list):
            out.texts.append(_dump(item))
        else:
            _walk(item, out)


def _collect(endpoint: Endpoint, body: dict[str, Any]) -> _Texts:
    out = _Texts()
    _walk({k: v for k, v in body.items() if k != "model"}, out)
    if endpoint is Endpoint.CHAT:
        for message in body.get("messages") or []:
            if isinstance(message, dict):
                out.messages += 1
                out.names += isinstance(message.get("name"), str)
    elif endpoint is Endpoint.RESPONSES:
        items = body.get("input")
        out.messages += isinstance(body.get("instructions"), str) + (
            1
            if isinstance(items, str)
            else sum(isinstance(i, dict) and i.get("type", "message") == "message" for i in items)
            if isinstance(items, list)
            else 0
        )
        for name in RESPONSES_REFERENCES:
            if body.get(name) is not None and out.reference is None:
                out.reference = name
    return out


def _iter_nonempty(texts: list[str]) -> Iterator[str]:
    return (t for t in texts if t)


def input_tokens(
    endpoint: Endpoint, body: dict[str, Any], encoding_name: str | None, context_window: int | None = None
) -> int:
    """Upper bound of the input tokens the upstream will count for this request.
    `encoding_name`: an OpenAI vocabulary the model really uses, or None for the byte bound.
    A request that refers to input stored upstream is bounded by the model's `context_window`
    (the most the model reads); without one it raises `UnboundedInput`."""
    c = _collect(endpoint, body)
    fixed = c.token_ids + c.images * IMAGE_TOKENS + c.data_bytes
    if encoding_name is None:
        raw = sum(len(t.encode()) for t in _iter_nonempty(c.texts))
        counted = raw + fixed + UNKNOWN_PER_MESSAGE * (c.messages + 1) + MARGIN_TOKENS
    else:
        enc = encoding(encoding_name)
        tokens = sum(len(enc.encode(t, disallowed_special=())) for t in _iter_nonempty(c.texts))
        framing = (PER_MESSAGE * c.messages + PER_NAME * c.names + REPLY_PRIMING) if c.messages else 0
        total = tokens + fixed + framing
        counted = total + ceil_div(total, 100) + MARGIN_TOKENS
    if c.reference is None:
        return counted
    if context_window is None:
        raise UnboundedInput(c.reference)
    return max(counted, context_window)


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
    endpoint: Endpoint,
    body: dict[str, Any],
    price: Price,
    encoding_name: str | None,
    cap: OutputCap,
    context_window: int | None = None,
) -> Estimate:
    tin = input_tokens(endpoint, body, encoding_name, context_window)
    tout = cap.total
    return Estimate(cost=price.bound(tin, tout), input_tokens=tin, output_tokens=tout)

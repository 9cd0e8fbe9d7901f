"""What an upstream used, for the charge: its reported usage when valid, else a count of every
generated part (chat completions, text completions, and Responses API objects and events).

`reported_usage` reads an OpenAI `usage` object by value, whatever its JSON spacing: token counts
must be non-negative integers (not bools, not strings) or the usage counts as missing. `Output`
collects the generated parts of a response or of stream chunks — content, refusals, reasoning
(`reasoning_content`, `reasoning`), tool-call and function-call names and arguments, completion
text — so that a response without usage is still charged for all it carried.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aikeys import tokenizers

_TEXT_FIELDS = ("content", "refusal", "reasoning_content", "reasoning")


@dataclass(frozen=True)
class Usage:
    """What the upstream billed, per token kind; the kinds are disjoint. `input_tokens` are the
    uncached ones, billed at the input price; `cached_tokens` were read from the provider's prompt
    cache; `cache_write_tokens` / `cache_write_1h_tokens` were written to it for 5 minutes / 1 hour."""

    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0

    @property
    def all_input(self) -> int:
        """Every input token, whatever its kind."""
        return self.input_tokens + self.cached_tokens + self.cache_write_tokens + self.cache_write_1h_tokens


def _tokens(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _detail(usage: dict[str, Any], details: str, name: str) -> int:
    """A count inside a details object (0 when absent or invalid)."""
    inner = usage.get(details)
    return (_tokens(inner.get(name)) or 0) if isinstance(inner, dict) else 0


def reported_usage(usage: Any, with_output: bool = True) -> Usage | None:
    """The token kinds of a usage object, or None when missing or invalid:

    * OpenAI chat: `prompt_tokens` / `completion_tokens`, with the cache reads *inside*
      `prompt_tokens` (`prompt_tokens_details.cached_tokens`);
    * OpenAI Responses: `input_tokens` / `output_tokens`, reads inside `input_tokens`
      (`input_tokens_details.cached_tokens`);
    * Anthropic: `input_tokens` / `output_tokens` with reads and writes *outside* `input_tokens`
      (`cache_read_input_tokens`, `cache_creation_input_tokens`, split by `cache_creation`'s
      `ephemeral_5m_input_tokens` / `ephemeral_1h_input_tokens`).

    Embeddings (`with_output=False`) report no output tokens."""
    if not isinstance(usage, dict):
        return None
    anthropic = "cache_read_input_tokens" in usage or "cache_creation_input_tokens" in usage
    names = (
        ("input_tokens", "output_tokens")
        if "input_tokens" in usage
        else ("prompt_tokens", "completion_tokens")
    )
    tin = _tokens(usage.get(names[0]))
    tout = _tokens(usage.get(names[1])) if with_output else 0
    if tout is None and not with_output:
        tout = 0
    if tin is None or tout is None:
        return None
    if anthropic:
        read = _tokens(usage.get("cache_read_input_tokens")) or 0
        written = _tokens(usage.get("cache_creation_input_tokens")) or 0
        hour = min(_detail(usage, "cache_creation", "ephemeral_1h_input_tokens"), written)
        return Usage(tin, tout, read, written - hour, hour)
    details = "input_tokens_details" if names[0] == "input_tokens" else "prompt_tokens_details"
    cached = min(_detail(usage, details, "cached_tokens"), tin)  # inside the input count
    return Usage(tin - cached, tout, cached)


@dataclass
class Output:
    """Generated parts seen so far (texts) and how many pieces carried any."""

    texts: list[str] = field(default_factory=list)
    pieces: int = 0

    def _add(self, value: Any) -> None:
        if isinstance(value, str) and value:
            self.texts.append(value)
            self.pieces += 1

    def _message(self, message: Any) -> None:
        if not isinstance(message, dict):
            return
        for name in _TEXT_FIELDS:
            self._add(message.get(name))
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                if isinstance(call, dict):
                    self._function(call.get("function"))
        self._function(message.get("function_call"))
        audio = message.get("audio")
        if isinstance(audio, dict):
            self._add(audio.get("transcript"))

    def _function(self, function: Any) -> None:
        if isinstance(function, dict):
            self._add(function.get("name"))
            self._add(function.get("arguments"))

    def add_choices(self, body: Any) -> None:
        """The generated parts of a chat/completions response or stream chunk."""
        choices = body.get("choices") if isinstance(body, dict) else None
        if not isinstance(choices, list):
            return
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            self._message(choice.get("message"))
            self._message(choice.get("delta"))
            self._add(choice.get("text"))

    def add_response(self, body: Any) -> None:
        """The generated parts of a Responses API `response` object."""
        items = body.get("output") if isinstance(body, dict) else None
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict):
                continue
            for name in ("name", "arguments", "input"):  # function and custom tool calls
                self._add(item.get(name))
            for part_list in (item.get("content"), item.get("summary")):
                for part in part_list if isinstance(part_list, list) else []:
                    if isinstance(part, dict):
                        self._add(part.get("text"))
                        self._add(part.get("refusal"))

    def add_event(self, event: dict[str, Any]) -> None:
        """The generated part of one Responses API stream event: every `*.delta` carries text
        (output text, refusals, reasoning, tool-call arguments); a function call's name comes
        with its item."""
        kind = event.get("type")
        if not isinstance(kind, str):
            return
        if kind.endswith(".delta"):
            self._add(event.get("delta"))
        elif kind == "response.output_item.added":
            item = event.get("item")
            if isinstance(item, dict):
                self._add(item.get("name"))

    def tokens(self, encoding_name: str | None) -> int:
        """Tokens of everything generated: counted in the model's vocabulary (or bytes), and never
        fewer than the pieces that carried text (a streamed piece is at least one token)."""
        counted = sum(tokenizers.count(t, encoding_name) for t in self.texts)
        return max(counted, self.pieces)

"""What an upstream generated, for the charge: its reported usage when valid, else a count of
every generated part.

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
    input_tokens: int
    output_tokens: int


def _tokens(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def reported_usage(usage: Any, with_output: bool = True) -> Usage | None:
    """(prompt, completion) tokens of an OpenAI usage object, or None when missing or invalid.
    Embeddings (`with_output=False`) report no completion tokens."""
    if not isinstance(usage, dict):
        return None
    tin = _tokens(usage.get("prompt_tokens"))
    tout = _tokens(usage.get("completion_tokens")) if with_output else 0
    if tout is None and not with_output:
        tout = 0
    if tin is None or tout is None:
        return None
    return Usage(tin, tout)


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

    def tokens(self, encoding_name: str | None) -> int:
        """Tokens of everything generated: counted in the model's vocabulary (or bytes), and never
        fewer than the pieces that carried text (a streamed piece is at least one token)."""
        counted = sum(tokenizers.count(t, encoding_name) for t in self.texts)
        return max(counted, self.pieces)

"""Deterministic token counting and reply text for the mock upstream.

A token is a run of word characters or a single other non-space character, so
`"Hello, world!"` is 4 tokens. Chat prompts add OpenAI's per-message framing: 3 tokens per
message (+1 when it has a name) and 3 to prime the reply. Replies are words from a fixed
vocabulary, one token each, so a stream of N content chunks carries exactly N tokens; the same
holds for reasoning text (`reasoning_words`) and tool-call arguments (`tool_argument_pieces`).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from typing import Any

_TOKEN = re.compile(r"\w+|[^\w\s]")
REPLY_WORDS = ("Hello", "from", "the", "aikeys", "mock", "upstream", "model", "server")
REASONING_WORDS = ("Let", "me", "think", "about", "this", "step", "by", "step")
TOOL_NAME = "get_weather"
# `{"location":"` + words + `"}`: 6 + 2 framing tokens around the words
_ARGS_OPEN = ("{", '"', "location", '"', ":", '"')
_ARGS_CLOSE = ('"', "}")
PER_MESSAGE = 3
PER_NAME = 1
REPLY_PRIMING = 3


def count_text(text: str) -> int:
    return len(_TOKEN.findall(text))


def _content_text(content: Any) -> Iterable[str]:
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                yield part["text"]


def message_tokens(message: dict[str, Any]) -> int:
    """Prompt tokens of one chat message: its framing, content and name."""
    total = PER_MESSAGE + sum(count_text(t) for t in _content_text(message.get("content")))
    if isinstance(message.get("name"), str):
        total += PER_NAME + count_text(message["name"])
    return total


def count_messages(messages: list[dict[str, Any]]) -> int:
    return REPLY_PRIMING + sum(message_tokens(message) for message in messages)


def count_prompt(prompt: Any) -> int:
    """Tokens of a completions/embeddings input: a string, strings, or token-id arrays."""
    if isinstance(prompt, str):
        return count_text(prompt)
    if isinstance(prompt, list):
        if all(isinstance(x, int) for x in prompt):
            return len(prompt)
        return sum(count_prompt(x) for x in prompt)
    return 0


def reply_words(n: int, vocabulary: tuple[str, ...] = REPLY_WORDS) -> list[str]:
    """The reply as `n` stream pieces: the first word bare, the rest with a leading space."""
    words = [vocabulary[i % len(vocabulary)] for i in range(n)]
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def reasoning_words(n: int) -> list[str]:
    """Reasoning ("thinking") text as `n` one-token stream pieces."""
    return reply_words(n, REASONING_WORDS)


def tool_argument_pieces(n: int) -> list[str]:
    """The arguments of the mock's `get_weather` call as `n` one-token pieces.

    From 8 tokens on they join to a JSON object, `{"location":"Hello from …"}`; fewer are a
    prefix of `{"location":""}` (no smaller JSON object has every token count). Any prefix of
    the pieces counts as many tokens as it has pieces, like a tool call cut by max_tokens.
    """
    pieces = [*_ARGS_OPEN, *reply_words(max(n - len(_ARGS_OPEN) - len(_ARGS_CLOSE), 0)), *_ARGS_CLOSE]
    return pieces[:n]


# hidden reasoning tokens a reasoning model "thinks" per effort (chat `reasoning_effort`,
# responses `reasoning.effort`; a `reasoning` object without an effort means "medium")
EFFORT_TOKENS = {"none": 0, "minimal": 4, "low": 8, "medium": 16, "high": 32, "xhigh": 64}


def split_pieces(text: str) -> list[str]:
    """`text` as one-token stream pieces that join back to it: each piece is one token with the
    whitespace before it (the first also takes leading whitespace, the last trailing whitespace)."""
    ends = [m.end() for m in _TOKEN.finditer(text)]
    if not ends:
        return []
    bounds = [0, *ends[:-1], len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def content_text(content: Any) -> str:
    """The text of a message's content: a string, or the `text` of its parts, joined by spaces."""
    return " ".join(_content_text(content))


def item_tokens(item: Any) -> int:
    """Prompt tokens of one Responses input (or earlier output) item."""
    if isinstance(item, str):
        return PER_MESSAGE + count_text(item)
    if not isinstance(item, dict):
        return 0
    kind = item.get("type")
    if kind == "function_call":
        name, arguments = item.get("name"), item.get("arguments")
        return (
            PER_MESSAGE
            + (count_text(name) if isinstance(name, str) else 0)
            + (count_text(arguments) if isinstance(arguments, str) else 0)
        )
    if kind == "function_call_output":
        return PER_MESSAGE + sum(count_text(t) for t in _content_text(item.get("output")))
    if kind in (None, "message") and "role" in item:
        return PER_MESSAGE + sum(count_text(t) for t in _content_text(item.get("content")))
    return 0  # reasoning items (the model's own, dropped), hosted tool calls, ...


def instructions_tokens(instructions: Any) -> int:
    """Prompt tokens of a Responses request's instructions: one more (system) message, or items."""
    if isinstance(instructions, str):
        return PER_MESSAGE + count_text(instructions)
    if isinstance(instructions, list):
        return sum(item_tokens(item) for item in instructions)
    return 0


def count_items(items: list[Any], instructions: Any = None) -> int:
    """Input tokens of a Responses request: its items framed like chat messages (3 each, 3 to
    prime the reply) and the instructions as one more (system) message."""
    return REPLY_PRIMING + sum(item_tokens(item) for item in items) + instructions_tokens(instructions)

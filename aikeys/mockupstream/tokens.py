"""Deterministic token counting and reply text for the mock upstream.

A token is a run of word characters or a single other non-space character, so
`"Hello, world!"` is 4 tokens. Chat prompts add OpenAI's per-message framing: 3 tokens per
message (+1 when it has a name) and 3 to prime the reply. Replies are words from a fixed
vocabulary, one token each, so a stream of N content chunks carries exactly N tokens.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_TOKEN = re.compile(r"\w+|[^\w\s]")
REPLY_WORDS = ("Hello", "from", "the", "aikeys", "mock", "upstream", "model", "server")
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


def count_messages(messages: list[dict[str, Any]]) -> int:
    total = REPLY_PRIMING
    for message in messages:
        total += PER_MESSAGE + sum(count_text(t) for t in _content_text(message.get("content")))
        if isinstance(message.get("name"), str):
            total += PER_NAME + count_text(message["name"])
    return total


def count_prompt(prompt: Any) -> int:
    """Tokens of a completions/embeddings input: a string, strings, or token-id arrays."""
    if isinstance(prompt, str):
        return count_text(prompt)
    if isinstance(prompt, list):
        if all(isinstance(x, int) for x in prompt):
            return len(prompt)
        return sum(count_prompt(x) for x in prompt)
    return 0


def reply_words(n: int) -> list[str]:
    """The reply as `n` stream pieces: the first word bare, the rest with a leading space."""
    words = [REPLY_WORDS[i % len(REPLY_WORDS)] for i in range(n)]
    return [w if i == 0 else " " + w for i, w in enumerate(words)]

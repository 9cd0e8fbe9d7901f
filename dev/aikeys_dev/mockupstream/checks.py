"""The shapes of request fields, read as OpenAI reads them: how its errors name a JSON type, whether
the word "json" appears, the `n` / `best_of` counts and a completions request's prompts."""

from __future__ import annotations

import json
from typing import Any


def says_json(messages: Any) -> bool:
    """Whether the word "json" appears (in any case) in the texts of messages or input items."""
    return "json" in json.dumps(messages, ensure_ascii=False).lower()


def json_type(value: Any) -> str:
    """How OpenAI's errors name a JSON value's type ("an object", "a string", ...)."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null"


def count_param(body: dict[str, Any], name: str, default: int = 1) -> int | None:
    """`n` / `best_of`: absent or null means `default`; otherwise an integer >= 1 (None: invalid)."""
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return None
    return value


def prompts(prompt: Any) -> list[Any] | None:
    """The prompts of a completions request: a string, strings, token ids or token-id lists."""
    if isinstance(prompt, str):
        return [prompt]
    if not isinstance(prompt, list) or not prompt:
        return None
    if all(isinstance(x, int) and not isinstance(x, bool) for x in prompt):
        return [prompt]
    if all(isinstance(x, str) for x in prompt):
        return list(prompt)
    if all(
        isinstance(x, list) and x and all(isinstance(t, int) and not isinstance(t, bool) for t in x)
        for x in prompt
    ):
        return list(prompt)
    return None

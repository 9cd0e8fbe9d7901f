"""Estimates bound what a request can cost before it is sent."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from aikeys.estimate import DEFAULT_MAX_OUTPUT, IMAGE_TOKENS, Endpoint, estimate, input_tokens, output_tokens
from aikeys.mockupstream import tokens as mock_tokens
from aikeys.money import Price
from aikeys.tokenizers import encoding

CHAT = Endpoint.CHAT


def chat(*contents: str, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": c} for c in contents], **extra}


def test_output_bound_follows_the_request_then_the_model_then_the_default() -> None:
    assert output_tokens(CHAT, chat("hi", max_completion_tokens=50, max_tokens=10), None) == 50
    assert output_tokens(CHAT, chat("hi", max_tokens=10), 999) == 10
    assert output_tokens(CHAT, chat("hi"), 999) == 999
    assert output_tokens(CHAT, chat("hi"), None) == DEFAULT_MAX_OUTPUT
    assert output_tokens(CHAT, chat("hi", max_tokens=10, n=3), None) == 30
    assert output_tokens(Endpoint.COMPLETIONS, {"prompt": "x", "max_tokens": 10, "best_of": 4}, None) == 40
    assert output_tokens(Endpoint.EMBEDDINGS, {"input": "x"}, None) == 0
    assert output_tokens(CHAT, chat("hi", max_tokens=True), 7) == 7  # a bool is not a count


def test_openai_models_count_with_tiktoken_plus_framing() -> None:
    body = chat("Hello, world!", "How are you?")
    enc = encoding("o200k_base")
    exact = len(enc.encode("Hello, world!")) + len(enc.encode("How are you?")) + 3 * 2 + 3
    bound = input_tokens(CHAT, body, "gpt-4o-mini")
    assert exact <= bound <= exact + exact // 100 + 9


def test_images_and_tools_are_counted() -> None:
    with_image = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:,"}},
                ],
            }
        ]
    }
    plain = {"messages": [{"role": "user", "content": [{"type": "text", "text": "what is this?"}]}]}
    assert input_tokens(CHAT, with_image, "gpt-4o") - input_tokens(CHAT, plain, "gpt-4o") >= IMAGE_TOKENS
    tools = chat("hi", tools=[{"type": "function", "function": {"name": "lookup", "parameters": {}}}])
    assert input_tokens(CHAT, tools, "gpt-4o") > input_tokens(CHAT, chat("hi"), "gpt-4o")


def test_token_id_prompts_count_exactly() -> None:
    assert input_tokens(Endpoint.EMBEDDINGS, {"input": [1, 2, 3]}, "x") >= 3
    assert input_tokens(Endpoint.EMBEDDINGS, {"input": [[1, 2], [3, 4, 5]]}, "x") >= 5


@settings(max_examples=200)
@given(st.lists(st.text(max_size=200), min_size=1, max_size=5))
def test_unknown_models_are_bounded_by_bytes(contents: list[str]) -> None:
    body = chat(*contents)
    bound = input_tokens(CHAT, body, "llama-3-70b")
    # the mock upstream's tokenizer (like any byte-level BPE) never counts more
    assert bound >= mock_tokens.count_messages(body["messages"])
    assert bound >= sum(len(c.encode()) for c in contents)


@settings(max_examples=200)
@given(st.lists(st.text(max_size=200), min_size=1, max_size=5), st.integers(1, 2000))
def test_estimate_covers_what_the_mock_charges(contents: list[str], max_tokens: int) -> None:
    body = chat(*contents, max_tokens=max_tokens)
    price = Price.parse("2.50", "10.00")
    est = estimate(CHAT, body, "mock-gpt", price, None)
    actual_out = min(max_tokens, 16)
    actual = price.cost(mock_tokens.count_messages(body["messages"]), actual_out)
    assert est.cost >= actual
    assert est.output_tokens == max_tokens

"""Estimates bound what a request can cost before it is sent."""

from __future__ import annotations

from typing import Any

from aikeys_dev.mockupstream import tokens as mock_tokens
from hypothesis import given, settings
from hypothesis import strategies as st

from aikeys import limits
from aikeys.estimate import (
    DEFAULT_MAX_OUTPUT,
    IMAGE_TOKENS,
    Endpoint,
    OutputCap,
    apply_cap,
    estimate,
    input_tokens,
    output_cap,
)
from aikeys.money import Price
from aikeys.tokenizers import encoding, resolve

CHAT = Endpoint.CHAT


def chat(*contents: str, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": c} for c in contents], **extra}


def output_tokens(endpoint: Endpoint, body: dict[str, Any], model_max: int | None) -> int:
    return output_cap(endpoint, body, model_max).total


def test_output_bound_follows_the_request_clamped_to_the_model_then_the_default() -> None:
    assert output_tokens(CHAT, chat("hi", max_completion_tokens=50, max_tokens=10), None) == 10
    assert output_tokens(CHAT, chat("hi", max_tokens=10), 999) == 10
    assert output_tokens(CHAT, chat("hi", max_tokens=5000), 999) == 999  # clamped to the model's limit
    assert output_tokens(CHAT, chat("hi"), 999) == 999
    assert output_tokens(CHAT, chat("hi"), None) == DEFAULT_MAX_OUTPUT
    assert output_tokens(CHAT, chat("hi", max_tokens=10**17), None) == limits.MAX_OUTPUT_TOKENS
    assert output_tokens(CHAT, chat("hi", max_tokens=10, n=3), None) == 30
    assert output_tokens(Endpoint.EMBEDDINGS, {"input": "x"}, None) == 0
    assert output_tokens(CHAT, chat("hi", max_tokens=True), 7) == 7  # a bool is not a count


def test_completions_bound_every_prompt_and_every_generated_choice() -> None:
    completions = Endpoint.COMPLETIONS
    assert output_tokens(completions, {"prompt": "x", "max_tokens": 10, "best_of": 4}, None) == 40
    assert output_tokens(completions, {"prompt": ["a"] * 50, "max_tokens": 100}, None) == 5000
    assert output_tokens(completions, {"prompt": [[1, 2], [3]], "max_tokens": 10, "n": 2}, None) == 40
    assert output_tokens(completions, {"prompt": [1, 2, 3], "max_tokens": 10}, None) == 10  # one token prompt
    assert (
        output_tokens(completions, {"prompt": ["a", "b"], "max_tokens": 10, "n": 2, "best_of": 3}, None) == 60
    )


def test_the_cap_is_written_where_the_client_put_it_else_where_the_provider_expects_it() -> None:
    body = chat("hi")
    apply_cap(CHAT, body, OutputCap(100, 1), "max_completion_tokens")
    assert body["max_completion_tokens"] == 100 and "max_tokens" not in body
    body = chat("hi", max_tokens=5000)
    apply_cap(CHAT, body, OutputCap(999, 1), "max_completion_tokens")
    assert body["max_tokens"] == 999 and "max_completion_tokens" not in body
    body = chat("hi", max_tokens=50, max_completion_tokens=70)
    apply_cap(CHAT, body, OutputCap(50, 1), "max_tokens")
    assert (body["max_tokens"], body["max_completion_tokens"]) == (50, 50)
    body = {"prompt": "x"}
    apply_cap(Endpoint.COMPLETIONS, body, OutputCap(64, 1), "max_completion_tokens")
    assert body == {"prompt": "x", "max_tokens": 64}
    body = {"input": "x"}
    apply_cap(Endpoint.EMBEDDINGS, body, OutputCap(0, 0), "max_tokens")
    assert body == {"input": "x"}


@settings(max_examples=300)
@given(
    st.one_of(st.none(), st.integers(1, 10**18)),
    st.one_of(st.none(), st.integers(1, 10**18)),
    st.one_of(st.none(), st.integers(1, limits.MAX_OUTPUT_TOKENS)),
    st.integers(1, 128),
)
def test_the_cap_never_exceeds_what_the_client_or_the_model_allows(
    max_tokens: int | None, max_completion: int | None, model_max: int | None, n: int
) -> None:
    body = chat("hi", n=n)
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if max_completion is not None:
        body["max_completion_tokens"] = max_completion
    cap = output_cap(CHAT, body, model_max)
    asked = [v for v in (max_tokens, max_completion) if v is not None]
    assert 1 <= cap.per_choice <= (model_max or limits.MAX_OUTPUT_TOKENS)
    if asked:
        assert cap.per_choice <= min(asked)
    assert cap.choices == n
    sent = dict(body)
    apply_cap(CHAT, sent, cap, "max_tokens")
    assert all(sent[f] == cap.per_choice for f in ("max_tokens", "max_completion_tokens") if f in sent)
    assert any(f in sent for f in ("max_tokens", "max_completion_tokens"))


def test_model_names_choose_a_vocabulary_only_on_openai_itself() -> None:
    assert resolve("auto", "gpt-4o-mini", openai_native=True) == "o200k_base"
    assert resolve("auto", "gpt-4o-mini", openai_native=False) is None  # anyone can call a model that
    assert resolve("auto", "llama-3", openai_native=True) is None
    assert resolve("cl100k_base", "llama-3", openai_native=False) == "cl100k_base"
    assert resolve("bytes", "gpt-4o", openai_native=True) is None


def test_a_non_tiktoken_upstream_cannot_outcount_the_bound() -> None:
    # 50,000 "!" is 50,000 tokens for the mock's tokenizer but ~6,000 for o200k_base
    body = chat("!" * 50_000)
    assert input_tokens(CHAT, body, None) >= mock_tokens.count_messages(body["messages"])
    assert input_tokens(CHAT, body, "o200k_base") < 50_000


def test_openai_models_count_with_tiktoken_plus_framing() -> None:
    body = chat("Hello, world!", "How are you?")
    enc = encoding("o200k_base")
    exact = len(enc.encode("Hello, world!")) + len(enc.encode("How are you?")) + 3 * 2 + 3
    bound = input_tokens(CHAT, body, "o200k_base")
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
    assert (
        input_tokens(CHAT, with_image, "o200k_base") - input_tokens(CHAT, plain, "o200k_base") >= IMAGE_TOKENS
    )
    tools = chat("hi", tools=[{"type": "function", "function": {"name": "lookup", "parameters": {}}}])
    assert input_tokens(CHAT, tools, "o200k_base") > input_tokens(CHAT, chat("hi"), "o200k_base")


def test_token_id_prompts_count_exactly() -> None:
    assert input_tokens(Endpoint.EMBEDDINGS, {"input": [1, 2, 3]}, None) >= 3
    assert input_tokens(Endpoint.EMBEDDINGS, {"input": [[1, 2], [3, 4, 5]]}, None) >= 5


@settings(max_examples=200)
@given(st.lists(st.text(max_size=200), min_size=1, max_size=5))
def test_unknown_models_are_bounded_by_bytes(contents: list[str]) -> None:
    body = chat(*contents)
    bound = input_tokens(CHAT, body, None)
    # the mock upstream's tokenizer (like any byte-level BPE) never counts more
    assert bound >= mock_tokens.count_messages(body["messages"])
    assert bound >= sum(len(c.encode()) for c in contents)


@settings(max_examples=200)
@given(st.lists(st.text(max_size=200), min_size=1, max_size=5), st.integers(1, 2000))
def test_estimate_covers_what_the_mock_charges(contents: list[str], max_tokens: int) -> None:
    body = chat(*contents, max_tokens=max_tokens)
    price = Price.parse("2.50", "10.00")
    est = estimate(CHAT, body, price, None, output_cap(CHAT, body, None))
    actual_out = min(max_tokens, 16)
    actual = price.cost(mock_tokens.count_messages(body["messages"]), actual_out)
    assert est.cost >= actual
    assert est.output_tokens == max_tokens


def test_responses_requests_bound_every_input_item_and_their_own_cap() -> None:
    responses = Endpoint.RESPONSES
    body: dict[str, Any] = {
        "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
            {
                "type": "function_call",
                "call_id": "c",
                "name": "get_weather",
                "arguments": '{"city": "Paris"}',
            },
            {"type": "function_call_output", "call_id": "c", "output": "sunny " * 100},
            {"type": "reasoning", "id": "rs", "summary": [], "encrypted_content": "x" * 400},
            {"role": "user", "content": [{"type": "input_image", "image_url": "data:,"}]},
        ],
        "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
    }
    bound = input_tokens(responses, body, None)
    texts = ["Be brief.", "weather?", "get_weather", '{"city": "Paris"}', "sunny " * 100, "x" * 400]
    assert bound >= sum(len(t.encode()) for t in texts) + IMAGE_TOKENS
    assert input_tokens(responses, {"input": "hi"}, None) < bound
    assert output_cap(responses, {"input": "hi", "max_output_tokens": 100, "n": 5}, 50) == OutputCap(50, 1)
    assert output_cap(responses, {"input": "hi"}, None) == OutputCap(DEFAULT_MAX_OUTPUT, 1)
    sent = {"input": "hi", "max_tokens": 3}
    apply_cap(responses, sent, OutputCap(77, 1), "max_tokens")
    assert sent == {"input": "hi", "max_tokens": 3, "max_output_tokens": 77}


def test_every_string_is_inside_the_bound_whatever_its_field() -> None:
    """A refusal part, an unknown content type, an unknown field: all counted (issue 21, #1)."""
    big = "x" * 200_000
    refusal = {"messages": [{"role": "assistant", "content": [{"type": "refusal", "refusal": big}]}]}
    unknown = {"messages": [{"role": "user", "content": [{"type": "future_part", "payload": {"v": big}}]}]}
    extra_field = {"messages": [{"role": "user", "content": "hi"}], "new_context": [big]}
    for body in (refusal, unknown, extra_field):
        assert input_tokens(CHAT, body, None) >= 200_000
        assert input_tokens(CHAT, body, "o200k_base") >= len(encoding("o200k_base").encode(big))


def test_file_and_audio_data_count_their_decoded_size() -> None:
    import base64

    data = base64.b64encode(b"\x00" * 300_000).decode()
    responses = {"input": [{"role": "user", "content": [{"type": "input_file", "file_data": data}]}]}
    chat_file = chat("hi")
    chat_file["messages"][0]["content"] = [
        {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{data}", "filename": "a.pdf"}}
    ]
    audio = chat("hi")
    audio["messages"][0]["content"] = [
        {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}
    ]
    for endpoint, body in ((Endpoint.RESPONSES, responses), (CHAT, chat_file), (CHAT, audio)):
        assert input_tokens(endpoint, body, "o200k_base") >= 300_000


def test_input_stored_upstream_is_bounded_by_the_context_window_or_refused() -> None:
    import pytest

    from aikeys.estimate import UnboundedInput

    responses = Endpoint.RESPONSES
    file_part = {"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}
    chat_file_part = {"type": "file", "file": {"file_id": "f"}}
    referring: list[tuple[Endpoint, dict[str, Any], str]] = [
        (responses, {"input": "more", "previous_response_id": "resp_1"}, "previous_response_id"),
        (responses, {"input": "more", "conversation": "conv_1"}, "conversation"),
        (responses, {"input": "x", "prompt": {"id": "pmpt_1"}}, "prompt"),
        (responses, {"input": [{"type": "item_reference", "id": "msg_1"}]}, "item_reference"),
        (
            responses,
            {"input": [file_part]},
            "file_id",
        ),
        (
            responses,
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_url": "https://x/a.pdf"}]}]},
            "file_url",
        ),
        (
            CHAT,
            {"messages": [{"role": "user", "content": [chat_file_part]}]},
            "file_id",
        ),
    ]
    for endpoint, body, param in referring:
        with pytest.raises(UnboundedInput) as raised:
            input_tokens(endpoint, body, None)
        assert raised.value.param == param
        assert input_tokens(endpoint, body, None, context_window=128_000) == 128_000
    # what the request itself carries still counts when it is more than the window
    body = {"input": "y" * 200_000, "previous_response_id": "resp_1"}
    assert input_tokens(responses, body, None, context_window=1_000) >= 200_000
    # a completions prompt is text, not a stored prompt
    assert input_tokens(Endpoint.COMPLETIONS, {"prompt": "hello"}, None) > 0


@settings(max_examples=300)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=50),
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=30,
    )
)
def test_no_string_anywhere_escapes_the_byte_bound(value: Any) -> None:
    """Wherever a string sits in a chat request, the byte bound covers its bytes (or raises for a
    stored reference)."""
    import contextlib

    from aikeys.estimate import UnboundedInput

    body = {"messages": [{"role": "user", "content": "q"}], "extra": value}
    strings: list[str] = []

    def gather(v: Any) -> None:
        if isinstance(v, str):
            strings.append(v)
        elif isinstance(v, list):
            for x in v:
                gather(x)
        elif isinstance(v, dict):
            if v.get("type") in ("image_url", "input_image", "image", "file", "input_file", "input_audio"):
                return
            for k, x in v.items():
                if k not in ("role", "type"):
                    gather(x)

    gather(value)
    with contextlib.suppress(UnboundedInput):
        assert input_tokens(CHAT, body, None) >= sum(len(s.encode()) for s in strings)

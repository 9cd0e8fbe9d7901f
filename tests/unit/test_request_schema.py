"""The request schema (`schemas`): a known field of the wrong type is a 400 naming it, before
anything is reserved or sent; whatever the validator lets through, the gateway's readers — the
estimate, the output cap, the Responses → chat translation and the answer's translation back —
take without raising. Bodies are generated from the schema itself, with arbitrary JSON anywhere."""

from __future__ import annotations

import timeit
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aikeys_gateway.errors import GatewayError
from aikeys_gateway.pipeline.intake import serialize, validate
from aikeys_gateway.surfaces.openai import schemas, translate
from aikeys_gateway.upstreams.sse import SSEFilter
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from openai.types import completion_create_params as completion_params
from openai.types import embedding_create_params as embedding_params
from openai.types.chat import completion_create_params as chat_params
from openai.types.responses import response_create_params as response_params

from aikeys.estimate import Endpoint, apply_cap, estimate, output_cap
from aikeys.money import Price

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
REQUIRED = {
    Endpoint.CHAT: ("messages", [{"role": "user", "content": "hi"}]),
    Endpoint.COMPLETIONS: ("prompt", "hi"),
    Endpoint.EMBEDDINGS: ("input", "hi"),
    Endpoint.RESPONSES: ("input", "hi"),
}


def shaped(shape: schemas.Shape, wild: bool) -> st.SearchStrategy[Any]:
    """Values of a shape; with `wild`, any JSON may stand in for any part of one."""
    strategy = _shaped(shape, wild)
    return st.one_of(strategy, strategy, strategy, JSON) if wild else strategy


def typed(kind: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda fields: {**fields, "type": kind}


def _shaped(shape: schemas.Shape, wild: bool) -> st.SearchStrategy[Any]:  # noqa: PLR0911
    if isinstance(shape, schemas.OneOf):
        return st.one_of(*(shaped(o, wild) for o in shape.options))
    if isinstance(shape, schemas.Tagged):
        cases = [_shaped(case, wild).map(typed(kind)) for kind, case in shape.cases.items()]
        if shape.default is not None:  # an item without a type is of the default one
            cases.append(_shaped(shape.cases[shape.default], wild))
        return st.one_of(*cases, st.dictionaries(st.text(max_size=8), JSON, max_size=3))
    if isinstance(shape, schemas.Obj):
        if not shape.fields:
            return st.dictionaries(st.text(max_size=8), JSON, max_size=3)
        fields = {name: shaped(f, wild) | st.none() for name, f in shape.fields.items()}
        return st.fixed_dictionaries({}, optional=fields)
    if isinstance(shape, schemas.Arr):
        return st.lists(shaped(shape.item, wild), max_size=3)
    if isinstance(shape, schemas.Int):
        return st.integers(shape.minimum, shape.maximum if shape.maximum is not None else 2**40)
    if shape is schemas.STRING:
        return st.text(max_size=8)
    if shape is schemas.BOOLEAN:
        return st.booleans()
    if shape is schemas.NUMBER:
        return st.integers(-5, 5) | st.floats(-2, 2)
    return JSON


def bodies(endpoint: Endpoint, wild: bool) -> st.SearchStrategy[dict[str, Any]]:
    name, value = REQUIRED[endpoint]

    def body(fields: dict[str, Any]) -> dict[str, Any]:
        if not wild and fields.get(name) in (None, "", []):  # the required field: given
            fields[name] = value
        return {"model": "m", name: value, **fields}

    return _shaped(schemas.BODIES[endpoint], wild).map(body)


PRICE = Price(1_000_000, 2_000_000)
COMPLETION = {
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "ok",
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "ns__f", "arguments": "{}"}}
                ],
            },
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
}
CHUNKS: list[Any] = [
    {"choices": [{"index": 0, "delta": {"content": "o"}}]},
    {
        "choices": [
            {"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c", "function": {"name": "ns__f"}}]}}
        ]
    },
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": COMPLETION["usage"]},
    b"[DONE]",
]


def served(endpoint: Endpoint, body: dict[str, Any]) -> None:
    """What the gateway does with a body before and after the upstream (validate, proxy.plan and
    the answer's handling), minus the I/O."""
    validate(endpoint, body)
    if endpoint is Endpoint.RESPONSES:
        translated(body)
        chat = translate.chat_request(body)
        # a native backend, with the context window a model that takes stored input must have
        estimate(endpoint, body, PRICE, None, output_cap(endpoint, body, None), context_window=128_000)
        body, endpoint = chat, Endpoint.CHAT
    cap = output_cap(endpoint, body, 1000)
    upstream = dict(body)
    apply_cap(endpoint, upstream, cap, "max_tokens")
    serialize(upstream)
    for encoding in (None, "o200k_base"):
        estimate(endpoint, body, PRICE, encoding, cap)


def refused(run: Callable[[], None]) -> GatewayError | None:
    """The error `run` raised, None if it raised nothing (any other exception fails the test)."""
    try:
        run()
    except GatewayError as err:
        return err
    return None


def answered_400(endpoint: Endpoint, body: dict[str, Any]) -> GatewayError | None:
    """None when the body is served; the 400 when it is refused (anything else fails the test)."""
    err = refused(lambda: served(endpoint, body))
    assert err is None or (err.status == 400 and err.type == "invalid_request_error" and err.message)
    return err


HYPOTHESIS = settings(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("endpoint", list(Endpoint))
def test_any_json_in_any_known_field_is_served_or_a_400(endpoint: Endpoint) -> None:
    @HYPOTHESIS
    @given(body=bodies(endpoint, wild=True))
    def one(body: dict[str, Any]) -> None:
        answered_400(endpoint, body)

    one()


@pytest.mark.parametrize("endpoint", list(Endpoint))
def test_bodies_of_the_schemas_types_pass_the_validator(endpoint: Endpoint) -> None:
    @HYPOTHESIS
    @given(body=bodies(endpoint, wild=False))
    @example(body={"model": "m", **dict([REQUIRED[endpoint]])})
    def one(body: dict[str, Any]) -> None:
        body.pop("background", None)  # a type the schema allows, a value the gateway refuses
        validate(endpoint, body)

    one()


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": 5}, "tools"),
        ({"tools": True}, "tools"),
        ({"tools": [{"type": "namespace", "name": "ns", "tools": 5}]}, "tools[0].tools"),
        ({"tools": [{"type": "function", "name": 5}]}, "tools[0].name"),
        (
            {"input": [{"role": "assistant", "content": [{"type": "refusal", "refusal": 5}]}]},
            "input[0].content[0].refusal",
        ),
        ({"input": [{"role": ["user"], "content": "hi"}]}, "input[0].role"),
        ({"input": [{"type": "function_call_output", "call_id": "c", "output": 5}]}, "input[0].output"),
        ({"reasoning": "high"}, "reasoning"),
        ({"reasoning": 1}, "reasoning"),
        ({"reasoning": ["x"]}, "reasoning"),
        ({"reasoning": True}, "reasoning"),
        ({"reasoning": {"effort": 3}}, "reasoning.effort"),
        ({"text": {"format": {"type": "json_schema", "schema": "x"}}}, "text.format.schema"),
        ({"tool_choice": 5}, "tool_choice"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"input": 42}, "input"),
    ],
)
def test_a_bad_type_on_a_translated_responses_request_is_a_400_naming_it(
    fields: dict[str, Any], param: str
) -> None:
    body = {"model": "m", "input": "hi", **fields}
    refused = answered_400(Endpoint.RESPONSES, body)
    assert refused is not None and refused.param == param
    assert refused.code in ("invalid_type", "integer_below_min_value")
    assert f"'{param}'" in refused.message


@pytest.mark.parametrize(
    ("endpoint", "fields", "param", "code"),
    [
        (Endpoint.CHAT, {"messages": "hi"}, "messages", "invalid_type"),
        (Endpoint.CHAT, {"messages": [5]}, "messages[0]", "invalid_type"),
        (Endpoint.CHAT, {"messages": []}, "messages", "missing_required_parameter"),
        (
            Endpoint.CHAT,
            {"messages": [{"role": "user", "content": 5}]},
            "messages[0].content",
            "invalid_type",
        ),
        (
            Endpoint.CHAT,
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": 5}]}]},
            "messages[0].content[0].image_url",
            "invalid_type",
        ),
        (
            Endpoint.CHAT,
            {"tools": [{"type": "function", "function": "f"}]},
            "tools[0].function",
            "invalid_type",
        ),
        (Endpoint.CHAT, {"stream": "yes"}, "stream", "invalid_type"),
        (Endpoint.CHAT, {"stream_options": []}, "stream_options", "invalid_type"),
        (
            Endpoint.CHAT,
            {"stream_options": {"include_usage": "yes"}},
            "stream_options.include_usage",
            "invalid_type",
        ),
        (Endpoint.CHAT, {"max_tokens": -1}, "max_tokens", "integer_below_min_value"),
        (Endpoint.CHAT, {"max_tokens": 1.5}, "max_tokens", "invalid_type"),
        (Endpoint.CHAT, {"max_tokens": True}, "max_tokens", "invalid_type"),
        (Endpoint.CHAT, {"n": 129}, "n", "integer_above_max_value"),
        (Endpoint.CHAT, {"temperature": "hot"}, "temperature", "invalid_type"),
        (Endpoint.COMPLETIONS, {"best_of": 0}, "best_of", "integer_below_min_value"),
        (Endpoint.COMPLETIONS, {"prompt": [["a"]]}, "prompt", "invalid_type"),
        (Endpoint.EMBEDDINGS, {"input": {"text": "x"}}, "input", "invalid_type"),
        (Endpoint.EMBEDDINGS, {"dimensions": "8"}, "dimensions", "invalid_type"),
        (Endpoint.RESPONSES, {"background": True}, "background", "unsupported_parameter"),
    ],
)
def test_every_surface_names_the_bad_field(
    endpoint: Endpoint, fields: dict[str, Any], param: str, code: str
) -> None:
    name, value = REQUIRED[endpoint]
    with pytest.raises(GatewayError) as refused:
        validate(endpoint, {"model": "m", name: value, **fields})
    assert (refused.value.status, refused.value.param, refused.value.code) == (400, param, code)


@pytest.mark.parametrize(
    ("endpoint", "fields"),
    [
        (Endpoint.CHAT, {"max_tokens": None, "tools": None, "stop": ["a"], "vendor_extension": {"x": [1]}}),
        (Endpoint.CHAT, {"messages": [{"role": "user", "content": [{"type": "new_part", "x": 1}]}]}),
        (Endpoint.COMPLETIONS, {"prompt": [[1, 2], [3]], "logprobs": 2}),
        (Endpoint.EMBEDDINGS, {"input": [1, 2, 3]}),
        (Endpoint.RESPONSES, {"tools": [{"type": "web_search", "anything": [1]}], "future_field": 1}),
        (Endpoint.RESPONSES, {"input": [{"type": "reasoning", "summary": 5}]}),
    ],
)
def test_unknown_fields_types_and_nulls_pass(endpoint: Endpoint, fields: dict[str, Any]) -> None:
    name, value = REQUIRED[endpoint]
    validate(endpoint, {"model": "m", name: value, **fields})


def test_validating_a_typical_chat_request_takes_microseconds() -> None:
    body = {
        "model": "team:openai/gpt-4o",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": [{"type": "text", "text": "What is in this image?"}]},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "max_tokens": 256,
        "temperature": 0.2,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    runs = 2000
    seconds = min(timeit.repeat(lambda: validate(Endpoint.CHAT, body), number=runs, repeat=3)) / runs
    print(f"\nvalidate(chat): {seconds * 1e6:.1f} µs")
    assert seconds < 100e-6  # 3-5 µs here (the hand checks before: ~1-3 µs); generous for a busy machine


def translated(body: dict[str, Any]) -> None:
    """The Responses ↔ chat translation of a request and of its answers (JSON and streamed)."""
    translate.chat_request(body)
    orjson.dumps(translate.response_from_chat(COMPLETION, body, "ns:p/m"))
    stream = SSEFilter(translate.ChatToResponses(body, "ns:p/m"))
    for c in CHUNKS:
        stream.feed(b"data: " + (c if isinstance(c, bytes) else orjson.dumps(c)) + b"\n\n")
    stream.end()


@HYPOTHESIS
@given(body=bodies(Endpoint.RESPONSES, wild=True))
@example(body={"input": "hi", "reasoning": "high"})
@example(body={"input": "hi", "tools": True})
@example(body={"input": "hi", "tools": [{"type": "namespace", "name": "ns", "tools": 5}]})
@example(body={"input": [{"role": "user", "content": [{"type": "refusal", "refusal": 5}]}]})
def test_the_translation_alone_raises_nothing_but_a_400(body: dict[str, Any]) -> None:
    """Defence in depth: even a body the validator never saw."""
    err = refused(lambda: translated(body))
    assert err is None or err.status == 400


SDK_PARAMS = {
    Endpoint.CHAT: chat_params.CompletionCreateParamsStreaming,
    Endpoint.COMPLETIONS: completion_params.CompletionCreateParamsStreaming,
    Endpoint.EMBEDDINGS: embedding_params.EmbeddingCreateParams,
    Endpoint.RESPONSES: response_params.ResponseCreateParamsStreaming,
}


@pytest.mark.parametrize("endpoint", list(Endpoint))
def test_the_schema_types_every_field_the_openai_sdk_sends(endpoint: Endpoint) -> None:
    """The top-level fields are exactly those of the SDK's create params (a new SDK field shows up
    here, to be typed)."""
    params = SDK_PARAMS[endpoint]
    sdk = {name for cls in params.__mro__ for name in getattr(cls, "__annotations__", {})}
    assert set(schemas.BODIES[endpoint].fields) == sdk

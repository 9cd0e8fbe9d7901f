"""The mock upstream's deterministic token counts and schema instances."""

from __future__ import annotations

import datetime
from typing import Any, Literal

from aikeys_dev.mockupstream import cache, replies, schema, tokens
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field


def _json_children(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    keys = st.sampled_from(["type", "properties", "required", "items", "anyOf", "allOf", "$ref", "enum", "x"])
    return st.lists(children, max_size=3) | st.dictionaries(keys | st.text(max_size=3), children, max_size=4)


def test_count_text_examples() -> None:
    assert tokens.count_text("") == 0
    assert tokens.count_text("Hello, world!") == 4
    assert tokens.count_text("  spaced   out  ") == 2


def test_chat_framing() -> None:
    assert tokens.count_messages([{"role": "user", "content": "hi"}]) == 3 + 3 + 1
    named = [{"role": "user", "name": "bob", "content": "hi"}]
    assert tokens.count_messages(named) == 3 + 3 + 1 + 1 + 1
    parts = [{"role": "user", "content": [{"type": "text", "text": "a b"}, {"type": "image_url"}]}]
    assert tokens.count_messages(parts) == 3 + 3 + 2


def test_prompt_shapes() -> None:
    assert tokens.count_prompt("a b c") == 3
    assert tokens.count_prompt(["a", "b c"]) == 3
    assert tokens.count_prompt([1, 2, 3, 4]) == 4
    assert tokens.count_prompt([[1, 2], [3]]) == 3


@given(st.integers(min_value=0, max_value=500))
def test_reply_of_n_pieces_counts_n_tokens(n: int) -> None:
    pieces = tokens.reply_words(n)
    assert len(pieces) == n
    assert tokens.count_text("".join(pieces)) == n


@given(st.text(), st.text())
def test_counts_add_up_over_whitespace(a: str, b: str) -> None:
    assert tokens.count_text(a + " " + b) == tokens.count_text(a) + tokens.count_text(b)


@given(st.text())
def test_split_pieces_are_one_token_each(text: str) -> None:
    pieces = tokens.split_pieces(text)
    assert len(pieces) == tokens.count_text(text)
    assert all(tokens.count_text(p) == 1 for p in pieces)
    if pieces:
        assert "".join(pieces) == text


def test_split_pieces_examples() -> None:
    assert tokens.split_pieces('{"a":1}') == ["{", '"', "a", '"', ":", "1", "}"]
    assert tokens.split_pieces("  Hello, world! ") == ["  Hello", ",", " world", "! "]
    assert tokens.split_pieces("   ") == []


def test_responses_input_counts_like_chat() -> None:
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello, world!"}]
    assert tokens.count_items(["Hello, world!"], "Be brief.") == tokens.count_messages(chat) == 16
    parts = {"role": "user", "content": [{"type": "input_text", "text": "a b"}, {"type": "input_image"}]}
    assert tokens.count_items([parts]) == 3 + 3 + 2
    call = {"type": "function_call", "call_id": "c", "name": "get_weather", "arguments": '{"city":"x"}'}
    output = {"type": "function_call_output", "call_id": "c", "output": "40 C"}
    assert tokens.count_items([call, output]) == 3 + (3 + 1 + 9) + (3 + 2)
    assert tokens.count_items([{"type": "reasoning", "id": "rs_1", "summary": []}, 7, None]) == 3


class Address(BaseModel):
    street: str
    zip_code: str = Field(min_length=5, max_length=5)
    country: Literal["DE", "FR"]


class Person(BaseModel):
    name: str
    age: int = Field(ge=18, le=30)
    height: float = Field(gt=2.0)
    tags: list[str] = Field(min_length=2)
    active: bool
    born: datetime.date
    seen: datetime.datetime
    email: str | None
    home: Address
    previous: list[Address]
    parent: Person | None = None


def test_schema_instances_validate_with_pydantic() -> None:
    value = schema.instance(Person.model_json_schema())
    person = Person.model_validate(value)
    assert person.age == 18 and person.height == 2.5 and person.tags == ["mock", "mock"]
    assert person.home.country == "DE" and person.home.zip_code == "mockm"
    assert person.email == "mock" and person.active is True
    assert schema.instance(Person.model_json_schema()) == value  # deterministic


def test_schema_instances_follow_the_brief() -> None:
    strict = {
        "type": "object",
        "properties": {
            "s": {"type": "string"},
            "i": {"type": "integer"},
            "n": {"type": "number"},
            "b": {"type": "boolean"},
            "e": {"enum": ["x", "y"]},
            "a": {"type": "array", "items": {"type": "integer"}},
            "o": {"type": "object", "properties": {"p": {"type": "string"}}, "required": ["p"]},
            "optional": {"type": "string"},
        },
        "required": ["s", "i", "n", "b", "e", "a", "o"],
        "additionalProperties": False,
    }
    assert schema.instance(strict) == {
        "s": "mock",
        "i": 1,
        "n": 1.5,
        "b": True,
        "e": "x",
        "a": [1],
        "o": {"p": "mock"},
    }
    # no `required`: every property
    assert schema.instance({"type": "object", "properties": {"city": {"type": "string"}}}) == {"city": "mock"}
    assert schema.instance({"type": ["null", "integer"]}) == 1
    assert schema.instance({"anyOf": [{"type": "null"}, {"type": "boolean"}]}) is True
    assert schema.instance({"const": 7}) == 7
    assert schema.instance({"type": "integer", "minimum": 3, "multipleOf": 5}) == 5
    assert schema.instance({"type": "array", "maxItems": 0, "items": {"type": "string"}}) == []


def test_schema_instances_terminate_on_hostile_schemas() -> None:
    deep: Any = {}
    for _ in range(300):
        deep = {"type": "object", "properties": {"x": deep}, "required": ["x"]}
    value = schema.instance(deep)
    assert isinstance(value, dict)
    cyclic = {"$ref": "#/$defs/n", "$defs": {"n": {"type": "object", "properties": {"next": {"$ref": "#"}}}}}
    assert isinstance(schema.instance(cyclic), dict)
    loop = {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}
    assert schema.instance(loop) == "mock"
    junk: list[Any] = [
        *(None, 3, "x", [], {"type": 5}, {"$ref": "http://x"}, {"allOf": [1, {"$ref": "#/x"}]}),
        {"allOf": [{"$ref": None}]},  # a reference that is not a string (found by the test below)
    ]
    for value in junk:
        schema.instance(value)  # never raises


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5), _json_children))
def test_schema_instance_never_raises(junk: Any) -> None:
    schema.instance(junk)


def test_schema_instances_stay_small() -> None:
    huge = {"type": "array", "minItems": 10**9, "items": {"type": "string", "minLength": 10**9}}
    value = schema.instance(huge)
    assert len(value) == schema.MAX_ITEMS and len(value[0]) == schema.MAX_LENGTH
    wide = {f"p{i}": {"$ref": "#/$defs/n"} for i in range(10)}
    fan_out = {
        "$defs": {"n": {"type": "object", "properties": wide, "required": list(wide)}},
        "$ref": "#/$defs/n",
    }
    assert isinstance(schema.instance(fan_out), dict)  # 10^12 values unless bounded


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8), _json_children, max_leaves=20
)
REQUEST_KEYS = [
    "messages",
    "input",
    "tools",
    "tool_choice",
    "response_format",
    "text",
    "reasoning",
    "max_tokens",
]


@given(st.dictionaries(st.sampled_from(REQUEST_KEYS) | st.text(max_size=4), JSON, max_size=6), JSON)
def test_reading_any_request_never_raises(body: dict[str, Any], context: Any) -> None:
    for ask in (
        replies.from_chat(body),
        replies.from_responses(body, context if isinstance(context, list) else []),
    ):
        for kind in ("text", "tool_call", "reasoning"):
            reply = replies.plan(ask, kind, 5, ignore_cap=False)
            assert reply.generated >= 0
    tokens.count_items(context if isinstance(context, list) else [context], body.get("instructions"))


def _messages(*texts: str) -> list[tuple[Any, int]]:
    messages = [{"role": "user", "content": t} for t in texts]
    return [(m, tokens.message_tokens(m)) for m in messages]


def test_prompt_cache_counts_the_longest_prefix_seen() -> None:
    seen = cache.PromptCache()
    assert seen.cached("m", _messages("a b", "c"), increment=1, minimum=0) == 0  # new
    assert seen.cached("m", _messages("a b", "c"), increment=1, minimum=0) == 5 + 4  # all but the priming
    assert seen.cached("m", _messages("a b", "c", "d e f"), increment=1, minimum=0) == 5 + 4
    assert seen.cached("m", _messages("a b", "x"), increment=1, minimum=0) == 5
    assert seen.cached("other", _messages("a b", "c"), increment=1, minimum=0) == 0  # per model
    assert seen.cached("m", _messages("x", "a b"), increment=1, minimum=0) == 0  # a prefix, not any part


def test_prompt_cache_rounds_down_to_increments_from_the_minimum() -> None:
    seen = cache.PromptCache()
    long = ["word " * 600, "more " * 600]  # 603 and 603 tokens
    assert seen.cached("m", _messages(*long), increment=128, minimum=1024) == 0
    assert seen.cached("m", _messages(*long, "next"), increment=128, minimum=1024) == 1152  # 1206 → 9 × 128
    assert seen.cached("m", _messages(long[0], "other"), increment=128, minimum=1024) == 0  # 603 < 1024
    assert seen.cached("m", _messages(long[0], "other"), increment=128, minimum=0) == 512


def test_prompt_cache_forgets_the_least_recently_used() -> None:
    seen = cache.PromptCache(size=2)
    seen.cached("m", _messages("a", "b", "c"), increment=1, minimum=0)  # "a" is forgotten at once
    seen.cached("m", _messages("x"), increment=1, minimum=0)  # "a b" too: "a b c" and "x" are kept
    assert seen.cached("m", _messages("x"), increment=1, minimum=0) == 4
    assert seen.cached("m", _messages("a", "b"), increment=1, minimum=0) == 0

"""The Responses API on chat-only backends: requests become chat completions and answers become
Responses objects and events — checked against the official openai SDK's own types."""

from __future__ import annotations

import json
from typing import Any, get_args

import orjson
import pytest
from aikeys_gateway.errors import GatewayError
from aikeys_gateway.surfaces.openai import translate
from aikeys_gateway.upstreams.sse import SSEFilter
from openai.types.responses import Response, ResponseStreamEvent

EVENT_TYPES = {
    cls.model_fields["type"].annotation.__args__[0]: cls for cls in get_args(get_args(ResponseStreamEvent)[0])
}
TOOL = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}


def test_a_conversation_with_tools_becomes_chat_messages() -> None:
    chat = translate.chat_request(
        {
            "model": "m",
            "instructions": "Be brief.",
            "input": [
                {"role": "developer", "content": "Use tools."},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "xyz"},
                {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "get_time", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
                {"type": "function_call_output", "call_id": "c2", "output": "noon"},
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "and this?"},
                        {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"},
                    ],
                },
            ],
            "tools": [TOOL],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "text": {
                "format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": True}
            },
            "reasoning": {"effort": "low"},
            "max_output_tokens": 64,
            "temperature": 0.2,
            "stream": True,
            "store": False,
            "include": ["reasoning.encrypted_content"],
        }
    )
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
                {"id": "c2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "noon"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "and this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
            ],
        },
    ]
    assert chat["tools"] == [{"type": "function", "function": {k: v for k, v in TOOL.items() if k != "type"}}]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": True},
    }
    assert (chat["reasoning_effort"], chat["max_tokens"], chat["temperature"], chat["stream"]) == (
        "low",
        64,
        0.2,
        True,
    )
    assert "store" not in chat and "include" not in chat


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools"),
        ({"input": "hi", "previous_response_id": "resp_1"}, "previous_response_id"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input"),
        ({"input": 42}, "input"),
    ],
)
def test_what_a_chat_backend_cannot_do_is_a_clear_400(body: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as refused:
        translate.chat_request({"model": "m", **body})
    assert refused.value.status == 400 and refused.value.param == param
    assert refused.value.message


def completion(**message: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": 12,
            "completion_tokens": 7,
            "total_tokens": 19,
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 2},
        },
    }


def test_a_chat_answer_is_a_valid_response_object() -> None:
    answer = completion(
        content="Sunny.",
        reasoning_content="Let me see.",
        tool_calls=[
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
        ],
    )
    response = Response.model_validate(translate.response_from_chat(answer, {"input": "hi"}, "ns:p/m"))
    assert response.status == "completed" and response.model == "ns:p/m"
    assert response.output_text == "Sunny."
    assert [item.type for item in response.output] == ["reasoning", "message", "function_call"]
    call = response.output[2]
    assert call.type == "function_call" and (call.call_id, call.name) == ("call_1", "get_weather")
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (12, 7)
    assert response.usage.input_tokens_details.cached_tokens == 4
    assert response.usage.output_tokens_details.reasoning_tokens == 2


def sse(obj: Any) -> bytes:
    return b"data: " + (obj if isinstance(obj, bytes) else orjson.dumps(obj)) + b"\n\n"


def chunk(finish: str | None = None, **delta: Any) -> dict[str, Any]:
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def events(raw: bytes) -> list[dict[str, Any]]:
    out = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        kind, data = block.split("\n", 1)
        event = json.loads(data.removeprefix("data: "))
        assert kind == f"event: {event['type']}"
        EVENT_TYPES[event["type"]].model_validate(event)  # every event as the SDK types it
        out.append(event)
    return out


@pytest.mark.parametrize("cut", [False, True])
def test_a_chat_stream_becomes_the_responses_event_sequence(cut: bool) -> None:
    reader = translate.ChatToResponses({"input": "hi", "max_output_tokens": 50}, "ns:p/m")
    filt = SSEFilter(reader)
    upstream = [
        chunk(role="assistant", content=""),
        chunk(reasoning_content="hmm"),
        chunk(content="Hel"),
        chunk(content="lo"),
        chunk(
            tool_calls=[
                {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}
            ]
        ),
        chunk(tool_calls=[{"index": 0, "function": {"arguments": '{"a":'}}]),
        chunk(tool_calls=[{"index": 0, "function": {"arguments": "1}"}}]),
        chunk("length" if cut else "tool_calls"),
        {"id": "c", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}},
    ]
    raw = b"".join(filt.feed(sse(c)) for c in upstream) + filt.feed(sse(b"[DONE]")) + filt.end()
    seen = events(raw)
    kinds = [e["type"] for e in seen]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == ("response.incomplete" if cut else "response.completed")
    assert [e["sequence_number"] for e in seen] == list(range(len(seen)))
    assert "".join(e["delta"] for e in seen if e["type"] == "response.output_text.delta") == "Hello"
    assert (
        "".join(e["delta"] for e in seen if e["type"] == "response.function_call_arguments.delta")
        == '{"a":1}'
    )
    final = Response.model_validate(seen[-1]["response"])
    assert final.output_text == "Hello"
    assert [i.type for i in final.output] == ["reasoning", "message", "function_call"]
    assert final.usage is not None and (final.usage.input_tokens, final.usage.output_tokens) == (5, 9)
    assert reader.usage is not None and reader.usage.output_tokens == 9  # metered as the chat stream said


def test_a_stream_that_ends_without_done_still_completes() -> None:
    filt = SSEFilter(translate.ChatToResponses({"input": "hi"}, "ns:p/m"))
    raw = filt.feed(sse(chunk(content="x"))) + filt.end()
    assert events(raw)[-1]["type"] == "response.completed"


def test_a_namespace_of_tools_becomes_chat_functions_and_comes_back_namespaced() -> None:
    agents = {
        "type": "namespace",
        "name": "multi_agent_v1",
        "description": "Sub-agents.",
        "tools": [{"type": "function", "name": "close_agent", "parameters": {"type": "object"}}],
    }
    request = {
        "model": "m",
        "tools": [agents, TOOL],
        "input": [
            {"role": "user", "content": "go"},
            {
                "type": "function_call",
                "call_id": "c0",
                "namespace": "multi_agent_v1",
                "name": "close_agent",
                "arguments": "{}",
            },
            {"type": "function_call_output", "call_id": "c0", "output": "closed"},
        ],
    }
    chat = translate.chat_request(request)
    assert [t["function"]["name"] for t in chat["tools"]] == ["multi_agent_v1__close_agent", "get_weather"]
    assert chat["messages"][1]["tool_calls"][0]["function"]["name"] == "multi_agent_v1__close_agent"
    answer = completion(
        content=None,
        tool_calls=[
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "multi_agent_v1__close_agent", "arguments": "{}"},
            }
        ],
    )
    [call] = translate.response_from_chat(answer, request, "ns:p/m")["output"]
    assert (call["namespace"], call["name"]) == ("multi_agent_v1", "close_agent")


def test_malformed_tool_calls_from_an_upstream_are_skipped_not_a_crash() -> None:
    """A chat-only upstream's odd tool_calls (not objects, a string function) never make the
    translation fail: the answer is already generated and charged."""
    answer = {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": "ok",
                    "tool_calls": ["x", {"id": 7, "function": "f"}, {"id": "c1", "function": {"name": "g"}}],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }
    out = translate.response_from_chat(answer, {"input": "hi"}, "ns:p/m")["output"]
    calls = [item for item in out if item["type"] == "function_call"]
    assert [(c["call_id"].startswith("call_"), c["name"], c["arguments"]) for c in calls] == [
        (True, "", ""),
        (False, "g", ""),
    ]
    assert calls[1]["call_id"] == "c1"
    tool_calls = {"tool_calls": "not a list"}
    answer["choices"][0]["message"] = {"role": "assistant", "content": "ok", **tool_calls}  # type: ignore[index]
    assert [
        item["type"] for item in translate.response_from_chat(answer, {"input": "hi"}, "ns:p/m")["output"]
    ] == ["message"]

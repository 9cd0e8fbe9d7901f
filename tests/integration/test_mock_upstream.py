"""The mock upstream satisfies the official `openai` SDK the way a real provider does."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any, Literal, cast

import openai
import pytest
from aikeys_dev.devstack.upstream import MockUpstreamProcess
from aikeys_dev.mockupstream import tokens
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam
from openai.types.shared import ReasoningEffort
from pydantic import BaseModel

pytestmark = pytest.mark.integration


@pytest.fixture
def client(mock_upstream: MockUpstreamProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=mock_upstream.url, api_key="sk-test", max_retries=0)


MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hello, world!"},
]
# 3 priming + (3 + 3 tokens "Be brief .") + (3 + 4 tokens "Hello , world !")
PROMPT_TOKENS = 16


def test_chat_completion(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="gpt-x", messages=MESSAGES)
    assert reply.object == "chat.completion"
    assert reply.model == "gpt-x"
    assert reply.id.startswith("chatcmpl-")
    choice = reply.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content == "".join(tokens.reply_words(16))
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (
        PROMPT_TOKENS,
        16,
        PROMPT_TOKENS + 16,
    )


def test_max_tokens_cuts_the_reply(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=5)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 5
    assert reply.choices[0].message.content == "Hello from the aikeys mock"


def test_stream_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="m",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(tokens.reply_words(16))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    # every chunk but the last carries "usage": null; the last has no choices and the usage
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 16
    assert chunks[-1].usage.prompt_tokens == PROMPT_TOKENS


def test_stream_without_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


def test_raw_sse_framing(mock_upstream: MockUpstreamProcess) -> None:
    body = json.dumps({"model": "m", "messages": MESSAGES, "stream": True, "max_tokens": 2}).encode()
    req = urllib.request.Request(  # noqa: S310 - loopback http
        mock_upstream.url + "/chat/completions",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req) as resp:  # noqa: S310
        assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        raw = resp.read().decode()
    events = raw.split("\n\n")
    assert events[-1] == ""  # the stream ends with a blank line after [DONE]
    assert events[-2] == "data: [DONE]"
    assert all(e.startswith("data: {") for e in events[:-2])
    assert len(events[:-2]) == 1 + 2 + 1  # role, two words, finish


def test_completions_and_stream(client: openai.OpenAI) -> None:
    done = client.completions.create(model="m", prompt="Say hi", max_tokens=3)
    assert done.object == "text_completion"
    assert done.choices[0].text == "Hello from the"
    assert done.usage is not None and (done.usage.prompt_tokens, done.usage.completion_tokens) == (2, 3)
    chunks = list(
        client.completions.create(
            model="m", prompt="Say hi", max_tokens=3, stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Hello from the"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


def test_embeddings_float_and_base64(client: openai.OpenAI) -> None:
    as_base64 = client.embeddings.create(model="emb", input=["one two", "three"])  # the SDK asks for base64
    as_floats = client.embeddings.create(model="emb", input=["one two", "three"], encoding_format="float")
    assert len(as_base64.data) == len(as_floats.data) == 2
    assert as_base64.data[0].embedding == as_floats.data[0].embedding
    assert len(as_floats.data[0].embedding) == 1536
    assert abs(sum(x * x for x in as_floats.data[0].embedding) - 1.0) < 1e-4
    assert as_floats.usage.prompt_tokens == 3
    small = client.embeddings.create(model="emb", input="x", dimensions=8, encoding_format="float")
    assert len(small.data[0].embedding) == 8


def test_models_list(client: openai.OpenAI, mock_upstream: MockUpstreamProcess) -> None:
    mock_upstream.configure(models=["a", "b"])
    assert [m.id for m in client.models.list()] == ["a", "b"]


def test_errors_are_openai_shaped(client: openai.OpenAI, mock_upstream: MockUpstreamProcess) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="m", messages=[])
    assert bad.value.body == {
        "message": "Missing required parameter: 'messages'.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "missing_required_parameter",
    }
    mock_upstream.configure(api_key="sk-right")
    with pytest.raises(openai.AuthenticationError) as denied:
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert isinstance(denied.value.body, dict) and denied.value.body["code"] == "invalid_api_key"
    assert "sk-test" not in str(denied.value.body)  # the given key is masked, as OpenAI does


def test_failure_injection_counts_down(client: openai.OpenAI, mock_upstream: MockUpstreamProcess) -> None:
    mock_upstream.configure(fail_status=429, fail_count=2)
    for _ in range(2):
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="m", messages=MESSAGES)
    assert client.chat.completions.create(model="m", messages=MESSAGES).choices


def test_usage_can_be_omitted(client: openai.OpenAI, mock_upstream: MockUpstreamProcess) -> None:
    mock_upstream.configure(usage=False)
    assert client.chat.completions.create(model="m", messages=MESSAGES).usage is None
    chunks = list(
        client.chat.completions.create(
            model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert all(c.usage is None for c in chunks)


def test_broken_stream_raises_in_the_client(
    client: openai.OpenAI, mock_upstream: MockUpstreamProcess
) -> None:
    mock_upstream.configure(break_after_chunks=3)
    received: list[str] = []

    def consume() -> None:
        for chunk in client.chat.completions.create(model="m", messages=MESSAGES, stream=True):
            received.append(chunk.choices[0].delta.content or "")

    with pytest.raises(openai.APIConnectionError):
        consume()
    assert "".join(received) == "Hello from"  # role chunk + 2 words arrived, then the cut


def test_request_log_records_headers_and_body(
    client: openai.OpenAI, mock_upstream: MockUpstreamProcess
) -> None:
    client.chat.completions.create(model="m", messages=MESSAGES, temperature=0.5)
    [logged] = mock_upstream.requests()
    assert logged["path"] == "/v1/chat/completions"
    assert logged["headers"]["Authorization"] == "Bearer sk-test"
    assert logged["body"]["temperature"] == 0.5


def test_azure_deployment_path(mock_upstream: MockUpstreamProcess) -> None:
    azure = openai.AzureOpenAI(
        azure_endpoint=f"http://127.0.0.1:{mock_upstream.port}",
        api_key="az-key",
        api_version="2024-10-21",
        max_retries=0,
    )
    reply = azure.chat.completions.create(model="my-deployment", messages=MESSAGES)
    assert reply.model == "my-deployment"
    [logged] = mock_upstream.requests()
    assert logged["path"] == "/openai/deployments/my-deployment/chat/completions"
    assert logged["query"] == {"api-version": "2024-10-21"}
    assert logged["headers"]["api-key"] == "az-key"


# --- behaviour switches for budget-enforcement tests ----------------------------------------------


def post_raw(mock: MockUpstreamProcess, path: str, body: dict[str, Any]) -> tuple[str, bytes]:
    """POST a JSON body; the response's Content-Type and raw bytes, as a client receives them."""
    req = urllib.request.Request(  # noqa: S310 - loopback http
        mock.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req) as resp:  # noqa: S310
        return resp.headers["Content-Type"], resp.read()


def parse_sse(raw: bytes) -> list[dict[str, str]]:
    """Dispatched events (`event`, `data`, `id`) as the WHATWG server-sent events spec reads them."""
    text = raw.decode("utf-8").removeprefix("\ufeff")
    lines = re.split(r"\r\n|\r|\n", text)[:-1]  # what follows the last line end is no line
    events: list[dict[str, str]] = []
    data: list[str] = []
    event_type = ""
    last_id = ""
    for line in lines:
        if not line:
            if data:
                events.append({"event": event_type or "message", "data": "\n".join(data), "id": last_id})
            data, event_type = [], ""
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon:
            value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event_type = value
        elif name == "id" and "\0" not in value:
            last_id = value
    return events


def sse_json(raw: bytes) -> list[Any]:
    """The JSON payloads of a stream, then "[DONE]"."""
    return [e["data"] if e["data"] == "[DONE]" else json.loads(e["data"]) for e in parse_sse(raw)]


def normalised(payloads: list[Any]) -> list[Any]:
    """Payloads without what differs between two requests (ids and timestamps)."""
    return [
        {k: v for k, v in p.items() if k not in ("id", "created")} if isinstance(p, dict) else p
        for p in payloads
    ]


def test_parse_sse_follows_the_spec() -> None:
    raw = b": c\r\nid: 7\r\ndata:a\rdata:  b\n\nevent: x\ndata\n\ndata: lost"
    assert parse_sse(raw) == [
        {"event": "message", "data": "a\n b", "id": "7"},
        {"event": "x", "data": "", "id": "7"},
    ]


def test_ignore_max_tokens(client: openai.OpenAI, mock_upstream: MockUpstreamProcess) -> None:
    mock_upstream.configure(ignore_max_tokens=True, reply_tokens=10)
    reply = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=3)
    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.content == "".join(tokens.reply_words(10))
    assert reply.usage is not None and reply.usage.completion_tokens == 10
    capped = client.chat.completions.create(model="m", messages=MESSAGES, max_completion_tokens=2)
    assert capped.usage is not None and capped.usage.completion_tokens == 10
    chunks = list(
        client.chat.completions.create(
            model="m", messages=MESSAGES, max_tokens=3, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert tokens.count_text(text) == 10
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 10
    done = client.completions.create(model="m", prompt="Say hi", max_tokens=1)
    assert done.choices[0].finish_reason == "stop"
    assert done.usage is not None and done.usage.completion_tokens == 10


@pytest.mark.parametrize(
    ("prompt", "prompts", "prompt_tokens"),
    [
        ("Say hi", 1, 2),
        (["Say hi", "Hello, world!", ""], 3, 2 + 4 + 0),
        ([101, 102, 103], 1, 3),
        ([[1, 2], [3], [4, 5, 6]], 3, 6),
    ],
    ids=["string", "strings", "token-ids", "token-id-lists"],
)
def test_completions_batch(
    client: openai.OpenAI,
    mock_upstream: MockUpstreamProcess,
    prompt: str | list[str] | list[int] | list[list[int]],
    prompts: int,
    prompt_tokens: int,
) -> None:
    mock_upstream.configure(reply_tokens=4)
    done = client.completions.create(model="m", prompt=prompt, n=2)
    assert [c.index for c in done.choices] == list(range(prompts * 2))
    assert all(c.text == "Hello from the aikeys" and c.finish_reason == "stop" for c in done.choices)
    assert done.usage is not None
    assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.total_tokens) == (
        prompt_tokens,
        prompts * 2 * 4,
        prompt_tokens + prompts * 2 * 4,
    )
    # best_of candidates are generated and billed, n of them returned
    best = client.completions.create(model="m", prompt=prompt, n=2, best_of=3, max_tokens=3)
    assert len(best.choices) == prompts * 2
    assert all(c.finish_reason == "length" for c in best.choices)
    assert best.usage is not None and best.usage.completion_tokens == prompts * 3 * 3
    stream = client.completions.create(
        model="m", prompt=prompt, n=2, stream=True, stream_options={"include_usage": True}
    )
    texts: dict[int, str] = {}
    finished: dict[int, str | None] = {}
    chunks = list(stream)
    for chunk in chunks[:-1]:
        [choice] = chunk.choices
        texts[choice.index] = texts.get(choice.index, "") + choice.text
        if choice.finish_reason:
            finished[choice.index] = choice.finish_reason
    assert texts == dict.fromkeys(range(prompts * 2), "Hello from the aikeys")
    assert finished == dict.fromkeys(range(prompts * 2), "stop")
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (
        prompt_tokens,
        prompts * 2 * 4,
    )


def test_completions_batch_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="best_of"):
        client.completions.create(model="m", prompt="x", n=3, best_of=2)
    with pytest.raises(openai.BadRequestError, match="best_of"):
        client.completions.create(model="m", prompt="x", best_of=2, stream=True)
    with pytest.raises(openai.BadRequestError, match="prompt"):
        client.completions.create(model="m", prompt=[])


def test_chat_n_choices(client: openai.OpenAI, mock_upstream: MockUpstreamProcess) -> None:
    mock_upstream.configure(reply_tokens=3)
    reply = client.chat.completions.create(model="m", messages=MESSAGES, n=3)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (PROMPT_TOKENS, 9)


FRAMING_CHECKS: dict[str, Callable[[bytes], bool]] = {
    "standard": lambda raw: (
        raw.startswith(b'data: {"id":') and raw.endswith(b"}\n\ndata: [DONE]\n\n") and b"\r" not in raw
    ),
    "nospace": lambda raw: (
        raw.startswith(b'data:{"id":') and raw.endswith(b"data:[DONE]\n\n") and b"data: " not in raw
    ),
    "crlf": lambda raw: (
        raw.startswith(b'data: {"id":')
        and raw.endswith(b"}\r\n\r\ndata: [DONE]\r\n\r\n")
        and b"\n" not in raw.replace(b"\r\n", b"")
    ),
    "multiline": lambda raw: (
        raw.startswith(b'data: {\ndata:   "id": "')
        and raw.endswith(b"data: }\n\ndata: [DONE]\n\n")
        and b'\ndata:   "usage": {\ndata:     "prompt_tokens": ' in raw
    ),
    "comments": lambda raw: (
        raw.startswith(b': keep-alive\n\nid: 1\ndata: {"id":')
        and raw.endswith(b"\n\n: keep-alive\n\nid: %d\ndata: [DONE]\n\n" % raw.count(b"data: "))
        and raw.count(b": keep-alive\n\n") == raw.count(b"data: ")
        and b"event:" not in raw
    ),
    "keepalive": lambda raw: (
        raw.startswith(b': keep-alive\n\ndata: {"id":')
        and raw.endswith(b"}\n\n: keep-alive\n\ndata: [DONE]\n\n")
        and raw.count(b": keep-alive\n\n") == raw.count(b"data: ")
        and b"id:" not in raw
    ),
    "spaced": lambda raw: (
        raw.startswith(b'data: {"id": "')
        and b'"usage": {"prompt_tokens": ' in raw
        and b'"finish_reason": null}' in raw
        and raw.endswith(b"}\n\ndata: [DONE]\n\n")
    ),
}


@pytest.mark.parametrize("framing", list(FRAMING_CHECKS))
def test_sse_framing(client: openai.OpenAI, mock_upstream: MockUpstreamProcess, framing: str) -> None:
    chat = {
        "model": "m",
        "messages": MESSAGES,
        "stream": True,
        "max_tokens": 3,
        "stream_options": {"include_usage": True},
    }
    completion = {
        "model": "m",
        "prompt": ["a", "b"],
        "stream": True,
        "max_tokens": 2,
        "stream_options": {"include_usage": True},
    }
    expected = [
        sse_json(post_raw(mock_upstream, p, b)[1])
        for p, b in (("/chat/completions", chat), ("/completions", completion))
    ]
    mock_upstream.configure(sse_framing=framing)
    for (path, body), standard in zip(
        (("/chat/completions", chat), ("/completions", completion)), expected, strict=True
    ):
        content_type, raw = post_raw(mock_upstream, path, body)
        assert content_type == "text/event-stream; charset=utf-8"
        assert FRAMING_CHECKS[framing](raw), raw.decode()
        events = parse_sse(raw)
        assert all(e["event"] == "message" for e in events)
        assert normalised(sse_json(raw)) == normalised(standard)  # the same data in every framing
        if framing == "comments":
            assert [e["id"] for e in events] == [str(i + 1) for i in range(len(events))]
    if framing == "comments":
        # the SDK's decoder turns a comment-only event after an `id:` into an empty event and
        # fails to parse it (openai/openai-python#2722, #3833); "keepalive" is its readable twin
        return
    # the official SDK reads the framing
    chunks = list(
        client.chat.completions.create(
            model="m", messages=MESSAGES, max_tokens=3, stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from the"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


def test_sse_framing_rejects_unknown_values(mock_upstream: MockUpstreamProcess) -> None:
    with pytest.raises(urllib.error.HTTPError) as bad:
        mock_upstream.configure(sse_framing="bogus")
    assert bad.value.code == 400
    with pytest.raises(urllib.error.HTTPError):
        mock_upstream.configure(reply_kind="bogus")
    assert mock_upstream.configure()["sse_framing"] == "standard"


def test_json_spacing(client: openai.OpenAI, mock_upstream: MockUpstreamProcess) -> None:
    compact = post_raw(mock_upstream, "/chat/completions", {"model": "m", "messages": MESSAGES})[1]
    assert b'"usage":{"prompt_tokens":16,' in compact
    mock_upstream.configure(json_spacing=True)
    content_type, raw = post_raw(mock_upstream, "/chat/completions", {"model": "m", "messages": MESSAGES})
    assert content_type == "application/json"
    assert b'"usage": {"prompt_tokens": 16, "completion_tokens": 16,' in raw
    assert raw.startswith(b'{"id": "chatcmpl-')
    assert b'"object": "chat.completion"' in raw
    assert normalised([json.loads(raw)]) == normalised([json.loads(compact)])
    with pytest.raises(urllib.error.HTTPError) as bad:
        post_raw(mock_upstream, "/chat/completions", {"model": "m", "messages": []})
    assert bad.value.read().startswith(b'{"error": {"message": "Missing required parameter')
    reply = client.chat.completions.create(model="m", messages=MESSAGES)
    assert reply.usage is not None and reply.usage.total_tokens == PROMPT_TOKENS + 16


def _all_strings(obj: Any) -> bool:
    if isinstance(obj, dict):
        return all(_all_strings(v) for v in obj.values())
    return isinstance(obj, str) and obj.isdigit()


def test_usage_as_strings(mock_upstream: MockUpstreamProcess) -> None:
    mock_upstream.configure(usage_as_strings=True)
    chat = {"model": "m", "messages": MESSAGES}
    usage = json.loads(post_raw(mock_upstream, "/chat/completions", chat)[1])["usage"]
    assert usage["prompt_tokens"] == "16" and usage["total_tokens"] == "32"
    assert usage["completion_tokens_details"]["reasoning_tokens"] == "0"
    assert _all_strings(usage)
    _, raw = post_raw(
        mock_upstream,
        "/chat/completions",
        {**chat, "stream": True, "stream_options": {"include_usage": True}},
    )
    assert b'"usage":{"prompt_tokens":"16","completion_tokens":"16","total_tokens":"32",' in raw
    assert b'"usage":null' in raw  # the null usage of ordinary chunks stays null
    done = json.loads(post_raw(mock_upstream, "/completions", {"model": "m", "prompt": "Say hi"})[1])
    assert done["usage"] == {"prompt_tokens": "2", "completion_tokens": "16", "total_tokens": "18"}
    emb = json.loads(post_raw(mock_upstream, "/embeddings", {"model": "e", "input": "one two"})[1])
    assert emb["usage"] == {"prompt_tokens": "2", "total_tokens": "2"}


def test_usage_overrides(client: openai.OpenAI, mock_upstream: MockUpstreamProcess) -> None:
    mock_upstream.configure(usage_prompt_tokens=5, usage_completion_tokens=1000)
    reply = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=4)
    assert reply.choices[0].message.content == "Hello from the aikeys"  # the true reply ...
    assert reply.usage is not None  # ... with made-up usage
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (
        5,
        1000,
        1005,
    )
    chunks = list(
        client.chat.completions.create(
            model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (5, 1000)
    mock_upstream.configure(usage_prompt_tokens=None, usage_completion_tokens=0)  # under-reporting
    done = client.completions.create(model="m", prompt="Say hi")
    assert done.usage is not None and (done.usage.prompt_tokens, done.usage.completion_tokens) == (2, 0)


WEATHER_TOOL: list[ChatCompletionToolParam] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
        },
    }
]


def test_tool_argument_pieces() -> None:
    for n in range(30):
        pieces = tokens.tool_argument_pieces(n)
        assert len(pieces) == n
        assert tokens.count_text("".join(pieces)) == n
        for k in range(n):
            assert tokens.count_text("".join(pieces[:k])) == k
        if n >= 8:
            assert json.loads("".join(pieces)) == {"location": "".join(tokens.reply_words(n - 8))}


def test_tool_call_reply(client: openai.OpenAI, mock_upstream: MockUpstreamProcess) -> None:
    mock_upstream.configure(reply_kind="tool_call", reply_tokens=12)
    reply = client.chat.completions.create(model="m", messages=MESSAGES, tools=WEATHER_TOOL)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "Hello from the aikeys"}
    assert tokens.count_text(call.function.arguments) == 12
    assert reply.usage is not None and reply.usage.completion_tokens == 12
    # streamed, as OpenAI does it: the call's header first, then argument fragments
    with client.chat.completions.stream(
        model="m", messages=MESSAGES, tools=WEATHER_TOOL, stream_options={"include_usage": True}
    ) as stream:
        final = stream.get_final_completion()
    [streamed] = final.choices[0].message.tool_calls or []
    assert streamed.function.name == "get_weather"
    assert streamed.function.arguments == call.function.arguments
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage is not None and final.usage.completion_tokens == 12
    _, raw = post_raw(
        mock_upstream,
        "/chat/completions",
        {"model": "m", "messages": MESSAGES, "stream": True, "max_tokens": 3},
    )
    events = sse_json(raw)
    deltas = [e["choices"][0]["delta"] for e in events[:-1]]
    call_id = deltas[0]["tool_calls"][0]["id"]
    assert call_id.startswith("call_")
    assert deltas[0] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "index": 0,
                "id": call_id,
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ],
        "refusal": None,
    }
    assert deltas[1:] == [
        {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]} for piece in ("{", '"', "location")
    ] + [{}]
    assert events[-2]["choices"][0]["finish_reason"] == "length"  # cut by max_tokens, like OpenAI


def test_reasoning_reply(client: openai.OpenAI, mock_upstream: MockUpstreamProcess) -> None:
    mock_upstream.configure(reply_kind="reasoning", reply_tokens=5)
    chat = {"model": "m", "messages": MESSAGES}
    reply = json.loads(post_raw(mock_upstream, "/chat/completions", chat)[1])
    message = reply["choices"][0]["message"]
    assert message["reasoning_content"] == "Let me think about this"
    assert message["content"] == "Hello from the aikeys mock"
    assert reply["choices"][0]["finish_reason"] == "stop"
    assert reply["usage"]["completion_tokens"] == 10
    assert reply["usage"]["completion_tokens_details"]["reasoning_tokens"] == 5
    # the SDK keeps the extra field
    sdk = client.chat.completions.create(model="m", messages=MESSAGES)
    assert (sdk.choices[0].message.model_extra or {})["reasoning_content"] == "Let me think about this"
    # streamed: reasoning deltas, then content deltas
    chunks = list(
        client.chat.completions.create(
            model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].role == "assistant"
    reasoning = [(d.model_extra or {}).get("reasoning_content") for d in deltas[1:6]]
    assert reasoning == tokens.reasoning_words(5)
    assert [d.content for d in deltas[6:11]] == tokens.reply_words(5)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 10
    details = chunks[-1].usage.completion_tokens_details
    assert details is not None and details.reasoning_tokens == 5
    # max_tokens caps reasoning + answer together
    cut = json.loads(post_raw(mock_upstream, "/chat/completions", {**chat, "max_tokens": 7})[1])
    assert cut["choices"][0]["message"]["content"] == "Hello from"
    assert cut["choices"][0]["finish_reason"] == "length"
    assert cut["usage"]["completion_tokens"] == 7
    thinking = json.loads(post_raw(mock_upstream, "/chat/completions", {**chat, "max_tokens": 3})[1])
    assert thinking["choices"][0]["message"]["reasoning_content"] == "Let me think"
    assert thinking["choices"][0]["message"]["content"] is None
    assert thinking["usage"]["completion_tokens_details"]["reasoning_tokens"] == 3
    mock_upstream.configure(ignore_max_tokens=True)
    uncapped = json.loads(post_raw(mock_upstream, "/chat/completions", {**chat, "max_tokens": 3})[1])
    assert uncapped["usage"]["completion_tokens"] == 10


def test_stall_before_usage(client: openai.OpenAI, mock_upstream: MockUpstreamProcess) -> None:
    mock_upstream.configure(stall_before_usage_ms=800, reply_tokens=3)
    arrivals: list[tuple[float, bool]] = []
    for chunk in client.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    ):
        arrivals.append((time.monotonic(), bool(chunk.choices and chunk.choices[0].delta.content)))
    last_content = max(i for i, (_, content) in enumerate(arrivals) if content)
    assert len(arrivals) == 1 + 3 + 1 + 1  # role, words, finish, usage
    assert arrivals[last_content + 1][0] - arrivals[last_content][0] >= 0.7
    # a client that leaves during the stall: the mock carries on and logs both requests
    stream = client.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    received = [next(stream) for _ in range(4)]
    stream.close()
    assert "".join(c.choices[0].delta.content or "" for c in received) == "Hello from the"
    time.sleep(1.0)
    mock_upstream.configure(stall_before_usage_ms=0)
    assert client.chat.completions.create(model="m", messages=MESSAGES).choices
    assert len(mock_upstream.requests()) == 3


# --- the Responses API ----------------------------------------------------------------------------

REPLY = "".join(tokens.reply_words(16))
WEATHER_FN: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather at a place.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
        "additionalProperties": False,
    },
    "strict": True,
}
TIME_FN: dict[str, Any] = {
    "type": "function",
    "name": "get_time",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
}
TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    *["response.output_text.delta"] * 16,
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def sse_events(raw: bytes) -> list[dict[str, Any]]:
    """The JSON payloads of a Responses stream, each checked against its `event:` type."""
    events = parse_sse(raw)
    payloads = [json.loads(e["data"]) for e in events]
    assert [e["event"] for e in events] == [p["type"] for p in payloads]
    return payloads


def comparable(payloads: list[Any]) -> list[Any]:
    """Payloads without what differs between two requests (ids, times, obfuscation)."""
    if isinstance(payloads, dict):
        return {
            k: comparable(v)
            for k, v in payloads.items()
            if k not in ("id", "item_id", "call_id", "created_at", "completed_at", "obfuscation")
        }
    if isinstance(payloads, list):
        return [comparable(p) for p in payloads]
    return payloads


def test_responses_create(client: openai.OpenAI, mock_upstream: MockUpstreamProcess) -> None:
    reply = client.responses.create(model="gpt-x", input="Hello, world!", instructions="Be brief.")
    assert reply.object == "response" and reply.id.startswith("resp_") and len(reply.id) == 55
    assert reply.status == "completed" and reply.model == "gpt-x"
    assert reply.output_text == REPLY
    [message] = reply.output
    assert message.type == "message" and message.id.startswith("msg_")
    assert message.status == "completed" and message.role == "assistant"
    assert message.content[0].type == "output_text" and message.content[0].annotations == []
    assert reply.usage is not None
    assert (reply.usage.input_tokens, reply.usage.output_tokens, reply.usage.total_tokens) == (16, 16, 32)
    assert reply.usage.input_tokens_details.cached_tokens == 0
    assert reply.usage.output_tokens_details.reasoning_tokens == 0
    # the request's settings are echoed as OpenAI echoes them
    assert reply.instructions == "Be brief."
    assert (reply.tools, reply.tool_choice, reply.parallel_tool_calls) == ([], "auto", True)
    assert (reply.temperature, reply.top_p, reply.truncation, reply.metadata) == (1.0, 1.0, "disabled", {})
    assert reply.text is not None and reply.text.format is not None and reply.text.format.type == "text"
    assert reply.error is None and reply.incomplete_details is None and reply.previous_response_id is None
    assert reply.completed_at is not None and reply.completed_at >= reply.created_at
    _, raw = post_raw(mock_upstream, "/responses", {"model": "m", "input": "Hi", "store": False})
    assert raw.startswith(b'{"id":"resp_') and b'"object":"response","created_at":' in raw
    assert b'"content":[{"type":"output_text","annotations":[],"logprobs":[],"text":"Hello from' in raw
    body = json.loads(raw)
    assert body["store"] is False and body["reasoning"] == {"effort": None, "summary": None}
    assert body["usage"] == {
        "input_tokens": 3 + 3 + 1,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 16,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 7 + 16,
    }
    [logged] = [r for r in mock_upstream.requests() if r["body"] and r["body"].get("store") is False]
    assert logged["path"] == "/v1/responses" and logged["method"] == "POST"


def test_responses_stream_events(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="m", input="Hello, world!", instructions="x", stream=True))
    assert [e.type for e in events] == TEXT_EVENTS
    assert [e.sequence_number for e in events] == list(range(len(TEXT_EVENTS)))
    created, in_progress, added, part = events[:4]
    assert created.type == "response.created" and in_progress.type == "response.in_progress"
    assert created.response.status == "in_progress" and created.response.output == []
    assert created.response.usage is None
    assert added.type == "response.output_item.added" and added.item.type == "message"
    assert added.item.status == "in_progress" and added.output_index == 0
    assert part.type == "response.content_part.added" and part.part.type == "output_text"
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert [d.delta for d in deltas] == tokens.reply_words(16)
    assert {(d.item_id, d.output_index, d.content_index) for d in deltas} == {(added.item.id, 0, 0)}
    assert all(d.logprobs == [] for d in deltas)
    done = events[-1]
    assert done.type == "response.completed" and done.response.id == created.response.id
    assert done.response.output_text == REPLY and done.response.status == "completed"
    assert done.response.usage is not None
    assert (done.response.usage.input_tokens, done.response.usage.output_tokens) == (3 + 3 + 4 + 3 + 1, 16)
    # the SDK's stream helper assembles the same response
    with client.responses.stream(model="m", input="Hello, world!") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == final.output_text == REPLY


def test_responses_raw_sse(mock_upstream: MockUpstreamProcess) -> None:
    body = {"model": "m", "input": "Hi", "stream": True}
    content_type, raw = post_raw(mock_upstream, "/responses", body)
    assert content_type == "text/event-stream; charset=utf-8"
    frames = raw.split(b"\n\n")
    assert frames[-1] == b"" and b"[DONE]" not in raw  # no [DONE] line in Responses streams
    for frame in frames[:-1]:
        event, data = frame.split(b"\n")
        name = event.removeprefix(b"event: ")
        assert data.startswith(b'data: {"type":"' + name + b'",')
    assert frames[0].startswith(b'event: response.created\ndata: {"type":"response.created","response":{')
    assert frames[-2].startswith(b'event: response.completed\ndata: {"type":"response.completed",')
    assert frames[-2].endswith(b'"sequence_number":%d}' % (len(frames) - 2))
    payloads = sse_events(raw)
    delta = payloads[4]
    assert list(delta) == [
        "type",
        "content_index",
        "delta",
        "item_id",
        "logprobs",
        "obfuscation",
        "output_index",
        "sequence_number",
    ]
    assert all(len(p["delta"] + p["obfuscation"]) % 16 == 0 for p in payloads if "delta" in p)
    _, plain = post_raw(
        mock_upstream, "/responses", {**body, "stream_options": {"include_obfuscation": False}}
    )
    assert b"obfuscation" not in plain
    assert comparable(sse_events(plain)) == comparable(payloads)


@pytest.mark.parametrize("framing", list(FRAMING_CHECKS))
def test_responses_sse_framing(
    client: openai.OpenAI, mock_upstream: MockUpstreamProcess, framing: str
) -> None:
    body = {"model": "m", "input": "Hi", "stream": True, "max_output_tokens": 16}
    standard = sse_events(post_raw(mock_upstream, "/responses", body)[1])
    mock_upstream.configure(sse_framing=framing)
    raw = post_raw(mock_upstream, "/responses", body)[1]
    assert comparable(sse_events(raw)) == comparable(standard)
    event_line = {
        "standard": b"event: response.created\ndata: {",
        "nospace": b"event:response.created\ndata:{",
        "crlf": b"event: response.created\r\ndata: {",
        "multiline": b"event: response.created\ndata: {\ndata:   ",
        "comments": b": keep-alive\n\nid: 1\nevent: response.created\ndata: {",
        "keepalive": b": keep-alive\n\nevent: response.created\ndata: {",
        "spaced": b'event: response.created\ndata: {"type": "response.created", "response": {',
    }[framing]
    assert raw.startswith(event_line)
    if framing == "crlf":
        assert b"\n" not in raw.replace(b"\r\n", b"")
    if framing != "comments":  # see test_sse_framing
        events = list(client.responses.create(model="m", input="Hi", stream=True))
        assert [e.type for e in events] == TEXT_EVENTS


def test_responses_max_output_tokens(client: openai.OpenAI, mock_upstream: MockUpstreamProcess) -> None:
    cut = client.responses.create(model="m", input="Hi", max_output_tokens=16, reasoning={"effort": "low"})
    assert cut.status == "incomplete"
    assert cut.incomplete_details is not None and cut.incomplete_details.reason == "max_output_tokens"
    assert cut.completed_at is None and cut.max_output_tokens == 16
    reasoning, message = cut.output
    assert reasoning.type == "reasoning" and message.type == "message"
    assert message.status == "incomplete" and cut.output_text == "".join(tokens.reply_words(8))
    assert cut.usage is not None and cut.usage.output_tokens == 16
    assert cut.usage.output_tokens_details.reasoning_tokens == 8
    events = list(
        client.responses.create(
            model="m", input="Hi", max_output_tokens=16, reasoning={"effort": "low"}, stream=True
        )
    )
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.usage is not None and events[-1].response.usage.output_tokens == 16
    assert [e.type for e in events].count("response.output_text.delta") == 8
    # reasoning can take the whole budget: no message at all
    thought = client.responses.create(
        model="m", input="Hi", max_output_tokens=16, reasoning={"effort": "high"}
    )
    assert thought.status == "incomplete" and [o.type for o in thought.output] == ["reasoning"]
    assert thought.usage is not None and thought.usage.output_tokens_details.reasoning_tokens == 16
    with pytest.raises(openai.BadRequestError) as small:
        client.responses.create(model="m", input="Hi", max_output_tokens=15)
    assert isinstance(small.value.body, dict) and small.value.body["code"] == "integer_below_min_value"
    assert small.value.body["param"] == "max_output_tokens"
    mock_upstream.configure(ignore_max_tokens=True)
    uncapped = client.responses.create(
        model="m", input="Hi", max_output_tokens=16, reasoning={"effort": "low"}
    )
    assert uncapped.status == "completed" and uncapped.usage is not None
    assert uncapped.usage.output_tokens == 24


class Weather(BaseModel):
    city: str
    celsius: float
    sunny: bool
    hours: list[int]
    kind: Literal["rain", "sun"]


def test_responses_parse(client: openai.OpenAI) -> None:
    parsed = client.responses.parse(model="m", input="Weather as JSON, please.", text_format=Weather)
    assert parsed.output_parsed == Weather(city="mock", celsius=1.5, sunny=True, hours=[1], kind="rain")
    assert parsed.usage is not None and parsed.usage.output_tokens == tokens.count_text(parsed.output_text)
    assert parsed.text is not None and parsed.text.format is not None
    assert parsed.text.format.type == "json_schema"
    with client.responses.stream(model="m", input="x", text_format=Weather) as stream:
        final = stream.get_final_response()
    assert final.output_parsed == parsed.output_parsed
    as_object = client.responses.create(
        model="m", input="Answer in JSON.", text={"format": {"type": "json_object"}}
    )
    assert json.loads(as_object.output_text) == {"answer": REPLY}
    with pytest.raises(openai.BadRequestError, match="json"):
        client.responses.create(
            model="m", input="No such word here.", text={"format": {"type": "json_object"}}
        )


def test_responses_are_stored(client: openai.OpenAI, mock_upstream: MockUpstreamProcess) -> None:
    items: list[Any] = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "input_text", "text": "Hello"}]},
    ]
    created = client.responses.create(model="m", input=items, metadata={"k": "v"})
    assert (created.model_extra or {})["store"] is True and created.metadata == {"k": "v"}
    fetched = client.responses.retrieve(created.id)
    assert fetched.model_dump() == created.model_dump()
    listed = client.responses.input_items.list(created.id)
    assert [(i.type, getattr(i, "role", None)) for i in listed.data] == [
        ("message", "user"),
        ("message", "developer"),
    ]  # newest first, as OpenAI lists them
    first = listed.data[1]
    assert first.type == "message" and first.content[0].type == "input_text"
    assert all(i.id and i.id.startswith("msg_") for i in listed.data)
    ascending = client.responses.input_items.list(created.id, order="asc", limit=1)
    assert [i.id for i in ascending.data] == [first.id] and ascending.has_more
    client.responses.delete(created.id)  # the SDK returns nothing; the wire object is checked below
    with pytest.raises(openai.NotFoundError) as gone:
        client.responses.retrieve(created.id)
    assert isinstance(gone.value.body, dict)
    assert gone.value.body["message"] == f"Response with id '{created.id}' not found."
    other = client.responses.create(model="m", input="Hi")
    req = urllib.request.Request(f"{mock_upstream.url}/responses/{other.id}", method="DELETE")  # noqa: S310
    with urllib.request.urlopen(req) as resp:  # noqa: S310
        assert json.loads(resp.read()) == {"id": other.id, "object": "response.deleted", "deleted": True}
    unstored = client.responses.create(model="m", input="Hi", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)
    paths = [(r["method"], r["path"]) for r in mock_upstream.requests()]
    assert ("GET", f"/v1/responses/{created.id}/input_items") in paths
    assert ("DELETE", f"/v1/responses/{other.id}") in paths


def test_previous_response_id(client: openai.OpenAI) -> None:
    first = client.responses.create(model="m", input="Hello, world!")  # 3 + 3 + 4 in
    second = client.responses.create(model="m", input="Again", previous_response_id=first.id)
    assert second.previous_response_id == first.id
    # the earlier turn is context: its input, its answer (16 tokens), then the new input
    assert second.usage is not None
    assert second.usage.input_tokens == 3 + (3 + 4) + (3 + 16) + (3 + 1)
    third = client.responses.create(model="m", input="More", previous_response_id=second.id)
    assert third.usage is not None
    assert third.usage.input_tokens == second.usage.input_tokens + (3 + 16) + (3 + 1)
    with pytest.raises(openai.BadRequestError) as missing:
        client.responses.create(model="m", input="x", previous_response_id="resp_nope")
    assert missing.value.body == {
        "message": "Previous response with id 'resp_nope' not found.",
        "type": "invalid_request_error",
        "param": "previous_response_id",
        "code": "previous_response_not_found",
    }
    unstored = client.responses.create(model="m", input="x", store=False)
    with pytest.raises(openai.BadRequestError, match="not found"):
        client.responses.create(model="m", input="x", previous_response_id=unstored.id)


def test_responses_tool_calls(client: openai.OpenAI) -> None:
    tools: Any = [WEATHER_FN, TIME_FN]
    called = client.responses.create(model="m", input="What's the weather in Paris?", tools=tools)
    [call] = called.output
    assert call.type == "function_call" and call.name == "get_weather" and call.status == "completed"
    assert call.call_id.startswith("call_") and call.id is not None and call.id.startswith("fc_")
    assert json.loads(call.arguments) == {"city": "mock", "days": 1}
    assert called.usage is not None and called.usage.output_tokens == tokens.count_text(call.arguments)
    assert called.tools[0].type == "function" and called.tools[0].name == "get_weather"
    # no trigger word, tool_choice "none": an answer in words
    assert client.responses.create(model="m", input="Hi", tools=tools).output_text == REPLY
    none = client.responses.create(model="m", input="weather?", tools=tools, tool_choice="none")
    assert none.output_text == REPLY
    forced = client.responses.create(
        model="m", input="Hi", tools=tools, tool_choice={"type": "function", "name": "get_time"}
    )
    assert [(o.type, getattr(o, "name", None)) for o in forced.output] == [("function_call", "get_time")]
    required = client.responses.create(model="m", input="Hi", tools=tools, tool_choice="required")
    assert [getattr(o, "name", None) for o in required.output] == ["get_weather"]
    both = client.responses.create(model="m", input="Use both tools in parallel.", tools=tools)
    assert [getattr(o, "name", None) for o in both.output] == ["get_weather", "get_time"]
    assert json.loads(getattr(both.output[1], "arguments", "")) == {"zone": "mock"}
    one = client.responses.create(
        model="m", input="Use both tools in parallel.", tools=tools, parallel_tool_calls=False
    )
    assert len(one.output) == 1
    with pytest.raises(openai.BadRequestError, match="tool_choice"):
        client.responses.create(
            model="m", input="x", tools=tools, tool_choice={"type": "function", "name": "f"}
        )
    # streamed: each call's header, its argument fragments, done
    events = list(client.responses.create(model="m", input="tools, in parallel", tools=tools, stream=True))
    kinds = [e.type for e in events]
    first_args = tokens.count_text(json.dumps({"city": "mock", "days": 1}))
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        *["response.function_call_arguments.delta"] * first_args,
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added",
        *["response.function_call_arguments.delta"] * tokens.count_text('{"zone":"mock"}'),
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    with client.responses.stream(model="m", input="weather in parallel", tools=tools) as stream:
        final = stream.get_final_response()
    assert [json.loads(getattr(o, "arguments", "")) for o in final.output] == [
        {"city": "mock", "days": 1},
        {"zone": "mock"},
    ]
    # the results go back: the answer mentions them
    answer = client.responses.create(
        model="m",
        previous_response_id=called.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "22 C and sunny"}],
        tools=tools,
    )
    assert answer.output_text == "The tool returned: 22 C and sunny"
    assert answer.usage is not None and answer.usage.output_tokens == tokens.count_text(answer.output_text)
    stateless = client.responses.create(
        model="m",
        input=[
            {"role": "user", "content": "What's the weather?"},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "rain"},
        ],
        tools=tools,
    )
    assert stateless.output_text == "The tool returned: rain"


def test_responses_reasoning(client: openai.OpenAI) -> None:
    efforts: list[tuple[ReasoningEffort, int]] = [("low", 8), ("medium", 16), ("high", 32)]
    for effort, thought in efforts:
        reply = client.responses.create(model="o-m", input="Hi", reasoning={"effort": effort})
        reasoning, message = reply.output
        assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_") and reasoning.summary == []
        assert reasoning.encrypted_content is None
        assert message.type == "message" and reply.output_text == REPLY
        assert reply.usage is not None and reply.usage.output_tokens_details.reasoning_tokens == thought
        assert reply.usage.output_tokens == 16 + thought
        assert reply.reasoning is not None and reply.reasoning.effort == effort
    encrypted = client.responses.create(
        model="o-m", input="Hi", reasoning={"effort": "low"}, include=["reasoning.encrypted_content"]
    )
    assert encrypted.output[0].type == "reasoning"
    assert isinstance(encrypted.output[0].encrypted_content, str) and encrypted.output[0].encrypted_content
    events = list(
        client.responses.create(
            model="o-m", input="Hi", reasoning={"effort": "low", "summary": "auto"}, stream=True
        )
    )
    kinds = [e.type for e in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[3:14] == [
        "response.reasoning_summary_part.added",
        *["response.reasoning_summary_text.delta"] * 8,
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
    ]
    final = events[-1]
    assert final.type == "response.completed"
    summary = final.response.output[0]
    assert summary.type == "reasoning"
    assert [s.text for s in summary.summary] == ["".join(tokens.reasoning_words(8))]
    assert (
        final.response.usage is not None and final.response.usage.output_tokens_details.reasoning_tokens == 8
    )


def test_responses_usage_switches(client: openai.OpenAI, mock_upstream: MockUpstreamProcess) -> None:
    body = {"model": "m", "input": "Hi"}
    mock_upstream.configure(usage=False)
    assert b'"usage"' not in post_raw(mock_upstream, "/responses", body)[1]
    assert client.responses.create(model="m", input="Hi").usage is None
    streamed = sse_events(post_raw(mock_upstream, "/responses", {**body, "stream": True})[1])
    assert streamed[0]["response"]["usage"] is None and "usage" not in streamed[-1]["response"]
    mock_upstream.configure(usage=True, usage_as_strings=True, usage_prompt_tokens=5, json_spacing=True)
    raw = post_raw(mock_upstream, "/responses", body)[1]
    assert raw.startswith(b'{"id": "resp_')
    assert json.loads(raw)["usage"] == {
        "input_tokens": "5",
        "input_tokens_details": {"cached_tokens": "0"},
        "output_tokens": "16",
        "output_tokens_details": {"reasoning_tokens": "0"},
        "total_tokens": "21",
    }
    mock_upstream.configure(usage_as_strings=False, usage_completion_tokens=1000)
    final = sse_events(post_raw(mock_upstream, "/responses", {**body, "stream": True})[1])[-1]
    assert final["response"]["usage"]["output_tokens"] == 1000
    assert final["response"]["usage"]["total_tokens"] == 1005


def test_responses_background_and_cancel(client: openai.OpenAI) -> None:
    queued = client.responses.create(model="m", input="Hi", background=True)
    assert queued.status == "queued" and queued.output == [] and queued.usage is None
    done = client.responses.retrieve(queued.id)
    assert done.status == "completed" and done.output_text == REPLY
    assert client.responses.cancel(queued.id).status == "completed"  # too late: unchanged
    cancelled = client.responses.cancel(client.responses.create(model="m", input="Hi", background=True).id)
    assert cancelled.status == "cancelled" and cancelled.output == []
    with pytest.raises(openai.BadRequestError, match="background"):
        client.responses.cancel(client.responses.create(model="m", input="Hi").id)


def test_responses_errors_and_breaks(client: openai.OpenAI, mock_upstream: MockUpstreamProcess) -> None:
    with pytest.raises(openai.BadRequestError) as missing:
        client.responses.create(model="m")
    assert isinstance(missing.value.body, dict) and missing.value.body["param"] == "input"
    with pytest.raises(urllib.error.HTTPError) as bad:
        post_raw(mock_upstream, "/responses", {"model": "m", "input": {"x": 1}})
    assert json.loads(bad.value.read())["error"] == {
        "message": "Invalid type for 'input': expected one of a string or array of input items, but got "
        "an object instead.",
        "type": "invalid_request_error",
        "param": "input",
        "code": "invalid_type",
    }
    mock_upstream.configure(fail_status=429, fail_count=1)
    with pytest.raises(openai.RateLimitError):
        client.responses.create(model="m", input="Hi")
    mock_upstream.configure(break_after_chunks=6)  # created, in_progress, added, part, 2 deltas
    received: list[str] = []

    def consume() -> None:
        for event in client.responses.create(model="m", input="Hi", stream=True):
            received.append(event.type)

    with pytest.raises(openai.APIConnectionError):
        consume()
    assert received == TEXT_EVENTS[:6]


def test_azure_responses(mock_upstream: MockUpstreamProcess) -> None:
    azure = openai.AzureOpenAI(
        azure_endpoint=mock_upstream.root, api_key="az-key", api_version="2025-04-01-preview", max_retries=0
    )
    reply = azure.responses.create(model="my-deployment", input="Hi")
    assert reply.model == "my-deployment" and reply.output_text == REPLY
    assert azure.responses.retrieve(reply.id).id == reply.id
    v1 = openai.OpenAI(base_url=f"{mock_upstream.root}/openai/v1", api_key="az-key", max_retries=0)
    assert v1.responses.create(model="dep", input="Hi").output_text == REPLY
    req = urllib.request.Request(  # noqa: S310 - loopback http
        f"{mock_upstream.root}/openai/deployments/dep-2/responses?api-version=preview",
        data=b'{"input": "Hi"}',
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req) as resp:  # noqa: S310
        assert json.loads(resp.read())["model"] == "dep-2"
    paths = [r["path"] for r in mock_upstream.requests()]
    assert paths[:2] == ["/openai/responses", f"/openai/responses/{reply.id}"]
    assert "/openai/v1/responses" in paths and "/openai/deployments/dep-2/responses" in paths


# --- chat: tool calls, structured output, reasoning tokens from the request -----------------------

CHAT_TOOLS: list[ChatCompletionToolParam] = [  # the same functions, as chat declares them
    cast(
        ChatCompletionToolParam,
        {"type": "function", "function": {k: v for k, v in fn.items() if k != "type"}},
    )
    for fn in (WEATHER_FN, TIME_FN)
]
ASK_WEATHER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What's the weather in Paris?"}]
ASK_BOTH: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Call both tools in parallel."}]
WEATHER_ARGS = '{"city":"mock","days":1}'


def functions(completion: Any) -> list[tuple[str, str]]:
    """(name, arguments) of the tool calls of a chat completion's first choice."""
    return [(c.function.name, c.function.arguments) for c in completion.choices[0].message.tool_calls or []]


def test_chat_tool_call_from_the_request(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="m", messages=ASK_WEATHER, tools=CHAT_TOOLS)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather"
    assert call.function.arguments == WEATHER_ARGS
    assert reply.usage is not None and reply.usage.completion_tokens == tokens.count_text(WEATHER_ARGS)
    with client.chat.completions.stream(
        model="m", messages=ASK_WEATHER, tools=CHAT_TOOLS, stream_options={"include_usage": True}
    ) as stream:
        final = stream.get_final_completion()
    [streamed] = final.choices[0].message.tool_calls or []
    assert (streamed.function.name, streamed.function.arguments) == ("get_weather", WEATHER_ARGS)
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage is not None and final.usage.completion_tokens == tokens.count_text(WEATHER_ARGS)
    # no trigger word, or tool_choice "none": words; "required" or a forced function: a call
    assert (
        client.chat.completions.create(model="m", messages=MESSAGES, tools=CHAT_TOOLS)
        .choices[0]
        .message.content
    )
    none = client.chat.completions.create(
        model="m", messages=ASK_WEATHER, tools=CHAT_TOOLS, tool_choice="none"
    )
    assert none.choices[0].message.content == REPLY and none.choices[0].finish_reason == "stop"
    forced = client.chat.completions.create(
        model="m",
        messages=MESSAGES,
        tools=CHAT_TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert [name for name, _ in functions(forced)] == ["get_time"]
    required = client.chat.completions.create(
        model="m", messages=MESSAGES, tools=CHAT_TOOLS, tool_choice="required"
    )
    assert [name for name, _ in functions(required)] == ["get_weather"]
    with pytest.raises(openai.BadRequestError, match="tool_choice"):
        client.chat.completions.create(
            model="m",
            messages=MESSAGES,
            tools=CHAT_TOOLS,
            tool_choice={"type": "function", "function": {"name": "x"}},
        )
    cut = client.chat.completions.create(model="m", messages=ASK_WEATHER, tools=CHAT_TOOLS, max_tokens=4)
    assert cut.choices[0].finish_reason == "length"
    assert functions(cut) == [("get_weather", '{"city"')]


def test_chat_parallel_tool_calls(client: openai.OpenAI, mock_upstream: MockUpstreamProcess) -> None:
    reply = client.chat.completions.create(model="m", messages=ASK_BOTH, tools=CHAT_TOOLS)
    calls = reply.choices[0].message.tool_calls or []
    assert functions(reply) == [
        ("get_weather", WEATHER_ARGS),
        ("get_time", '{"zone":"mock"}'),
    ]
    assert len({c.id for c in calls}) == 2
    assert reply.usage is not None
    assert reply.usage.completion_tokens == tokens.count_text(WEATHER_ARGS) + tokens.count_text(
        '{"zone":"mock"}'
    )
    serial = client.chat.completions.create(
        model="m", messages=ASK_BOTH, tools=CHAT_TOOLS, parallel_tool_calls=False
    )
    assert len(serial.choices[0].message.tool_calls or []) == 1
    with client.chat.completions.stream(model="m", messages=ASK_BOTH, tools=CHAT_TOOLS) as stream:
        final = stream.get_final_completion()
    assert functions(final) == functions(reply)
    # on the wire: a bare role delta, then each call's header and its argument fragments in turn
    _, raw = post_raw(
        mock_upstream,
        "/chat/completions",
        {"model": "m", "messages": ASK_BOTH, "tools": CHAT_TOOLS, "stream": True},
    )
    deltas = [e["choices"][0]["delta"] for e in sse_json(raw)[:-1]]
    assert deltas[0] == {"role": "assistant", "content": None}
    headers = [(i, d["tool_calls"][0]) for i, d in enumerate(deltas) if "id" in d.get("tool_calls", [{}])[0]]
    assert [(h["index"], h["function"]) for _, h in headers] == [
        (0, {"name": "get_weather", "arguments": ""}),
        (1, {"name": "get_time", "arguments": ""}),
    ]
    second = headers[1][0]
    assert "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas[2:second]) == WEATHER_ARGS
    assert {d["tool_calls"][0]["index"] for d in deltas[second:-1]} == {1}
    assert deltas[-1] == {}


class Lookup(BaseModel):
    city: str
    days: int


def test_chat_tool_results_and_parsed_arguments(client: openai.OpenAI) -> None:
    tool = openai.pydantic_function_tool(Lookup)
    parsed = client.chat.completions.parse(model="m", messages=ASK_WEATHER, tools=[tool])
    [call] = parsed.choices[0].message.tool_calls or []
    assert call.function.parsed_arguments == Lookup(city="mock", days=1)
    history: list[ChatCompletionMessageParam] = [
        *ASK_WEATHER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call.id, "type": "function", "function": {"name": "Lookup", "arguments": "{}"}},
                {"id": "call_2", "type": "function", "function": {"name": "Lookup", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "22 C"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "sunny"}]},
    ]
    answer = client.chat.completions.create(model="m", messages=history, tools=[tool])
    assert answer.choices[0].message.content == "The tool returned: 22 C; sunny"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert answer.usage.completion_tokens == tokens.count_text("The tool returned: 22 C; sunny")


def test_chat_structured_output(client: openai.OpenAI) -> None:
    parsed = client.chat.completions.parse(model="m", messages=MESSAGES, response_format=Weather)
    message = parsed.choices[0].message
    assert message.parsed == Weather(city="mock", celsius=1.5, sunny=True, hours=[1], kind="rain")
    assert parsed.usage is not None and parsed.usage.completion_tokens == tokens.count_text(
        message.content or ""
    )
    with client.chat.completions.stream(model="m", messages=MESSAGES, response_format=Weather) as stream:
        assert stream.get_final_completion().choices[0].message.parsed == message.parsed
    json_mode = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "Reply in JSON."}],
        response_format={"type": "json_object"},
    )
    assert json.loads(json_mode.choices[0].message.content or "") == {"answer": REPLY}
    with pytest.raises(openai.BadRequestError, match="json"):
        client.chat.completions.create(model="m", messages=MESSAGES, response_format={"type": "json_object"})
    with pytest.raises(openai.LengthFinishReasonError):  # cut JSON cannot be parsed, as with OpenAI
        client.chat.completions.parse(model="m", messages=MESSAGES, response_format=Weather, max_tokens=3)


def test_chat_reasoning_effort(client: openai.OpenAI) -> None:
    efforts: list[tuple[ReasoningEffort, int]] = [("minimal", 4), ("low", 8), ("medium", 16), ("high", 32)]
    for effort, thought in efforts:
        reply = client.chat.completions.create(model="o-m", messages=MESSAGES, reasoning_effort=effort)
        assert reply.choices[0].message.content == REPLY
        assert reply.usage is not None and reply.usage.completion_tokens == 16 + thought
        details = reply.usage.completion_tokens_details
        assert details is not None and details.reasoning_tokens == thought
    chunks = list(
        client.chat.completions.create(
            model="o-m",
            messages=MESSAGES,
            reasoning_effort="low",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 24
    assert (
        usage.completion_tokens_details is not None and usage.completion_tokens_details.reasoning_tokens == 8
    )
    # the cap counts reasoning first
    cut = client.chat.completions.create(
        model="o-m", messages=MESSAGES, reasoning_effort="high", max_completion_tokens=20
    )
    assert cut.choices[0].finish_reason == "length"
    assert cut.choices[0].message.content == ""  # the reasoning took all of it
    assert cut.usage is not None and cut.usage.completion_tokens == 20


def test_model_retrieve(client: openai.OpenAI, mock_upstream: MockUpstreamProcess) -> None:
    model = client.models.retrieve("gpt-anything")
    assert (model.id, model.object, model.owned_by) == ("gpt-anything", "model", "aikeys-mock")
    mock_upstream.configure(models=["a"])
    assert client.models.retrieve("a").id == "a"
    with pytest.raises(openai.NotFoundError) as unknown:
        client.models.retrieve("b")
    assert isinstance(unknown.value.body, dict) and unknown.value.body["code"] == "model_not_found"


def test_malformed_requests_are_400s(client: openai.OpenAI, mock_upstream: MockUpstreamProcess) -> None:
    bodies: list[tuple[str, dict[str, Any]]] = [
        ("/chat/completions", {"model": "m", "messages": [1]}),
        ("/responses", {"model": "m", "input": "x", "previous_response_id": ["x"]}),
        ("/responses", {"model": "m", "input": "x", "max_output_tokens": "20"}),
        (
            "/responses",
            {"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}},
        ),
    ]
    for path, body in bodies:
        with pytest.raises(urllib.error.HTTPError) as bad:
            post_raw(mock_upstream, path, body)
        assert bad.value.code == 400
        assert json.loads(bad.value.read())["error"]["type"] == "invalid_request_error"
    # a forced function that exists does not skip the previous_response_id check
    with pytest.raises(openai.BadRequestError, match="Previous response"):
        client.responses.create(
            model="m",
            input="x",
            tools=[cast(Any, TIME_FN)],
            tool_choice={"type": "function", "name": "get_time"},
            previous_response_id="resp_gone",
        )


# --- prompt caching ------------------------------------------------------------------------------------


def _billed(mock: MockUpstreamProcess) -> list[dict[str, int]]:
    return [r["billed"] for r in mock.requests() if "billed" in r]


def test_chat_prompt_caching(client: openai.OpenAI, mock_upstream: MockUpstreamProcess) -> None:
    """A prompt that starts like one answered before is partly cached, from 1024 tokens on, in
    steps of 128, as OpenAI reports it: inside prompt_tokens, in JSON and in the usage chunk."""
    system = f"{uuid.uuid4().hex} " + "word " * 1200  # 3 + 1201 tokens, unseen before
    turn: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": system},
        {"role": "user", "content": "Hello, world!"},
    ]
    first = client.chat.completions.create(model="m", messages=turn)
    assert first.usage is not None and first.usage.prompt_tokens == 3 + 1204 + 7
    assert first.usage.prompt_tokens_details is not None
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    answer: ChatCompletionMessageParam = {"role": "assistant", "content": first.choices[0].message.content}
    again: list[ChatCompletionMessageParam] = [*turn, answer, {"role": "user", "content": "more " * 60}]
    second = client.chat.completions.create(model="m", messages=again)
    assert second.usage is not None and second.usage.prompt_tokens == 3 + 1204 + 7 + 19 + 63
    assert second.usage.prompt_tokens_details is not None
    assert second.usage.prompt_tokens_details.cached_tokens == 1152  # 1204 + 7 → 9 × 128
    assert second.usage.total_tokens == second.usage.prompt_tokens + 16
    chunks = list(
        client.chat.completions.create(
            model="m", messages=again, stream=True, stream_options={"include_usage": True}
        )
    )
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 1280  # all of `again` but 3: 1293 → 10 × 128
    assert _billed(mock_upstream)[-3:] == [
        {"input": 1214, "output": 16, "cached": 0},
        {"input": 1296, "output": 16, "cached": 1152},
        {"input": 1296, "output": 16, "cached": 1280},
    ]
    # another model shares no cache; the model's other prompts are not cached under 1024 tokens
    other = client.chat.completions.create(model="other", messages=again)
    assert other.usage is not None and other.usage.prompt_tokens_details is not None
    assert other.usage.prompt_tokens_details.cached_tokens == 0
    short = client.chat.completions.create(model="m", messages=[turn[0], MESSAGES[0]])
    assert short.usage is not None and short.usage.prompt_tokens_details is not None
    assert short.usage.prompt_tokens_details.cached_tokens == 1152  # the system message: 1204 → 1152


def test_prompt_caching_switches(client: openai.OpenAI, mock_upstream: MockUpstreamProcess) -> None:
    mock_upstream.configure(cache_min_tokens=0, cache_increment=1)
    tag = uuid.uuid4().hex
    turn: list[ChatCompletionMessageParam] = [{"role": "user", "content": f"Hello {tag}"}]
    body = {"model": "m", "messages": [*turn, MESSAGES[1]]}
    post_raw(mock_upstream, "/chat/completions", {"model": "m", "messages": turn})
    usage = json.loads(post_raw(mock_upstream, "/chat/completions", body)[1])["usage"]
    assert usage == {
        "prompt_tokens": 3 + 5 + 7,
        "completion_tokens": 16,
        "total_tokens": 15 + 16,
        "prompt_tokens_details": {"cached_tokens": 5, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    # the usage switches apply to the cached count too; it never exceeds the reported prompt
    mock_upstream.configure(usage_as_strings=True, usage_prompt_tokens=4)
    usage = json.loads(post_raw(mock_upstream, "/chat/completions", body)[1])["usage"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": "4", "audio_tokens": "0"}
    mock_upstream.configure(usage_as_strings=False, usage_prompt_tokens=None, prompt_cache=False)
    usage = json.loads(post_raw(mock_upstream, "/chat/completions", body)[1])["usage"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0, "audio_tokens": 0}
    assert _billed(mock_upstream)[-1] == {"input": 15, "output": 16, "cached": 0}
    for bad in ({"cache_increment": 0}, {"cache_min_tokens": -1}, {"cache_increment": "128"}):
        with pytest.raises(urllib.error.HTTPError) as refused:
            mock_upstream.configure(**bad)
        assert refused.value.code == 400
    config = mock_upstream.configure()
    assert (config["cache_increment"], config["cache_min_tokens"]) == (1, 0)


def test_responses_prompt_caching(client: openai.OpenAI, mock_upstream: MockUpstreamProcess) -> None:
    """The instructions and the context (a previous response's conversation too) are the prefix."""
    mock_upstream.configure(cache_min_tokens=0, cache_increment=1)
    tag = uuid.uuid4().hex  # the mock remembers other tests' prompts too
    instructions, text = f"Be brief, {tag}.", f"Hello, {tag}!"  # 3 + 5 and 3 + 4 tokens
    first = client.responses.create(model="m", input=text, instructions=instructions)
    assert first.usage is not None and first.usage.input_tokens == 3 + 8 + 7
    assert first.usage.input_tokens_details.cached_tokens == 0
    second = client.responses.create(
        model="m", input="Again", instructions=instructions, previous_response_id=first.id
    )
    # the context: the first input, its answer (3 + 16), the new input
    assert second.usage is not None and second.usage.input_tokens == 3 + 8 + 7 + 19 + 4
    assert second.usage.input_tokens_details.cached_tokens == 8 + 7
    events = list(
        client.responses.create(
            model="m", input="More", instructions=instructions, previous_response_id=second.id, stream=True
        )
    )
    assert events[-1].type == "response.completed"
    final = events[-1].response
    assert final.usage is not None and final.usage.input_tokens == 3 + 8 + 7 + 19 + 4 + 19 + 4
    assert final.usage.input_tokens_details.cached_tokens == 8 + 7 + 19 + 4
    # without the instructions the prefix differs from the first item on
    alone = client.responses.create(model="m", input=text)
    assert alone.usage is not None and alone.usage.input_tokens_details.cached_tokens == 0
    assert _billed(mock_upstream)[-4:] == [
        {"input": 18, "output": 16, "cached": 0},
        {"input": 41, "output": 16, "cached": 15},
        {"input": 64, "output": 16, "cached": 38},
        {"input": 10, "output": 16, "cached": 0},
    ]

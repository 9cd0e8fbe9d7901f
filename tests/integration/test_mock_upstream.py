"""The mock upstream satisfies the official `openai` SDK the way a real provider does."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from aikeys.devstack.upstream import MockUpstreamProcess
from aikeys.mockupstream import tokens

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

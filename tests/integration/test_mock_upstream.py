"""The mock upstream satisfies the official `openai` SDK the way a real provider does."""

from __future__ import annotations

import json
import urllib.request

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

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

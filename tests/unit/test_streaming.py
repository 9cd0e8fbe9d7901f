"""The gateway reads streams as the SSE specification frames them, whatever the upstream's style."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from aikeys_gateway.upstreams.client import UpstreamTooLarge
from aikeys_gateway.upstreams.openai import ChatReader, json_output
from aikeys_gateway.upstreams.sse import MAX_EVENT_BYTES, SSEFilter
from hypothesis import given, settings
from hypothesis import strategies as st

from aikeys.usage import Output, Usage, reported_usage


def chunk(**delta: Any) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]}


USAGE = {"id": "c", "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}}
EVENTS = [
    chunk(role="assistant", content=""),
    chunk(content="Hello"),
    chunk(reasoning_content="thinking"),
    chunk(tool_calls=[{"index": 0, "id": "call_1", "function": {"name": "get_weather", "arguments": ""}}]),
    chunk(tool_calls=[{"index": 0, "function": {"arguments": '{"city":'}}]),
    chunk(refusal="no"),
    {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    USAGE,
]


def frame(obj: Any, space: bool, eol: str, spaced_json: bool, multiline: bool) -> str:
    text = (
        obj
        if isinstance(obj, str)
        else json.dumps(obj, separators=(", ", ": ") if spaced_json else (",", ":"))
    )
    prefix = "data: " if space else "data:"
    if multiline and not isinstance(obj, str):
        lines = text.replace(",", ",\n").split("\n")  # JSON may break at any whitespace
        return "".join(prefix + line + eol for line in lines) + eol
    return prefix + text + eol + eol


@settings(max_examples=300)
@given(
    space=st.booleans(),
    eol=st.sampled_from(["\n", "\r\n", "\r"]),
    spaced_json=st.booleans(),
    multiline=st.booleans(),
    comments=st.booleans(),
    cuts=st.lists(st.integers(0, 4000), max_size=30),
)
def test_any_valid_framing_and_any_chunking_reads_the_same(
    space: bool, eol: str, spaced_json: bool, multiline: bool, comments: bool, cuts: list[int]
) -> None:
    parts = []
    for event in [*EVENTS, "[DONE]"]:
        if comments:
            parts.append(": keep-alive" + eol + eol)
        parts.append(frame(event, space, eol, spaced_json, multiline))
    raw = "".join(parts).encode()
    sse = SSEFilter(ChatReader(client_wants_usage=False))
    forwarded = b""
    last = 0
    for cut in sorted(c % (len(raw) + 1) for c in cuts):
        forwarded += sse.feed(raw[last:cut])
        last = max(last, cut)
    forwarded += sse.feed(raw[last:]) + sse.end()
    assert sse.usage == Usage(11, 7)
    assert sse.done and isinstance(sse.reader, ChatReader) and sse.reader.finished
    assert sse.output.texts == ["Hello", "thinking", "get_weather", '{"city":', "no"]
    # the usage-only chunk we asked for on our own is not forwarded; everything else is
    assert b"prompt_tokens" not in forwarded
    assert forwarded.count(b"[DONE]") == 1
    assert forwarded.count(b"Hello") == 1


def test_the_client_that_asked_for_usage_gets_it() -> None:
    sse = SSEFilter(ChatReader(client_wants_usage=True))
    out = sse.feed(("data: " + json.dumps(USAGE) + "\n\n").encode())
    assert b"prompt_tokens" in out


@given(st.one_of(st.text(), st.floats(), st.booleans(), st.none(), st.integers(max_value=-1)))
def test_usage_that_is_not_a_non_negative_integer_is_missing(bad: Any) -> None:
    assert reported_usage({"prompt_tokens": bad, "completion_tokens": 3}) is None
    assert reported_usage({"prompt_tokens": 3, "completion_tokens": bad}) is None
    assert reported_usage({"prompt_tokens": "12", "completion_tokens": "3"}) is None
    assert reported_usage({"prompt_tokens": 12, "completion_tokens": 3}) == Usage(12, 3)


def test_embeddings_usage_has_no_output() -> None:
    assert reported_usage({"prompt_tokens": 5, "total_tokens": 5}, with_output=False) == Usage(5, 0)
    assert reported_usage({"prompt_tokens": 5, "total_tokens": 5}) is None


def test_a_response_without_usage_is_counted_part_by_part() -> None:
    body = {
        "choices": [
            {
                "message": {
                    "content": None,
                    "tool_calls": [{"function": {"name": "f", "arguments": '{"a": 1}'}}],
                    "reasoning_content": "because",
                }
            },
            {"text": "completion text"},
        ]
    }
    usage, output = json_output(body)
    assert usage is None
    assert output.texts == ["because", "f", '{"a": 1}', "completion text"]
    assert output.tokens(None) == sum(len(t.encode()) for t in output.texts)
    assert Output(texts=["a"], pieces=5).tokens(None) == 5  # never fewer than the pieces


@settings(max_examples=300)
@given(
    raw=st.lists(
        st.sampled_from([b"data: 1", b"data:[DONE]", b": c", b"\n", b"\r", b"\r\n", b"x"]), max_size=40
    ),
    cuts=st.lists(st.integers(0, 400), max_size=20),
)
def test_any_chunking_forwards_the_same_bytes_as_one_chunk(raw: list[bytes], cuts: list[int]) -> None:
    whole = b"".join(raw)
    once = SSEFilter(ChatReader(client_wants_usage=True))
    expected = once.feed(whole) + once.end()
    sse = SSEFilter(ChatReader(client_wants_usage=True))
    got, last = b"", 0
    for cut in sorted(c % (len(whole) + 1) for c in cuts):
        got += sse.feed(whole[last:cut])
        last = max(last, cut)
    assert got + sse.feed(whole[last:]) + sse.end() == expected


MiB = 1024 * 1024


def feed_until_refused(sse: SSEFilter, size: int, piece: bytes) -> tuple[int, UpstreamTooLarge | None]:
    """Feed one event of `size` bytes without its end; the bytes fed when it was refused."""
    fed = 0
    while fed < size:
        fed += len(piece)
        try:
            sse.feed(piece)
        except UpstreamTooLarge as err:
            return fed, err
    return fed, None


def test_an_event_past_the_cap_is_refused_once_the_cap_is_held() -> None:
    sse = SSEFilter(ChatReader(client_wants_usage=True))  # the default cap: 8 MiB an event
    piece = b"x" * (64 * 1024)
    fed, refused = feed_until_refused(sse, 32 * MiB, piece)  # a 32 MiB event, no blank line
    assert refused is not None and str(MAX_EVENT_BYTES) in str(refused)
    assert MAX_EVENT_BYTES < fed <= MAX_EVENT_BYTES + len(piece)  # stopped at the cap
    whole = SSEFilter(ChatReader(client_wants_usage=True), max_event=100)
    with pytest.raises(UpstreamTooLarge):  # an event that arrives whole, too
        whole.feed(b"data: " + b"1" * 200 + b"\n\n")


def test_a_long_event_is_parsed_in_time_linear_in_its_bytes() -> None:
    """A 32 MiB event in 16 KiB pieces: each piece is searched once (the old parser joined and
    searched the growing event again for every piece: ~2,000 × 16 MiB on average)."""
    sse = SSEFilter(ChatReader(client_wants_usage=True), max_event=64 * MiB)
    piece = b"x" * (16 * 1024)
    started = time.perf_counter()
    out = sse.feed(b'data: {"choices": [{"index": 0, "delta": {"content": "')
    for _ in range(32 * MiB // len(piece)):
        out += sse.feed(piece)
    out += sse.feed(b'"}}]}\n\n')
    seconds = time.perf_counter() - started
    print(f"\n32 MiB event in 16 KiB pieces: {seconds * 1000:.0f} ms")
    assert len(out) > 32 * MiB and sse.output.texts == ["x" * (32 * MiB)]
    assert seconds < 2.5  # 0.2-0.9 s here; the quadratic parser: 139 s

"""Tracing of metered requests: endpoint resolution, span attributes, W3C trace context, the
stream tap, and the cost when tracing is off."""

from __future__ import annotations

import contextvars
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from aikeys_gateway import config
from aikeys_gateway.cache.catalog import ModelEntry, ProviderEntry
from aikeys_gateway.observe import tracing
from aikeys_gateway.pipeline.exchange import Exchange
from aikeys_gateway.pipeline.pipeline import Pipeline
from aikeys_gateway.pipeline.routing import Route
from aikeys_gateway.upstreams.openai import ChatReader, ResponsesReader
from aikeys_gateway.upstreams.sse import SSEFilter
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from starlette.requests import Request

from aikeys.estimate import Endpoint, OutputCap
from aikeys.money import Price
from aikeys.resources import ProviderType
from aikeys.settings import SettingsError

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"


def request(*headers: tuple[str, str]) -> Request:
    return Request(
        {
            "type": "http",
            "method": "POST",
            "path": "/api/openai/v1/chat/completions",
            "headers": [(k.encode(), v.encode()) for k, v in headers],
        }
    )


def route(kind: ProviderType = ProviderType.OPENAI, base_url: str = "https://api.openai.com/v1") -> Route:
    model = ModelEntry("gpt", "gpt-4o-mini", Price.parse("1.00", "2.00"), None, "o200k_base", True)
    provider = ProviderEntry(
        namespace="team",
        name="openai",
        type=kind,
        base_url=base_url,
        azure_api_version=None,
        has_credentials=True,
        shared_with=frozenset(),
        stream_usage=True,
        timeout_seconds=30.0,
        host=urlsplit(base_url).hostname or "",
        max_tokens_parameter="max_completion_tokens",
        models={"gpt": model},
    )
    return Route("team:openai/gpt", provider, model, "sk-provider-secret")


@pytest.fixture
def traced() -> Iterator[tuple[tracing.Tracing, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    t = tracing.build(exporter, batch=False)
    yield t, exporter
    t.shutdown()


def ctx(**more: Any) -> dict[str, Any]:
    return {"rid": "req-1", "endpoint": "chat/completions", "namespace": "team", "key": "alice"} | more


def only(exporter: InMemorySpanExporter) -> ReadableSpan:
    [span] = exporter.get_finished_spans()
    return span


# --- the endpoint ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({}, ""),
        ({"AIKEYS_OTLP_ENDPOINT": "http://otel:4318"}, "http://otel:4318/v1/traces"),
        ({"AIKEYS_OTLP_ENDPOINT": "http://otel:4318/"}, "http://otel:4318/v1/traces"),
        ({"AIKEYS_OTLP_ENDPOINT": "https://otel/v1/traces"}, "https://otel/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318"}, "http://otel:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://otel:4318/custom"}, "http://otel:4318/custom"),
        (
            {"AIKEYS_OTLP_ENDPOINT": "http://ours:4318", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://theirs:4318"},
            "http://ours:4318/v1/traces",
        ),
        ({"AIKEYS_OTLP_ENDPOINT": "http://otel:4318", "OTEL_SDK_DISABLED": "true"}, ""),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318", "OTEL_TRACES_EXPORTER": "none"}, ""),
    ],
)
def test_endpoint_from_the_environment(env: dict[str, str], url: str) -> None:
    assert config.otlp_endpoint(env) == url


def test_an_endpoint_that_is_not_http_stops_the_start() -> None:
    with pytest.raises(SettingsError, match="http:// or https://"):
        config.otlp_endpoint({"AIKEYS_OTLP_ENDPOINT": "otel:4317"})


# --- spans -------------------------------------------------------------------------------------------------


def test_a_chat_span_continues_the_callers_trace_and_carries_the_conventions(
    traced: tuple[tracing.Tracing, InMemorySpanExporter],
) -> None:
    t, exporter = traced
    rs = t.start(
        request(("traceparent", f"00-{TRACE}-{PARENT}-01"), ("tracestate", "vendor=x")), Endpoint.CHAT
    )
    rs.request(
        {"temperature": 0.2, "top_p": 1, "seed": 7, "n": 2, "stop": ["secret"]}, OutputCap(64, 2), "main"
    )
    headers: dict[str, str] = {"Authorization": "Bearer sk-provider-secret"}
    t.inject(headers, route())
    rs.response(
        {"id": "chatcmpl-1", "model": "gpt-4o-mini-2024-07-18", "choices": [{"finish_reason": "stop"}] * 2}
    )
    rs.end(
        ctx(
            model="team:openai/gpt",
            status=200,
            stream=False,
            input_tokens=10,
            output_tokens=5,
            cost_usd="0.00002",
        )
    )

    span = only(exporter)
    assert span.name == "chat gpt-4o-mini"
    assert span.kind is SpanKind.CLIENT
    assert f"{span.context.trace_id:032x}" == TRACE
    assert span.parent is not None and f"{span.parent.span_id:016x}" == PARENT
    assert headers["traceparent"] == f"00-{TRACE}-{span.context.span_id:016x}-{span.context.trace_flags:02x}"
    assert span.context.trace_flags.sampled
    assert headers["tracestate"] == "vendor=x"
    assert dict(span.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "openai.api.type": "chat_completions",
        "gen_ai.provider.name": "openai",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.request.max_tokens": 64,
        "gen_ai.request.choice.count": 2,
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.top_p": 1,
        "gen_ai.request.seed": 7,
        "gen_ai.request.stream": False,
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.response.id": "chatcmpl-1",
        "gen_ai.response.finish_reasons": ("stop", "stop"),
        "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.output_tokens": 5,
        "server.address": "api.openai.com",
        "server.port": 443,
        "aikeys.allocation": "main",
        "aikeys.provider": "team:openai",
        "aikeys.request_id": "req-1",
        "aikeys.endpoint": "chat/completions",
        "aikeys.namespace": "team",
        "aikeys.key": "alice",
        "aikeys.model": "team:openai/gpt",
        "aikeys.status": 200,
        "aikeys.cost_usd": "0.00002",
    }
    assert span.status.status_code is StatusCode.UNSET
    assert span.resource.attributes["service.name"] == "aikeys-gateway"
    assert "secret" not in repr(span.to_json())  # neither the provider key nor the stop text


def test_without_a_caller_trace_the_span_is_a_root(
    traced: tuple[tracing.Tracing, InMemorySpanExporter],
) -> None:
    t, exporter = traced
    rs = t.start(request(("traceparent", "not-a-traceparent")), Endpoint.EMBEDDINGS)
    rs.request({"encoding_format": "base64"}, OutputCap(0, 1), "main")
    headers: dict[str, str] = {}
    t.inject(headers, route(ProviderType.AZURE_OPENAI, "http://127.0.0.1:8081"))
    rs.end(ctx(status=200))
    span = only(exporter)
    assert span.parent is None
    ours = span.context
    assert headers["traceparent"] == f"00-{ours.trace_id:032x}-{ours.span_id:016x}-{ours.trace_flags:02x}"
    assert ours.trace_flags.sampled
    attrs = span.attributes or {}
    assert span.name == "embeddings gpt-4o-mini"
    assert attrs["gen_ai.provider.name"] == "azure.ai.openai"
    assert (attrs["server.address"], attrs["server.port"]) == ("127.0.0.1", 8081)
    assert attrs["gen_ai.request.encoding_formats"] == ("base64",)
    assert "gen_ai.request.max_tokens" not in attrs and "openai.api.type" not in attrs


def test_a_caller_that_does_not_sample_is_followed_and_its_context_propagated(
    traced: tuple[tracing.Tracing, InMemorySpanExporter],
) -> None:
    t, exporter = traced
    rs = t.start(request(("traceparent", f"00-{TRACE}-{PARENT}-00")), Endpoint.CHAT)
    assert not rs.recording
    rs.request({"temperature": 1}, OutputCap(16, 1), "main")
    headers: dict[str, str] = {}
    t.inject(headers, route())
    rs.end(ctx(status=200))
    assert exporter.get_finished_spans() == ()
    assert headers["traceparent"].startswith(f"00-{TRACE}-") and headers["traceparent"].endswith("-00")
    assert PARENT not in headers["traceparent"]  # our own span id, even unsampled


@pytest.mark.parametrize(
    ("more", "error"),
    [
        ({"status": 402, "error": "insufficient_quota"}, "insufficient_quota"),
        ({"status": 429}, "429"),  # the upstream's own error, passed on
        ({"status": 200, "upstream_broke": True}, "upstream_broke"),
        ({"status": 500, "error": "server_error"}, "server_error"),
    ],
)
def test_failures_have_an_error_type_and_status(
    traced: tuple[tracing.Tracing, InMemorySpanExporter], more: dict[str, Any], error: str
) -> None:
    t, exporter = traced
    t.start(request(), Endpoint.COMPLETIONS).end(ctx(**more))
    span = only(exporter)
    assert span.name == "text_completion"  # no model resolved: the operation alone
    assert (span.attributes or {})["error.type"] == error
    assert span.status.status_code is StatusCode.ERROR


def test_a_client_leaving_is_not_an_error(traced: tuple[tracing.Tracing, InMemorySpanExporter]) -> None:
    t, exporter = traced
    t.start(request(), Endpoint.CHAT).end(ctx(status=200, client_left=True, translated=True))
    span = only(exporter)
    assert (span.attributes or {})["aikeys.client_left"] is True
    assert (span.attributes or {})["aikeys.translated"] is True
    assert "error.type" not in (span.attributes or {})
    assert span.status.status_code is StatusCode.UNSET


def test_a_fallback_is_one_span_named_after_the_upstream_that_answered(
    traced: tuple[tracing.Tracing, InMemorySpanExporter],
) -> None:
    t, exporter = traced
    rs = t.start(request(), Endpoint.CHAT)
    first: dict[str, str] = {}
    t.inject(first, route(base_url="https://east.example.com/v1"))
    second: dict[str, str] = {}
    t.inject(second, route(ProviderType.AZURE_OPENAI, "https://west.example.com"))
    rs.end(ctx(status=200, backend="team:west/gpt", fallbacks=["team:east/gpt:503"]))
    span = only(exporter)
    attrs = span.attributes or {}
    assert first["traceparent"] == second["traceparent"]  # every attempt a child of the request's span
    assert (attrs["server.address"], attrs["gen_ai.provider.name"]) == ("west.example.com", "azure.ai.openai")
    assert attrs["aikeys.backend"] == "team:west/gpt"
    assert attrs["aikeys.fallbacks"] == ("team:east/gpt:503",)


def test_inject_outside_a_request_does_nothing(traced: tuple[tracing.Tracing, InMemorySpanExporter]) -> None:
    t, _ = traced
    headers: dict[str, str] = {}
    contextvars.Context().run(t.inject, headers, route())  # a context no request span was started in
    assert headers == {}


HEX = "0123456789abcdefABCDEF"
TRACEPARENTS = st.one_of(
    st.builds(
        lambda v, t, sp, f, rest, pad: f"{pad}{v}-{t}-{sp}-{f}{rest}{pad}",
        st.sampled_from(["00", "01", "ff", "0g", "cc"]),
        st.sampled_from([TRACE, "0" * 32, TRACE[:31], TRACE.upper()])
        | st.text(HEX, min_size=32, max_size=32),
        st.sampled_from([PARENT, "0" * 16, PARENT + "0"]) | st.text(HEX, min_size=16, max_size=16),
        st.sampled_from(["00", "01", "02", "03", "ff", "1"]),
        st.sampled_from(["", "-", "-extra", "x"]),
        st.sampled_from(["", " ", "\t"]),
    ),
    st.text(max_size=80),
)
TRACESTATES = st.one_of(
    st.none(), st.sampled_from(["vendor=x", "a=1,b=2", "bad state", "=x", "a=1," * 40]), st.text(max_size=30)
)


@given(TRACEPARENTS, TRACESTATES)
@settings(max_examples=400, deadline=None)
def test_the_traceparent_is_read_as_the_opentelemetry_propagator_reads_it(
    traceparent: str, tracestate: str | None
) -> None:
    from opentelemetry.trace import get_current_span
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    headers = {"traceparent": traceparent} | ({"tracestate": tracestate} if tracestate is not None else {})
    expected = get_current_span(TraceContextTextMapPropagator().extract(headers)).get_span_context()
    t = tracing.build(InMemorySpanExporter(), batch=False)
    found = t._parent([(k.encode(), v.encode()) for k, v in headers.items()])
    if not expected.is_valid:
        assert found is None
    else:
        assert found is not None
        assert (found.trace_id, found.span_id, found.trace_flags, found.is_remote) == (
            expected.trace_id,
            expected.span_id,
            expected.trace_flags,
            True,
        )
        assert found.trace_state == expected.trace_state


# --- streams -----------------------------------------------------------------------------------------------


def sse(*events: dict[str, Any] | str) -> bytes:
    return b"".join(
        b"data: " + (e if isinstance(e, str) else json.dumps(e)).encode() + b"\n\n" for e in events
    )


def test_the_stream_tap_sees_the_answer_and_changes_nothing(
    traced: tuple[tracing.Tracing, InMemorySpanExporter],
) -> None:
    t, exporter = traced
    rs = t.start(request(), Endpoint.CHAT)
    t.inject({}, route())
    stream = sse(
        {"id": "c1", "model": "gpt-4o-mini-x", "choices": [{"index": 0, "delta": {"content": "Hi"}}]},
        {
            "id": "c1",
            "model": "gpt-4o-mini-x",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
        },
        {"id": "c1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}},
        "[DONE]",
    )
    plain, tapped = SSEFilter(ChatReader(False)), SSEFilter(ChatReader(False))
    rs.watch(tapped)
    assert tapped.feed(stream) == plain.feed(stream)
    assert (tapped.usage, tapped.done, tapped.output.tokens(None)) == (
        plain.usage,
        plain.done,
        plain.output.tokens(None),
    )
    rs.end(ctx(status=200, stream=True))
    attrs = only(exporter).attributes or {}
    assert attrs["gen_ai.response.model"] == "gpt-4o-mini-x"
    assert attrs["gen_ai.response.id"] == "c1"
    assert attrs["gen_ai.response.finish_reasons"] == ("length",)
    assert attrs["gen_ai.request.stream"] is True
    first_chunk = attrs["gen_ai.response.time_to_first_chunk"]
    assert isinstance(first_chunk, float) and 0 <= first_chunk < 1


def test_the_tap_keeps_the_responses_readers_own_state(
    traced: tuple[tracing.Tracing, InMemorySpanExporter],
) -> None:
    t, exporter = traced
    rs = t.start(request(), Endpoint.RESPONSES)
    tapped = SSEFilter(ResponsesReader())
    rs.watch(tapped)
    tapped.feed(sse({"type": "response.created", "response": {"id": "resp_1", "model": "gpt-5"}}))
    assert getattr(tapped.reader, "response_id", None) == "resp_1"  # read by the gateway after the stream
    rs.end(ctx(status=200))
    span = only(exporter)
    assert (span.attributes or {})["gen_ai.response.model"] == "gpt-5"
    assert (span.attributes or {})["openai.api.type"] == "responses"
    assert (span.attributes or {})["gen_ai.operation.name"] == "chat"


# --- off means free ----------------------------------------------------------------------------------------


def test_off_the_gateway_has_no_tracer_and_never_loads_the_sdk() -> None:
    code = (
        "import sys\n"
        "from aikeys_gateway import app\n"
        "from aikeys_gateway.observe import tracing\n"
        "from aikeys_gateway.pipeline import pipeline as proxy\n"
        "from aikeys_gateway.config import Settings\n"
        "assert Settings(redis_url='redis://x').otlp_endpoint == ''\n"
        "assert tracing.setup('') is None and proxy.Pipeline.tracer is None\n"
        "prefixes = ('opentelemetry.sdk.trace', 'opentelemetry.exporter')\n"
        "loaded = [m for m in sys.modules if m.startswith(prefixes)]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


def test_off_a_request_pays_only_the_none_tests() -> None:
    """With tracing off, the hooks are `is not None` tests on the request path: time them as the
    gateway runs them (five for a request with one upstream attempt) against the same loop without them."""
    gw = Pipeline.__new__(Pipeline)  # no clients needed: only the tracer attribute is read
    assert gw.tracer is None
    n = 200_000

    def with_hooks() -> float:
        start = time.perf_counter()
        for _ in range(n):
            ex = Exchange("rid", Endpoint.CHAT, 0.0)
            if gw.tracer is not None:  # handle
                raise AssertionError
            if ex.span is not None:  # _handle
                raise AssertionError
            if gw.tracer is not None:  # _send
                raise AssertionError
            if ex.span is not None:  # _json or _stream
                raise AssertionError
            if ex.span is not None:  # _finish
                raise AssertionError
        return time.perf_counter() - start

    def without() -> float:
        start = time.perf_counter()
        for _ in range(n):
            Exchange("rid", Endpoint.CHAT, 0.0)
        return time.perf_counter() - start

    added = min(with_hooks() for _ in range(3)) - min(without() for _ in range(3))
    per_request_us = added / n * 1e6
    print(f"\ntracing off: {per_request_us:.3f} µs per request for the hooks")
    assert per_request_us < 1.0  # a request costs ≈ 800 µs of CPU (docs/performance.md)

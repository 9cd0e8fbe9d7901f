"""Traces end to end: the openai SDK (with its own trace context) → a gateway exporting to an OTLP
receiver in this test → the mock upstream; spans with the GenAI conventions and ours, the caller's
trace continued and carried upstream, nothing secret in the exported bytes."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import yaml
from aikeys_dev.devstack.binaries import REPO_ROOT, locate
from aikeys_dev.devstack.controlplane import ControlPlane
from aikeys_dev.devstack.otlp import OTLPReceiver, Span
from aikeys_dev.devstack.redis import RedisServer
from aikeys_dev.devstack.services import GatewayProcess
from aikeys_dev.devstack.upstream import MockUpstreamProcess
from openai.types.chat import ChatCompletionMessageParam

from aikeys.money import Price, format_usd
from tests.integration.kube import (
    another_gateway,
    apply_allocation,
    apply_provider,
    create_key,
    create_provider_secret,
    gateway_knows,
    get,
    wait_for,
)

pytestmark = pytest.mark.integration
NS = "traced"
PRICE = Price.parse("1.00", "2.00")
PROVIDER_KEY = "sk-provider-" + secrets.token_hex(12)
MARKER = "confidential-prompt-" + secrets.token_hex(6)  # a prompt no span may carry
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": f"Summarise {MARKER} please"}]
CLIENT = 3  # the proto's SpanKind CLIENT
ERROR = 2  # the proto's Status ERROR
WAIT = 15.0  # seconds any span may take to arrive (the batch delay is 50 ms)


@pytest.fixture(scope="module")
def keys(
    control_plane: ControlPlane, gateway: GatewayProcess, mock_upstream_process: MockUpstreamProcess
) -> dict[str, str]:
    cp = control_plane
    cp.kubectl("create", "namespace", NS)
    create_provider_secret(cp, NS, "mock-creds", PROVIDER_KEY)
    apply_provider(
        cp,
        NS,
        mock_upstream_process.url,
        {"gpt": ("1.00", "2.00"), "emb": ("1.00", "2.00"), "resp": ("1.00", "2.00")},
        upstream_names={"gpt": "mock-gpt-upstream"},
        credentialsSecretRef={"name": "mock-creds"},
        timeout="30s",
    )
    apply_allocation(cp, NS, "main", "100.00")
    apply_allocation(cp, NS, "tiny", "0.0000001")
    found = {"main": create_key(cp, NS, "alice", "main"), "tiny": create_key(cp, NS, "poor", "tiny")}
    wait_for(
        lambda: (
            f"{NS}.mock"
            in ((get(cp, "secret", "aikeys-provider-credentials", "aikeys-system") or {}).get("data") or {})
        ),
        30,
        "the provider's credentials projected",
    )
    for key in found.values():
        gateway_knows(gateway.openai_url, key)
    return found


@pytest.fixture(scope="module")
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as r:
        yield r


@pytest.fixture(scope="module")
def traced(
    control_plane: ControlPlane,
    redis_server: RedisServer,
    keys: dict[str, str],
    receiver: OTLPReceiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayProcess]:
    """A second gateway process, exporting its spans to the receiver."""
    with another_gateway(
        control_plane,
        redis_server.url,
        tmp_path_factory.mktemp("traced-gateway"),
        keys["main"],
        AIKEYS_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="50",
    ) as gw:
        gateway_knows(gw.openai_url, keys["tiny"])
        yield gw


def client(gw: GatewayProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.openai_url, api_key=key, max_retries=0)


def caller(sampled: bool = True) -> tuple[str, str, dict[str, str]]:
    """A caller's trace id, span id and headers (traceparent, tracestate, x-request-id)."""
    trace, span = secrets.token_hex(16), secrets.token_hex(8)
    flags = "01" if sampled else "00"
    return (
        trace,
        span,
        {
            "traceparent": f"00-{trace}-{span}-{flags}",
            "tracestate": "caller=1",
            "x-request-id": "trace-test-" + secrets.token_hex(6),
        },
    )


def span_of(receiver: OTLPReceiver, rid: str) -> Span:
    def found() -> Span | None:
        return next((s for s in receiver.spans() if s.attributes.get("aikeys.request_id") == rid), None)

    return wait_for(found, WAIT, f"the span of request {rid}")


def upstream_traceparent(mock: MockUpstreamProcess) -> str:
    seen = mock.requests()
    assert seen, "the mock upstream received nothing"
    value: str = seen[-1]["headers"]["traceparent"]
    return value


def assert_nothing_secret(receiver: OTLPReceiver, *more: str) -> None:
    raw = receiver.raw()
    assert raw
    for secret in (PROVIDER_KEY, MARKER, *more):
        assert secret.encode() not in raw, secret


def test_a_chat_completion_is_traced_from_the_caller_to_the_upstream(
    traced: GatewayProcess, keys: dict[str, str], receiver: OTLPReceiver, mock_upstream: MockUpstreamProcess
) -> None:
    trace, parent, headers = caller()
    reply = client(traced, keys["main"]).chat.completions.with_raw_response.create(
        model=f"{NS}:mock/gpt", messages=MESSAGES, max_tokens=12, temperature=0.5, extra_headers=headers
    )
    completion = reply.parse()
    assert reply.headers["x-request-id"] == headers["x-request-id"]
    usage = completion.usage
    assert usage is not None

    span = span_of(receiver, headers["x-request-id"])
    assert (span.trace_id, span.parent_span_id, span.kind) == (trace, parent, CLIENT)
    assert span.name == "chat mock-gpt-upstream"
    assert span.status != ERROR
    a = span.attributes
    assert {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "mock-gpt-upstream",
        "gen_ai.response.model": completion.model,
        "gen_ai.response.id": completion.id,
        "gen_ai.response.finish_reasons": [completion.choices[0].finish_reason],
        "gen_ai.request.max_tokens": 12,
        "gen_ai.request.temperature": 0.5,
        "gen_ai.request.stream": False,
        "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": usage.completion_tokens,
        "server.address": "127.0.0.1",
        "server.port": mock_upstream.port,
        "aikeys.namespace": NS,
        "aikeys.allocation": "main",
        "aikeys.key": "alice",
        "aikeys.model": f"{NS}:mock/gpt",
        "aikeys.provider": f"{NS}:mock",
        "aikeys.status": 200,
        "aikeys.cost_usd": format_usd(PRICE.cost(usage.prompt_tokens, usage.completion_tokens)),
        "aikeys.endpoint": "chat/completions",
    }.items() <= a.items()
    assert span.resource["service.name"] == "aikeys-gateway"

    # the upstream was called in the same trace, as a child of the gateway's span
    version, up_trace, up_parent, flags = upstream_traceparent(mock_upstream).split("-")
    assert (version, up_trace, up_parent) == ("00", trace, span.span_id)
    assert int(flags, 16) & 1
    assert mock_upstream.requests()[-1]["headers"].get("tracestate") == "caller=1"
    assert_nothing_secret(receiver, keys["main"], completion.choices[0].message.content or "<none>")


def test_a_stream_span_ends_when_its_charge_is_settled(
    traced: GatewayProcess, keys: dict[str, str], receiver: OTLPReceiver, mock_upstream: MockUpstreamProcess
) -> None:
    mock_upstream.configure(reply_tokens=10, chunk_delay_ms=40)  # ≥ 0.4 s between headers and the end
    trace, parent, headers = caller()
    started = time.monotonic()
    chunks = list(
        client(traced, keys["main"]).chat.completions.create(
            model=f"{NS}:mock/gpt",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=headers,
        )
    )
    streamed = time.monotonic() - started
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 10
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    span = span_of(receiver, headers["x-request-id"])
    assert (span.trace_id, span.parent_span_id) == (trace, parent)
    a = span.attributes
    assert a["gen_ai.request.stream"] is True
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )  # known only once the stream has ended and been charged
    assert a["aikeys.cost_usd"] == format_usd(PRICE.cost(usage.prompt_tokens, usage.completion_tokens))
    assert a["gen_ai.response.model"] == chunks[0].model
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert span.seconds >= 0.4 and span.seconds <= streamed + 5  # not cut at the headers
    assert 0 < a["gen_ai.response.time_to_first_chunk"] < span.seconds
    assert upstream_traceparent(mock_upstream).split("-")[1:3] == [trace, span.span_id]
    assert_nothing_secret(receiver, keys["main"], text)


def test_every_metered_endpoint_has_its_operation(
    traced: GatewayProcess, keys: dict[str, str], receiver: OTLPReceiver, mock_upstream: MockUpstreamProcess
) -> None:
    c = client(traced, keys["main"])
    calls: dict[str, tuple[str, Any]] = {}
    _, _, h = caller()
    c.embeddings.create(model=f"{NS}:mock/emb", input=[MARKER, "two"], extra_headers=h)
    calls["embeddings"] = (h["x-request-id"], None)
    _, _, h = caller()
    c.completions.create(model=f"{NS}:mock/gpt", prompt=MARKER, max_tokens=5, extra_headers=h)
    calls["text_completion"] = (h["x-request-id"], None)
    _, _, h = caller()
    c.responses.create(model=f"{NS}:mock/resp", input=MARKER, max_output_tokens=20, extra_headers=h)
    calls["chat"] = (h["x-request-id"], "responses")
    for operation, (rid, api_type) in calls.items():
        a = span_of(receiver, rid).attributes
        assert a["gen_ai.operation.name"] == operation
        assert a.get("openai.api.type") == api_type
        assert a["gen_ai.usage.input_tokens"] > 0
    assert_nothing_secret(receiver, keys["main"])


def test_a_refused_request_has_an_error_and_reaches_no_upstream(
    traced: GatewayProcess, keys: dict[str, str], receiver: OTLPReceiver, mock_upstream: MockUpstreamProcess
) -> None:
    trace, _, headers = caller()
    with pytest.raises(openai.APIStatusError) as refused:
        client(traced, keys["tiny"]).chat.completions.create(
            model=f"{NS}:mock/gpt", messages=MESSAGES, max_tokens=500, extra_headers=headers
        )
    assert refused.value.status_code == 402
    span = span_of(receiver, headers["x-request-id"])
    assert span.trace_id == trace
    assert span.status == ERROR
    assert span.attributes["error.type"] == "insufficient_quota"
    assert span.attributes["aikeys.status"] == 402
    assert span.attributes["aikeys.allocation"] == "tiny"
    assert "gen_ai.usage.input_tokens" not in span.attributes
    assert not mock_upstream.requests()


def test_a_caller_that_does_not_sample_is_followed(
    traced: GatewayProcess, keys: dict[str, str], receiver: OTLPReceiver, mock_upstream: MockUpstreamProcess
) -> None:
    c = client(traced, keys["main"])
    unsampled, _, headers = caller(sampled=False)
    c.chat.completions.create(model=f"{NS}:mock/gpt", messages=MESSAGES, max_tokens=3, extra_headers=headers)
    _, up_trace, _, flags = upstream_traceparent(mock_upstream).split("-")
    assert (up_trace, int(flags, 16) & 1) == (unsampled, 0)  # the caller's decision, passed on
    _, _, later = caller()
    c.chat.completions.create(model=f"{NS}:mock/gpt", messages=MESSAGES, max_tokens=3, extra_headers=later)
    span_of(receiver, later["x-request-id"])  # spans are exported in order: the unsampled one is not coming
    assert not [s for s in receiver.spans() if s.trace_id == unsampled]


def test_without_a_caller_trace_the_gateway_starts_one(
    traced: GatewayProcess, keys: dict[str, str], receiver: OTLPReceiver, mock_upstream: MockUpstreamProcess
) -> None:
    rid = "trace-test-root-" + secrets.token_hex(4)
    client(traced, keys["main"]).chat.completions.create(
        model=f"{NS}:mock/gpt", messages=MESSAGES, max_tokens=3, extra_headers={"x-request-id": rid}
    )
    span = span_of(receiver, rid)
    assert span.parent_span_id == ""
    assert upstream_traceparent(mock_upstream).split("-")[1:3] == [span.trace_id, span.span_id]


def test_with_tracing_off_nothing_is_propagated(
    gateway: GatewayProcess, keys: dict[str, str], mock_upstream: MockUpstreamProcess
) -> None:
    _, _, headers = caller()
    client(gateway, keys["main"]).chat.completions.create(
        model=f"{NS}:mock/gpt", messages=MESSAGES, max_tokens=3, extra_headers=headers
    )
    seen = mock_upstream.requests()[-1]["headers"]
    assert "traceparent" not in {k.lower() for k in seen}


def helm_template(cp: ControlPlane, *args: str) -> list[dict[str, Any]]:
    rendered = subprocess.run(
        [str(locate().helm), "template", "aikeys", str(REPO_ROOT / "charts" / "aikeys"), *args],
        capture_output=True,
        text=True,
        env=cp.env(),
        check=True,
        timeout=120,
    ).stdout
    return [d for d in yaml.safe_load_all(rendered) if d]


def gateway_env(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    [deployment] = [
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-gateway")
    ]
    return {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_the_chart_passes_the_tracing_values_as_env(control_plane: ControlPlane) -> None:
    example = REPO_ROOT / "examples" / "helm" / "tracing-values.yaml"
    env = gateway_env(helm_template(control_plane, "-f", str(example)))
    assert env["AIKEYS_OTLP_ENDPOINT"]["value"] == "http://otel-collector.observability:4318"
    assert env["OTEL_TRACES_SAMPLER"]["value"] == "parentbased_traceidratio"
    assert env["OTEL_TRACES_SAMPLER_ARG"]["value"] == "0.25"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["OTEL_EXPORTER_OTLP_HEADERS"]["valueFrom"]["secretKeyRef"]["name"] == "otel-collector-auth"
    off = gateway_env(helm_template(control_plane))
    assert not {"AIKEYS_OTLP_ENDPOINT", "OTEL_TRACES_SAMPLER", "POD_NAME"} & off.keys()

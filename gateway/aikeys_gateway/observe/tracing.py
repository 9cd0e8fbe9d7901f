"""OpenTelemetry traces of metered requests (chat, completions, embeddings, responses).

One span per request, from its arrival until its charge is settled (for a stream: after its last
event), following the GenAI semantic conventions: kind CLIENT (the gateway calling a model; it
covers every upstream attempt), named `{gen_ai.operation.name} {gen_ai.request.model}`, with
`gen_ai.*`, `server.*`, `error.type`, and ours under `aikeys.*` (namespace, allocation, key *name*,
model id, provider, charged cost as a USD string, request id, status). Never the key, never the
prompt or the completion: attributes come from the access-log context, numeric request settings,
and the names and ids in the upstream's answer.

W3C trace context: a caller's `traceparent`/`tracestate` is continued (parent-based sampling keeps
its decision), and the upstream request carries this span's `traceparent`.

Off unless an endpoint is configured (`AIKEYS_OTLP_ENDPOINT`, or the standard
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`): then the gateway holds no
tracer, the hooks in proxy.py are one `is not None` test each, and the SDK is never imported.
On, spans are batched and exported over OTLP/HTTP (protobuf) by the SDK's background thread; a
full queue drops spans, it never blocks a request. The standard `OTEL_*` variables apply
(sampler, batch sizes, headers, compression, timeout, resource attributes, service name).

The request path does not go through the SDK's Tracer and Span (≈ 50 µs a request here, most of
it validating each attribute as it is set): the SDK's sampler and id generator decide and name
the span, its attributes are gathered in a dict (values we make: str, int, float, bool, tuple of
str), and the finished span is handed to the SDK's batch processor as a `ReadableSpan`.
"""

from __future__ import annotations

import logging
import re
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace import set_span_in_context as in_context
from opentelemetry.trace.span import TraceState

from aikeys import __version__
from aikeys.estimate import Endpoint, OutputCap
from aikeys.resources import ProviderType
from aikeys_gateway.upstreams.sse import Delegating, Reader, SSEFilter

if TYPE_CHECKING:  # the SDK itself is imported only when tracing is on
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from starlette.requests import Request

    from aikeys_gateway.pipeline.routing import Route

log = logging.getLogger("aikeys.gateway.tracing")

SERVICE_NAME = "aikeys-gateway"
OPERATIONS = {
    Endpoint.CHAT: "chat",
    Endpoint.COMPLETIONS: "text_completion",
    Endpoint.EMBEDDINGS: "embeddings",
    Endpoint.RESPONSES: "chat",  # the OpenAI conventions: a Responses call is a chat inference
}
API_TYPES = {Endpoint.CHAT: "chat_completions", Endpoint.RESPONSES: "responses"}  # openai.api.type
PROVIDER_NAMES = {ProviderType.OPENAI: "openai", ProviderType.AZURE_OPENAI: "azure.ai.openai"}
# numeric request settings (never their text: stop sequences are the caller's content)
SETTINGS = (
    ("temperature", "gen_ai.request.temperature"),
    ("top_p", "gen_ai.request.top_p"),
    ("frequency_penalty", "gen_ai.request.frequency_penalty"),
    ("presence_penalty", "gen_ai.request.presence_penalty"),
    ("seed", "gen_ai.request.seed"),
)
FLAGS = ("translated", "overrun", "client_left", "upstream_broke")  # access-log flags → aikeys.<flag>
# W3C traceparent, read as the OpenTelemetry propagator reads it
TRACEPARENT = re.compile(r"^[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:(-.*)|[ \t]*)$")
TRACEPARENT_MAX = 512
TRACESTATE_MAX = 512
SAMPLED, RANDOM_TRACE_ID = 0x01, 0x02  # trace flags
MAX_TEXT = 256  # longest name or id taken from an upstream's answer
MAX_REASONS = 16

CLIENT = SpanKind.CLIENT  # the gateway calling a model, as the GenAI conventions have it
UNSET, ERROR = Status(StatusCode.UNSET), Status(StatusCode.ERROR)

_current: ContextVar[RequestSpan | None] = ContextVar("aikeys_request_span", default=None)


def _text(value: Any) -> str | None:
    return value[:MAX_TEXT] if isinstance(value, str) and value else None


def _number(value: Any) -> int | float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


class RequestSpan:
    """One metered request's span and the attributes gathered for it until it ends."""

    __slots__ = (
        "attrs",
        "context",
        "first_chunk",
        "operation",
        "parent",
        "recording",
        "sent",
        "start_ns",
        "tracing",
    )

    def __init__(
        self,
        tracing: Tracing,
        context: SpanContext,
        parent: SpanContext | None,
        operation: str,
        attrs: dict[str, Any],
    ):
        self.tracing = tracing
        self.context = context
        self.parent = parent
        self.operation = operation
        self.recording = context.trace_flags.sampled  # sampled out: propagate the context, gather nothing
        self.attrs = attrs
        self.start_ns = time.time_ns()
        self.sent = 0.0  # when the (last) upstream attempt was sent
        self.first_chunk = 0.0  # when a stream's first event arrived

    @property
    def traceparent(self) -> str:
        c = self.context
        return f"00-{c.trace_id:032x}-{c.span_id:016x}-{c.trace_flags:02x}"

    def request(self, body: dict[str, Any], cap: OutputCap, allocation: str) -> None:
        """The validated request: its allocation, output cap and numeric settings."""
        if not self.recording:
            return
        a = self.attrs
        a["aikeys.allocation"] = allocation
        if cap.per_choice:
            a["gen_ai.request.max_tokens"] = cap.per_choice
        n = _number(body.get("n"))
        if isinstance(n, int) and n != 1:
            a["gen_ai.request.choice.count"] = n
        for field, attribute in SETTINGS:
            value = _number(body.get(field))
            if value is not None:
                a[attribute] = value
        fmt = _text(body.get("encoding_format"))
        if fmt is not None:
            a["gen_ai.request.encoding_formats"] = (fmt,)

    def upstream(self, route: Route) -> None:
        """An upstream attempt: which provider, host and model (the last attempt's stay)."""
        self.sent = time.perf_counter()
        if not self.recording:
            return
        p = route.provider
        parts = urlsplit(p.base_url)
        a = self.attrs
        a["gen_ai.provider.name"] = a["gen_ai.system"] = PROVIDER_NAMES.get(p.type, "openai")
        a["gen_ai.request.model"] = route.model.upstream_name
        a["server.address"] = p.host
        a["server.port"] = parts.port or (443 if parts.scheme == "https" else 80)
        a["aikeys.provider"] = f"{p.namespace}:{p.name}"

    def response(self, parsed: Any) -> None:
        """A whole (JSON) answer: its model, id and finish reasons."""
        if self.recording and isinstance(parsed, dict):
            self._answer(parsed)
            self._finish_reasons(parsed)

    def watch(self, sse: SSEFilter) -> None:
        """A stream: read its events on the way past, for the first chunk's time and the answer's
        model, id and finish reasons."""
        sse.inner = _Tap(sse.inner, self)

    def chunk(self, data: Any) -> None:
        if not self.first_chunk:
            self.first_chunk = time.perf_counter()
        if not self.recording or not isinstance(data, dict):
            return
        if "gen_ai.response.model" not in self.attrs:
            response = data.get("response")  # the Responses API's events carry the response object
            self._answer(response if isinstance(response, dict) else data)
        self._finish_reasons(data)

    def _answer(self, answer: dict[str, Any]) -> None:
        a = self.attrs
        model, rid = _text(answer.get("model")), _text(answer.get("id"))
        if model is not None:
            a["gen_ai.response.model"] = model
        if rid is not None:
            a["gen_ai.response.id"] = rid
        fingerprint = _text(answer.get("system_fingerprint"))
        if fingerprint is not None:
            a["openai.response.system_fingerprint"] = fingerprint
        tier = _text(answer.get("service_tier"))
        if tier is not None:
            a["openai.response.service_tier"] = tier

    def _finish_reasons(self, answer: dict[str, Any]) -> None:
        choices = answer.get("choices")
        if not isinstance(choices, list):
            return
        for choice in choices[:MAX_REASONS]:
            reason = _text(choice.get("finish_reason")) if isinstance(choice, dict) else None
            if reason is not None:
                reasons: tuple[str, ...] = self.attrs.get("gen_ai.response.finish_reasons", ())
                if len(reasons) < MAX_REASONS:
                    self.attrs["gen_ai.response.finish_reasons"] = (*reasons, reason)

    def end(self, ctx: dict[str, Any]) -> None:
        """The request is done (answered, and for a stream settled): what the access log says."""
        if self.recording:
            self.tracing.export(self, self._record(ctx))

    def _record(self, ctx: dict[str, Any]) -> bool:
        """The access log's context as attributes; True when the request failed."""
        a = self.attrs
        status = ctx.get("status")
        a["aikeys.request_id"] = ctx["rid"]
        a["aikeys.endpoint"] = ctx["endpoint"]
        for field in ("namespace", "key", "model"):
            if ctx.get(field):
                a[f"aikeys.{field}"] = ctx[field]
        if isinstance(status, int):
            a["aikeys.status"] = status
        if "stream" in ctx:
            a["gen_ai.request.stream"] = bool(ctx["stream"])
        if "input_tokens" in ctx:  # what was charged: reported usage, else counted, else the bound
            a["gen_ai.usage.input_tokens"] = ctx["input_tokens"]
            a["gen_ai.usage.output_tokens"] = ctx["output_tokens"]
            a["aikeys.cost_usd"] = ctx["cost_usd"]
        for flag in FLAGS:
            if ctx.get(flag):
                a[f"aikeys.{flag}"] = True
        if ctx.get("backend"):  # another upstream of the model answered
            a["aikeys.backend"] = str(ctx["backend"])
        if ctx.get("fallbacks"):  # the upstreams tried before it, and why they were left
            a["aikeys.fallbacks"] = tuple(str(f) for f in ctx["fallbacks"])
        if self.first_chunk and self.sent:
            a["gen_ai.response.time_to_first_chunk"] = round(self.first_chunk - self.sent, 6)
        error = _error_type(ctx)
        if error:
            a["error.type"] = error
        return bool(error)


def _error_type(ctx: dict[str, Any]) -> str | None:
    """Our error code, else the upstream's HTTP status passed on, else a stream that broke off."""
    if ctx.get("error"):
        return str(ctx["error"])
    status = ctx.get("status")
    if isinstance(status, int) and status >= 400:
        return str(status)
    return "upstream_broke" if ctx.get("upstream_broke") else None


class _Tap(Delegating):
    """A stream reader that shows each event to the span, then hands it on unchanged."""

    def __init__(self, inner: Reader, span: RequestSpan):
        super().__init__(inner)
        self.span = span

    def read(self, raw: bytes, data: Any) -> bytes:
        self.span.chunk(data)
        return self.inner.read(raw, data)

    def __getattr__(self, name: str) -> Any:  # the reader's own state (e.g. response_id)
        return getattr(self.inner, name)


class Tracing:
    """The gateway's tracer: starts request spans, puts their context on upstream requests, and
    hands finished ones to the SDK's span processor (batching, OTLP export)."""

    def __init__(self, provider: TracerProvider, processor: SpanProcessor):
        from opentelemetry.sdk.trace.sampling import Decision
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self.provider = provider  # its sampler (OTEL_TRACES_SAMPLER), id generator and resource
        self.processor = processor
        self.sampler = provider.sampler
        self.ids = provider.id_generator
        self.random_ids = bool(getattr(self.ids, "is_trace_id_random", lambda: False)())
        self.resource = provider.resource
        self.scope = InstrumentationScope("aikeys.gateway", __version__)
        self.sampled = Decision.RECORD_AND_SAMPLE

    def start(self, request: Request, endpoint: Endpoint) -> RequestSpan:
        """The request's span, child of the caller's `traceparent` when it sent a valid one."""
        parent = self._parent(request.scope["headers"])
        operation = OPERATIONS[endpoint]
        if parent is None:
            trace_id, random_id = self.ids.generate_trace_id(), self.random_ids
        else:
            trace_id, random_id = parent.trace_id, bool(parent.trace_flags & RANDOM_TRACE_ID)
        decision = self.sampler.should_sample(
            None if parent is None else in_context(NonRecordingSpan(parent)), trace_id, operation, CLIENT
        )
        sampled = decision.decision is self.sampled
        flags = (SAMPLED if sampled else 0) | (RANDOM_TRACE_ID if random_id else 0)
        context = SpanContext(
            trace_id,
            self.ids.generate_span_id(),
            is_remote=False,
            trace_flags=TraceFlags(flags),
            trace_state=decision.trace_state,
        )
        attrs: dict[str, Any] = {"gen_ai.operation.name": operation}
        api_type = API_TYPES.get(endpoint)
        if api_type is not None:
            attrs["openai.api.type"] = api_type
        if decision.attributes:
            attrs.update(decision.attributes)
        rs = RequestSpan(self, context, parent, operation, attrs)
        _current.set(rs)  # for inject(), called in this request's task
        return rs

    def _parent(self, headers: list[tuple[bytes, bytes]]) -> SpanContext | None:
        """The caller's span context from `traceparent` (and `tracestate`), if valid."""
        traceparent: str | None = None
        states: list[str] = []
        for name, value in headers:
            if name == b"traceparent" and traceparent is None:
                traceparent = value.decode("latin-1")
            elif name == b"tracestate":
                states.append(value.decode("latin-1"))
        if traceparent is None or len(traceparent) > TRACEPARENT_MAX:
            return None
        match = TRACEPARENT.match(traceparent)
        if match is None:
            return None
        version, trace_id, span_id, flags, rest = match.groups()
        if version == "ff" or (version == "00" and rest) or trace_id == "0" * 32 or span_id == "0" * 16:
            return None
        state = None
        if states and sum(map(len, states)) + len(states) - 1 <= TRACESTATE_MAX:
            state = TraceState.from_header(states)
        return SpanContext(
            int(trace_id, 16),
            int(span_id, 16),
            is_remote=True,
            trace_flags=TraceFlags(int(flags, 16)),
            trace_state=state,
        )

    def inject(self, headers: dict[str, str], route: Route) -> None:
        """An upstream attempt of the current request: W3C trace context into its headers."""
        rs = _current.get()
        if rs is None:
            return
        rs.upstream(route)
        headers["traceparent"] = rs.traceparent
        if rs.context.trace_state:
            headers["tracestate"] = rs.context.trace_state.to_header()

    def export(self, rs: RequestSpan, failed: bool) -> None:
        from opentelemetry.sdk.trace import ReadableSpan

        model = rs.attrs.get("gen_ai.request.model")
        span = ReadableSpan(
            f"{rs.operation} {model}" if model else rs.operation,
            context=rs.context,
            parent=rs.parent,
            resource=self.resource,
            attributes=rs.attrs,
            kind=CLIENT,
            status=ERROR if failed else UNSET,
            start_time=rs.start_ns,
            end_time=time.time_ns(),
            instrumentation_scope=self.scope,
        )
        self.processor.on_end(span)

    def shutdown(self) -> None:
        """Export what is queued (bounded by the exporter's timeout) and stop the exporter thread."""
        self.processor.shutdown()
        self.provider.shutdown()


Pod = tuple[str | None, str | None]  # the gateway's namespace and pod name, when it has them


def build(exporter: SpanExporter, batch: bool = True, pod: Pod = (None, None)) -> Tracing:
    """Tracing for the gateway's resource, exporting through `exporter`; `pod` is the
    (namespace, name) the downward API gave the gateway (config.py reads them)."""
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    ours: dict[str, str] = {"service.name": SERVICE_NAME, "service.version": __version__}
    namespace, name = pod
    if namespace:
        ours["k8s.namespace.name"] = namespace
    if name:
        ours["k8s.pod.name"] = name
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over ours
    resource = Resource.create(ours).merge(OTELResourceDetector().detect())
    provider = TracerProvider(resource=resource)  # sampler: OTEL_TRACES_SAMPLER, else parent-based always-on
    processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    return Tracing(provider, processor)


def setup(endpoint: str, pod: Pod = (None, None)) -> Tracing | None:
    """Tracing to the OTLP/HTTP `endpoint` (a traces URL, config.otlp_endpoint), or None when it
    is empty."""
    if not endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    tracing = build(OTLPSpanExporter(endpoint=endpoint), pod=pod)
    parts = urlsplit(endpoint)  # the host only: a URL may carry credentials
    log.info("tracing on", extra={"access": {"otlp_host": parts.hostname, "otlp_port": parts.port}})
    return tracing

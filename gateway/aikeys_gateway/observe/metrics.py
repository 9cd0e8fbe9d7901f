"""Prometheus series of the gateway (`aikeys_` prefix, base units, `_total` counters).

Latency histograms carry no per-key labels. Per-key counters (`aikeys_key_*`) are on by default
and can be switched off (AIKEYS_METRICS_PER_KEY=false); their cardinality is the number of
AIKeys, which the operator bounds.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)


class Labeled(Generic[M]):
    """A labelled metric whose children are looked up once per set of label values:
    prometheus_client's `labels()` checks and locks on every call, a dozen times a request."""

    __slots__ = ("children", "metric")

    def __init__(self, metric: M):
        self.metric = metric
        self.children: dict[tuple[str, ...], Any] = {}

    def labels(self, *values: str) -> M:
        try:
            return self.children[values]  # type: ignore[no-any-return]
        except KeyError:
            child = self.children[values] = self.metric.labels(*values)
            return child


LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None, per_key: bool = True):
        r = registry or CollectorRegistry()
        self.registry = r
        self.per_key = per_key

        def counter(name: str, doc: str, *labels: str) -> Labeled[Counter]:
            return Labeled(Counter(name, doc, labels, registry=r))

        def gauge(name: str, doc: str, *labels: str) -> Labeled[Gauge]:
            return Labeled(Gauge(name, doc, labels, registry=r))

        def histogram(name: str, doc: str, *labels: str) -> Labeled[Histogram]:
            return Labeled(Histogram(name, doc, labels, buckets=LATENCY_BUCKETS, registry=r))

        self.requests = counter(
            "aikeys_requests_total",
            "Requests answered, by outcome.",
            "namespace",
            "model",
            "endpoint",
            "code",
        )
        self.tokens = counter(
            "aikeys_tokens_total",
            "Tokens charged, by direction (input|output) and kind (input: uncached, cache_read, "
            "cache_write, cache_write_1h, or bound when charged at its bound; output: output).",
            *("namespace", "allocation", "model", "direction", "kind"),
        )
        self.cost = counter(
            "aikeys_cost_usd_total", "USD charged to allocations.", "namespace", "allocation", "model"
        )
        self.key_requests = counter(
            "aikeys_key_requests_total", "Requests charged, per AIKey.", "namespace", "key"
        )
        self.key_cost = counter(
            "aikeys_key_cost_usd_total", "USD charged, per AIKey.", "namespace", "key", "allocation"
        )
        self.request_seconds = histogram(
            "aikeys_request_duration_seconds",
            "Time to answer (or to the end of a stream).",
            *("endpoint", "stream"),
        )
        self.upstream_seconds = histogram(
            "aikeys_upstream_duration_seconds", "Time until the upstream's response headers.", "provider"
        )
        self.upstream_errors = counter(
            "aikeys_upstream_errors_total",
            "Upstream failures (HTTP >= 500, transport, timeouts).",
            *("provider", "kind"),
        )
        self.ledger_errors = Counter(
            "aikeys_ledger_errors_total", "Ledger calls that failed (Redis down or slow).", registry=r
        )
        self.unmetered = Counter(
            "aikeys_unmetered_requests_total",
            "Requests let through without a reservation (fail-open mode).",
            registry=r,
        )
        self.rejected_budget = counter(
            "aikeys_budget_rejections_total", "Requests refused with 402.", "namespace", "allocation"
        )
        self.remaining = gauge(
            "aikeys_allocation_remaining_usd",
            "Budget left in the current period, as last seen.",
            *("namespace", "allocation"),
        )
        self.budget = gauge(
            "aikeys_allocation_budget_usd", "Budget of the current period.", "namespace", "allocation"
        )
        self.cache_objects = gauge("aikeys_cache_objects", "Objects in the gateway's caches.", "kind")
        self.relists = gauge(
            "aikeys_informer_relists", "Full relists done by each informer since start.", "kind"
        )
        self.settle_backlog = Gauge(
            "aikeys_settle_backlog", "Charges waiting for Redis to come back.", registry=r
        )
        self.overruns = counter(
            "aikeys_upstream_overruns_total",
            "Responses whose reported usage cost more than the reservation (an upstream that ignored "
            "the output cap or under-estimated input); charged as reported.",
            *("provider", "model"),
        )
        self.pending_releases = Gauge(
            "aikeys_pending_releases",
            "Reservations of refused requests (Redis timed out) still to be released.",
            registry=r,
        )
        self.streams_abandoned = counter(
            "aikeys_streams_abandoned_total",
            "Streams the client left early; the gateway kept reading the upstream for its usage.",
            "outcome",
        )
        self.rate_limited = counter(
            "aikeys_rate_limited_total",
            "Requests refused with 429 by a rate limit, by scope (model, allocation_or_key).",
            "scope",
        )
        self.background_failures = Counter(
            "aikeys_background_failures_total",
            "Background tasks (settles, read-ons) that failed; their charges were ended anyway.",
            registry=r,
        )
        self.fallbacks = counter(
            "aikeys_upstream_fallbacks_total",
            "Requests sent on to the next backend of a model, by failed and next backend and why.",
            *("failed", "next", "reason"),
        )

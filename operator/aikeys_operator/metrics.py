"""The operator's Prometheus metrics, served over HTTP on $AIKEYS_OPERATOR_METRICS_PORT.

    aikeys_ledger_restores_total{namespace,allocation}    lost ledger data restored from status
    aikeys_upstream_overruns_total{namespace,provider}    responses over their output-token cap
    aikeys_operator_leader                                1 while this replica holds the Lease
    aikeys_operator_ready                                 1 once every AIKey was listed and handled
    aikeys_operator_aikeys / _allocations                 objects in the operator's index
    aikeys_operator_work_queue                            AIKeys waiting to be reconciled
    aikeys_operator_deadlines                             AIKeys with a deadline (expiry, grace end)
    aikeys_operator_keys_minted_total                     keys minted or rotated by this process
    aikeys_operator_status_writes_total{kind}             status refreshes written
    aikeys_operator_status_backlog{kind}                  status refreshes queued (rate-limited)
    aikeys_operator_status_lag_seconds                    how long the oldest queued one has waited
    aikeys_operator_status_keys_compared_total            AIKeys read from the ledger and compared
    aikeys_operator_status_rounds_total                   looks at the ledger

Plus prometheus_client's process and Python collectors. Port 0 serves nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial

from prometheus_client import Counter, Gauge, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import REGISTRY, Collector

log = logging.getLogger("aikeys.operator")

LEDGER_RESTORES = Counter(
    "aikeys_ledger_restores",
    "Times the operator found an Allocation's ledger below its last status in the same period "
    "(Redis lost data) and restored it from the status.",
    ["namespace", "allocation"],
)
UPSTREAM_OVERRUNS = Counter(
    "aikeys_upstream_overruns",
    "Responses whose upstream reported more output tokens than the cap the gateway sent, as the "
    "gateways reported them to the operator.",
    ["namespace", "provider"],
)


LEADER = Gauge(
    "aikeys_operator_leader",
    "1 while this replica works on AIKeys and Allocations (always, without AIKEYS_LEADER_ELECTION).",
)
LEADER.set(1)
READY = Gauge("aikeys_operator_ready", "1 once every AIKey was listed and the ones that needed work had it.")
AIKEYS = Gauge("aikeys_operator_aikeys", "AIKeys in the operator's index.")
ALLOCATIONS = Gauge("aikeys_operator_allocations", "Allocations in the operator's index.")
WORK_QUEUE = Gauge("aikeys_operator_work_queue", "AIKeys waiting to be reconciled (minted, expired, ...).")
DEADLINES = Gauge(
    "aikeys_operator_deadlines", "AIKeys with a pending deadline (expiry, end of a grace period)."
)
BACKLOG = Gauge(
    "aikeys_operator_status_backlog", "Status refreshes queued for the rate-limited writer.", ["kind"]
)
LAG = Gauge(
    "aikeys_operator_status_lag_seconds",
    "How long the oldest queued status refresh has waited: how far a status may be behind the ledger.",
)


@dataclass(frozen=True)
class Readings:
    """What the metrics read of a running controller, at scrape time. The controller hands these
    over (`observe`), so this module knows nothing of it and the import points one way only."""

    ready: Callable[[], bool]
    aikeys: Callable[[], int]  # in the index
    allocations: Callable[[], int]
    work_queue: Callable[[], int]
    deadlines: Callable[[], int]
    backlog: Callable[[str], int]  # status refreshes queued, by kind ("aikeys", "allocations")
    lag: Callable[[], float]
    minted: Callable[[], int]
    status_writes: Callable[[], Mapping[str, int]]  # written, by kind
    keys_compared: Callable[[], int]
    rounds: Callable[[], int]


class _Counters(Collector):
    """Counters kept by the controller itself, read at scrape time."""

    def __init__(self, readings: Readings):
        self.readings = readings

    def collect(self) -> Iterator[Metric]:
        minted = CounterMetricFamily(
            "aikeys_operator_keys_minted", "Keys minted or rotated by this operator process."
        )
        minted.add_metric([], self.readings.minted())
        yield minted
        writes = CounterMetricFamily(
            "aikeys_operator_status_writes", "Status refreshes written to the API server.", labels=["kind"]
        )
        for kind, n in self.readings.status_writes().items():
            writes.add_metric([kind], n)
        yield writes
        compared = CounterMetricFamily(
            "aikeys_operator_status_keys_compared",
            "AIKeys whose spend and last use were read from the ledger and compared with their status "
            "(the keys charged since the last look, every key once after start and once a period).",
        )
        compared.add_metric([], self.readings.keys_compared())
        yield compared
        rounds = CounterMetricFamily(
            "aikeys_operator_status_rounds", "Looks at the ledger for what was charged."
        )
        rounds.add_metric([], self.readings.rounds())
        yield rounds


_observed: list[_Counters] = []


def observe(readings: Readings) -> None:
    """Export a controller's gauges and counters (the last controller started wins)."""
    READY.set_function(lambda: 1.0 if readings.ready() else 0.0)
    AIKEYS.set_function(readings.aikeys)
    ALLOCATIONS.set_function(readings.allocations)
    WORK_QUEUE.set_function(readings.work_queue)
    DEADLINES.set_function(readings.deadlines)
    for kind in ("allocations", "aikeys"):
        BACKLOG.labels(kind).set_function(partial(readings.backlog, kind))
    LAG.set_function(readings.lag)
    while _observed:
        REGISTRY.unregister(_observed.pop())
    _observed.append(_Counters(readings))
    REGISTRY.register(_observed[0])


def serve(port: int, addr: str = "0.0.0.0") -> bool:  # noqa: S104 - scraped from other pods
    """Serve /metrics on `port` in a background thread; False when disabled or the port is taken
    (metrics are not worth failing the operator for: that is logged)."""
    if port == 0:
        return False
    try:
        start_http_server(port, addr)
    except OSError as err:
        log.error("metrics endpoint not served: port %d: %s", port, err)
        return False
    log.info("metrics served on %s:%d/metrics", addr, port)
    return True

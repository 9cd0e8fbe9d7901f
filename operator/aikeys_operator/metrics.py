"""The operator's Prometheus metrics, served over HTTP on $AIKEYS_OPERATOR_METRICS_PORT.

    aikeys_ledger_restores_total{namespace,allocation}    lost ledger data restored from status
    aikeys_upstream_overruns_total{namespace,provider}    responses over their output-token cap

Plus prometheus_client's process and Python collectors. Port 0 serves nothing.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, start_http_server

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

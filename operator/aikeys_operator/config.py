"""Operator settings, from the environment (the Helm chart sets these)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    redis_url: str | None
    gateway_url: str | None  # public base URL written to key Secrets as OPENAI_BASE_URL
    status_interval: float  # seconds between Allocation status refreshes
    watch_server_timeout: int
    watch_client_timeout: int
    metrics_port: int  # Prometheus /metrics; 0: not served
    metrics_addr: str

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            redis_url=os.environ.get("AIKEYS_REDIS_URL") or None,
            gateway_url=(os.environ.get("AIKEYS_GATEWAY_URL") or "").rstrip("/") or None,
            status_interval=float(os.environ.get("AIKEYS_STATUS_INTERVAL", "5")),
            watch_server_timeout=int(os.environ.get("AIKEYS_WATCH_SERVER_TIMEOUT", "600")),
            watch_client_timeout=int(os.environ.get("AIKEYS_WATCH_CLIENT_TIMEOUT", "660")),
            metrics_port=int(os.environ.get("AIKEYS_OPERATOR_METRICS_PORT", "9090")),
            metrics_addr=os.environ.get("AIKEYS_OPERATOR_METRICS_ADDR", "0.0.0.0"),  # noqa: S104
        )

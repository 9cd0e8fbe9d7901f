"""Gateway settings, from the environment (the Helm chart sets these)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from aikeys import credentials
from aikeys.ledger.meter import FailurePolicy
from aikeys_gateway.tracing import otlp_endpoint


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    redis_url: str
    redis_timeout: float = 0.5
    failure_policy: FailurePolicy = FailurePolicy.CLOSED
    max_body_bytes: int = 32 * 1024 * 1024
    max_answer_bytes: int = 64 * 1024 * 1024  # a whole upstream answer larger than this is a 502
    max_event_bytes: int = 8 * 1024 * 1024  # one event of an upstream stream larger than this ends it
    credentials_secret: tuple[str, str] = ("aikeys-system", credentials.DEFAULT_NAME)
    metrics_per_key: bool = True
    lease_seconds: float = 600.0
    watch_timeout: int = 300
    upstream_connect_timeout: float = 10.0
    access_log: bool = True
    body_timeout: float = 60.0  # a request body not complete by then gets 408
    drain_seconds: float = 60.0  # how long to keep reading a stream the client left, for its usage
    upstream_hosts: tuple[str, ...] = ()  # if set, the only upstream hosts the gateway calls
    responses_ttl: int = 30 * 86_400  # how long the owner of a stored response id is remembered
    breaker_failures: int = 3  # failures in a row that take an upstream out (models with backends)
    breaker_open_seconds: float = 30.0  # for this long, then one trial request
    otlp_endpoint: str = ""  # OTLP/HTTP traces URL; empty: tracing off (tracing.py)

    @classmethod
    def from_env(cls, default_namespace: str = "aikeys-system") -> Settings:
        redis_url = os.environ.get("AIKEYS_REDIS_URL")
        if not redis_url:
            raise SystemExit("aikeys-gateway: set AIKEYS_REDIS_URL (redis://, rediss:// or redis+cluster://)")
        return cls(
            redis_url=redis_url,
            redis_timeout=float(os.environ.get("AIKEYS_REDIS_TIMEOUT", "0.5")),
            failure_policy=FailurePolicy.OPEN if _flag("AIKEYS_FAIL_OPEN", False) else FailurePolicy.CLOSED,
            max_body_bytes=int(os.environ.get("AIKEYS_MAX_BODY_BYTES", str(32 * 1024 * 1024))),
            max_answer_bytes=int(os.environ.get("AIKEYS_MAX_ANSWER_BYTES", str(64 * 1024 * 1024))),
            max_event_bytes=int(os.environ.get("AIKEYS_MAX_EVENT_BYTES", str(8 * 1024 * 1024))),
            credentials_secret=credentials.location(os.environ.get("POD_NAMESPACE") or default_namespace),
            metrics_per_key=_flag("AIKEYS_METRICS_PER_KEY", True),
            lease_seconds=float(os.environ.get("AIKEYS_LEASE_SECONDS", "600")),
            watch_timeout=int(os.environ.get("AIKEYS_WATCH_TIMEOUT", "300")),
            upstream_connect_timeout=float(os.environ.get("AIKEYS_UPSTREAM_CONNECT_TIMEOUT", "10")),
            access_log=_flag("AIKEYS_ACCESS_LOG", True),
            body_timeout=float(os.environ.get("AIKEYS_BODY_TIMEOUT", "60")),
            drain_seconds=float(os.environ.get("AIKEYS_STREAM_DRAIN_SECONDS", "60")),
            breaker_failures=int(os.environ.get("AIKEYS_BREAKER_FAILURES", "3")),
            breaker_open_seconds=float(os.environ.get("AIKEYS_BREAKER_OPEN_SECONDS", "30")),
            responses_ttl=int(os.environ.get("AIKEYS_RESPONSES_TTL", str(30 * 86_400))),
            otlp_endpoint=otlp_endpoint(os.environ),
            upstream_hosts=tuple(
                h.strip().lower() for h in os.environ.get("AIKEYS_UPSTREAM_HOSTS", "").split(",") if h.strip()
            ),
        )

"""Gateway settings, from the environment (the Helm chart sets these)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from aikeys import credentials
from aikeys.ledger.meter import FailurePolicy
from aikeys.settings import env_float, env_int
from aikeys_gateway.observe.tracing import otlp_endpoint


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


@dataclass(frozen=True)
class ServerSettings:
    """What the HTTP server accepts from a client, and for how long it waits (serving.py, main.py).

    AIKEYS_MAX_HEADER_BYTES (64 KiB: the request line and headers; past it 431, the connection
    closed), AIKEYS_MAX_HEADERS (100: more header fields, 431), AIKEYS_HEADER_TIMEOUT (10 s from a
    request's first byte to its last header; then 408, closed), AIKEYS_IDLE_TIMEOUT (5 s: a
    connection with no request in progress is closed; the keep-alive timeout, also before the first
    request), AIKEYS_GRACEFUL_SECONDS (30 s: on SIGTERM, how long requests in flight may finish
    before their connections are closed; then abandoned streams are read on for their usage for
    up to AIKEYS_STREAM_DRAIN_SECONDS). Request bodies: AIKEYS_BODY_TIMEOUT (`Settings`)."""

    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    idle_timeout: int = 5  # whole seconds, as uvicorn takes them
    graceful_seconds: int = 30

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerSettings:
        env = os.environ if environ is None else environ
        return cls(
            max_header_bytes=env_int(env, "AIKEYS_MAX_HEADER_BYTES", cls.max_header_bytes, minimum=1024),
            max_headers=env_int(env, "AIKEYS_MAX_HEADERS", cls.max_headers, minimum=8),
            header_timeout=env_float(env, "AIKEYS_HEADER_TIMEOUT", cls.header_timeout, minimum=0.1),
            idle_timeout=env_int(env, "AIKEYS_IDLE_TIMEOUT", cls.idle_timeout, minimum=1),
            graceful_seconds=env_int(env, "AIKEYS_GRACEFUL_SECONDS", cls.graceful_seconds, minimum=0),
        )

"""The gateway's settings, from the environment (the Helm chart sets these), read here only.

`Config.from_env()` reads every variable the gateway process uses, through `aikeys.settings`: a
value that does not parse is a `SettingsError` that names the variable, and `main()` stops with it
(exit code 2) before uvicorn starts. Each settings class lists its variables (`VARIABLES`) for
`aikeys-gateway --help` and docs/configuration.md; a unit test checks that the list is exactly
what its `from_env` reads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar
from urllib.parse import urlsplit

from aikeys import credentials
from aikeys.ledger.meter import FailurePolicy
from aikeys.settings import (
    SettingsError,
    Variable,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_required,
    env_str,
)

TRACES_PATH = "/v1/traces"
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
DEFAULT_NAMESPACE = "aikeys-system"


def _environ(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def otlp_endpoint(environ: Mapping[str, str]) -> str:
    """The OTLP/HTTP traces URL, or "" (tracing off).

    AIKEYS_OTLP_ENDPOINT and OTEL_EXPORTER_OTLP_ENDPOINT are base URLs (`/v1/traces` is appended
    unless already there); OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is the full URL. OTEL_SDK_DISABLED=true
    or OTEL_TRACES_EXPORTER=none turn tracing off whatever is set (OpenTelemetry's own meanings)."""
    disabled = environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    exporter_off = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none"
    found = [
        (name, environ.get(name, "").strip(), full)
        for name, full in (
            ("AIKEYS_OTLP_ENDPOINT", False),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", True),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", False),
        )
    ]
    if disabled or exporter_off:
        return ""
    name, url, full = next(((n, u, f) for n, u, f in found if u), ("", "", False))
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{name}={url!r}: the OTLP endpoint must be an http:// or https:// URL")
    if full or parts.path.rstrip("/").endswith(TRACES_PATH):
        return url
    return url.rstrip("/") + TRACES_PATH


@dataclass(frozen=True)
class Settings:
    """What the request path and the shared clients use (pipeline, ledger, caches, upstreams)."""

    redis_url: str
    redis_timeout: float = 0.5
    failure_policy: FailurePolicy = FailurePolicy.CLOSED
    max_body_bytes: int = 32 * 1024 * 1024
    max_answer_bytes: int = 64 * 1024 * 1024  # a whole upstream answer larger than this is a 502
    max_event_bytes: int = 8 * 1024 * 1024  # one event of an upstream stream larger than this ends it
    credentials_secret: tuple[str, str] = (DEFAULT_NAMESPACE, credentials.DEFAULT_NAME)
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
    redis_password: str | None = field(default=None, repr=False)
    pod_namespace: str | None = None  # the downward API's: where the gateway runs
    pod_name: str | None = None

    VARIABLES: ClassVar[tuple[Variable, ...]] = (
        Variable("AIKEYS_REDIS_URL", "required", "the ledger: redis://, rediss://, redis+cluster://"),
        Variable("AIKEYS_REDIS_PASSWORD", "", "Redis password, when the URL carries none"),
        Variable("AIKEYS_REDIS_TIMEOUT", "0.5", "seconds a Redis call may take before the ledger is down"),
        Variable("AIKEYS_FAIL_OPEN", "false", "true: serve unmetered while the ledger is down (else 503)"),
        Variable("AIKEYS_LEASE_SECONDS", "600", "a reservation's lease; the heartbeat renews live ones"),
        Variable(
            "AIKEYS_CREDENTIALS_SECRET",
            "$POD_NAMESPACE/aikeys-provider-credentials",
            "namespace/name of the Secret of projected provider keys",
        ),
        Variable("POD_NAMESPACE", DEFAULT_NAMESPACE, "the gateway's namespace (downward API)"),
        Variable("POD_NAME", "", "the pod's name, on every span's resource (downward API)"),
        Variable("AIKEYS_WATCH_TIMEOUT", "300", "seconds of each watch request of the caches"),
        Variable("AIKEYS_MAX_BODY_BYTES", "33554432", "a larger request body is refused (413)"),
        Variable("AIKEYS_BODY_TIMEOUT", "60", "seconds for a request body to arrive (else 408)"),
        Variable("AIKEYS_MAX_ANSWER_BYTES", "67108864", "a larger upstream answer is a 502"),
        Variable("AIKEYS_MAX_EVENT_BYTES", "8388608", "a larger stream event ends the stream"),
        Variable("AIKEYS_UPSTREAM_HOSTS", "", "comma-separated: the only upstream hosts called"),
        Variable("AIKEYS_UPSTREAM_CONNECT_TIMEOUT", "10", "seconds to connect to an upstream"),
        Variable("AIKEYS_STREAM_DRAIN_SECONDS", "60", "a stream the client left is read on for its usage"),
        Variable("AIKEYS_BREAKER_FAILURES", "3", "failures in a row that take a backend out"),
        Variable("AIKEYS_BREAKER_OPEN_SECONDS", "30", "for this long, then one trial request"),
        Variable("AIKEYS_RESPONSES_TTL", "2592000", "seconds a stored response's owner is remembered"),
        Variable("AIKEYS_METRICS_PER_KEY", "true", "per-key labels on /metrics"),
        Variable("AIKEYS_ACCESS_LOG", "true", "one JSON line per request"),
        Variable("AIKEYS_OTLP_ENDPOINT", "", "OTLP/HTTP collector for traces (off when unset)"),
        Variable("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "", "the standard variable: full traces URL"),
        Variable("OTEL_EXPORTER_OTLP_ENDPOINT", "", "the standard variable: collector base URL"),
        Variable("OTEL_SDK_DISABLED", "", "true: no traces whatever is set"),
        Variable("OTEL_TRACES_EXPORTER", "", "none: no traces whatever is set"),
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = _environ(environ)
        redis_url = env_required(
            env, "AIKEYS_REDIS_URL", "the ledger's redis://, rediss:// or redis+cluster:// URL"
        )
        if urlsplit(redis_url).scheme not in REDIS_SCHEMES:
            raise SettingsError(f"AIKEYS_REDIS_URL: the scheme must be one of {', '.join(REDIS_SCHEMES)}")
        pod_namespace = env_str(env, "POD_NAMESPACE")
        try:
            secret = credentials.location(
                env_str(env, "AIKEYS_CREDENTIALS_SECRET"), pod_namespace or DEFAULT_NAMESPACE
            )
        except ValueError as err:
            raise SettingsError(f"AIKEYS_CREDENTIALS_SECRET={err}") from None
        return cls(
            redis_url=redis_url,
            redis_password=env_str(env, "AIKEYS_REDIS_PASSWORD"),
            redis_timeout=env_float(env, "AIKEYS_REDIS_TIMEOUT", cls.redis_timeout, minimum=0.001),
            failure_policy=FailurePolicy.OPEN
            if env_bool(env, "AIKEYS_FAIL_OPEN", False)
            else FailurePolicy.CLOSED,
            lease_seconds=env_float(env, "AIKEYS_LEASE_SECONDS", cls.lease_seconds, minimum=1.0),
            credentials_secret=secret,
            pod_namespace=pod_namespace,
            pod_name=env_str(env, "POD_NAME"),
            watch_timeout=env_int(env, "AIKEYS_WATCH_TIMEOUT", cls.watch_timeout, minimum=1),
            max_body_bytes=env_int(env, "AIKEYS_MAX_BODY_BYTES", cls.max_body_bytes, minimum=1),
            body_timeout=env_float(env, "AIKEYS_BODY_TIMEOUT", cls.body_timeout, minimum=0.001),
            max_answer_bytes=env_int(env, "AIKEYS_MAX_ANSWER_BYTES", cls.max_answer_bytes, minimum=1),
            max_event_bytes=env_int(env, "AIKEYS_MAX_EVENT_BYTES", cls.max_event_bytes, minimum=1),
            upstream_hosts=tuple(h.lower() for h in env_list(env, "AIKEYS_UPSTREAM_HOSTS")),
            upstream_connect_timeout=env_float(
                env, "AIKEYS_UPSTREAM_CONNECT_TIMEOUT", cls.upstream_connect_timeout, minimum=0.001
            ),
            drain_seconds=env_float(env, "AIKEYS_STREAM_DRAIN_SECONDS", cls.drain_seconds, minimum=0.0),
            breaker_failures=env_int(env, "AIKEYS_BREAKER_FAILURES", cls.breaker_failures, minimum=1),
            breaker_open_seconds=env_float(
                env, "AIKEYS_BREAKER_OPEN_SECONDS", cls.breaker_open_seconds, minimum=0.0
            ),
            responses_ttl=env_int(env, "AIKEYS_RESPONSES_TTL", cls.responses_ttl, minimum=1),
            metrics_per_key=env_bool(env, "AIKEYS_METRICS_PER_KEY", cls.metrics_per_key),
            access_log=env_bool(env, "AIKEYS_ACCESS_LOG", cls.access_log),
            otlp_endpoint=otlp_endpoint(env),
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

    VARIABLES: ClassVar[tuple[Variable, ...]] = (
        Variable("AIKEYS_MAX_HEADER_BYTES", "65536", "a larger request line and headers: 431, closed"),
        Variable("AIKEYS_MAX_HEADERS", "100", "more header fields: 431, closed"),
        Variable("AIKEYS_HEADER_TIMEOUT", "10", "seconds for a request's headers (else 408, closed)"),
        Variable("AIKEYS_IDLE_TIMEOUT", "5", "seconds a connection may wait with no request"),
        Variable("AIKEYS_GRACEFUL_SECONDS", "30", "on SIGTERM, seconds for the requests in flight"),
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerSettings:
        env = _environ(environ)
        return cls(
            max_header_bytes=env_int(env, "AIKEYS_MAX_HEADER_BYTES", cls.max_header_bytes, minimum=1024),
            max_headers=env_int(env, "AIKEYS_MAX_HEADERS", cls.max_headers, minimum=8),
            header_timeout=env_float(env, "AIKEYS_HEADER_TIMEOUT", cls.header_timeout, minimum=0.1),
            idle_timeout=env_int(env, "AIKEYS_IDLE_TIMEOUT", cls.idle_timeout, minimum=1),
            graceful_seconds=env_int(env, "AIKEYS_GRACEFUL_SECONDS", cls.graceful_seconds, minimum=0),
        )


@dataclass(frozen=True)
class UsageAPISettings:
    """The usage API for the Kubernetes API server (usage/aggregated.py): AIKEYS_USAGE_API_PORT
    (0, the default: not served), AIKEYS_USAGE_API_HOST (0.0.0.0), AIKEYS_USAGE_API_CERT and
    AIKEYS_USAGE_API_KEY (the serving certificate and key, PEM files)."""

    port: int = 0
    host: str = "0.0.0.0"  # noqa: S104 - the API server reaches the pod
    cert_file: str | None = None
    key_file: str | None = None

    VARIABLES: ClassVar[tuple[Variable, ...]] = (
        Variable("AIKEYS_USAGE_API_PORT", "0", "port of `kubectl get keyusages`' API; 0: off"),
        Variable("AIKEYS_USAGE_API_HOST", "0.0.0.0", "its address"),  # noqa: S104
        Variable("AIKEYS_USAGE_API_CERT", "", "its serving certificate (PEM file)"),
        Variable("AIKEYS_USAGE_API_KEY", "", "its private key (PEM file)"),
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> UsageAPISettings:
        env = _environ(environ)
        settings = cls(
            port=env_int(env, "AIKEYS_USAGE_API_PORT", 0, minimum=0),
            host=env_str(env, "AIKEYS_USAGE_API_HOST", cls.host) or cls.host,
            cert_file=env_str(env, "AIKEYS_USAGE_API_CERT"),
            key_file=env_str(env, "AIKEYS_USAGE_API_KEY"),
        )
        if settings.port and not (settings.cert_file and settings.key_file):
            raise SettingsError(
                "AIKEYS_USAGE_API_PORT is set: AIKEYS_USAGE_API_CERT and AIKEYS_USAGE_API_KEY must name "
                "the serving certificate and key"
            )
        return settings


@dataclass(frozen=True)
class UISettings:
    """The web pages (ui/): AIKEYS_UI (default false: no pages), AIKEYS_UI_SESSION_KEY (32+
    characters, the same on every replica; unset: a random key per process),
    AIKEYS_UI_SECURE_COOKIES (auto: Secure when the request came over https, directly or per
    X-Forwarded-Proto; always; never), AIKEYS_UI_SESSION_HOURS (8: how long a sign-in lasts, never
    longer than a token's own expiry), AIKEYS_GATEWAY_URL (the public OpenAI base URL the Connect
    page and new keys' snippets name, as the operator writes it into key Secrets; unset: the URL
    the browser reached the page by)."""

    enabled: bool = False
    session_secret: str | None = field(default=None, repr=False)
    secure_cookies: str = "auto"
    session_hours: float = 8.0
    public_url: str | None = None

    VARIABLES: ClassVar[tuple[Variable, ...]] = (
        Variable("AIKEYS_UI", "false", "true: the web pages under /ui"),
        Variable("AIKEYS_UI_SESSION_KEY", "", "32+ random characters, the same on every replica"),
        Variable("AIKEYS_UI_SECURE_COOKIES", "auto", "auto, always or never"),
        Variable("AIKEYS_UI_SESSION_HOURS", "8", "how long a sign-in lasts"),
        Variable("AIKEYS_GATEWAY_URL", "", "public OpenAI base URL the pages' snippets name"),
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> UISettings:
        env = _environ(environ)
        secret = env_str(env, "AIKEYS_UI_SESSION_KEY")
        if secret is not None and len(secret) < 32:
            raise SettingsError("AIKEYS_UI_SESSION_KEY: use at least 32 random characters")
        public = (env_str(env, "AIKEYS_GATEWAY_URL") or "").rstrip("/") or None
        if public is not None and (
            urlsplit(public).scheme not in ("http", "https") or not urlsplit(public).netloc
        ):
            raise SettingsError(f"AIKEYS_GATEWAY_URL: {public!r} is not an http(s) URL")
        return cls(
            enabled=env_bool(env, "AIKEYS_UI", False),
            session_secret=secret,
            secure_cookies=env_choice(env, "AIKEYS_UI_SECURE_COOKIES", "auto", ("auto", "always", "never")),
            session_hours=env_float(env, "AIKEYS_UI_SESSION_HOURS", 8.0, minimum=0.01),
            public_url=public,
        )


@dataclass(frozen=True)
class Config:
    """Everything a gateway process is configured with, read at once."""

    gateway: Settings
    server: ServerSettings
    usage_api: UsageAPISettings
    ui: UISettings

    SECTIONS: ClassVar[tuple[tuple[str, tuple[Variable, ...]], ...]] = (
        ("The gateway", Settings.VARIABLES),
        ("Clients and shutdown", ServerSettings.VARIABLES),
        ("The usage API (APIService v1alpha1.usage.aikeys.dev)", UsageAPISettings.VARIABLES),
        ("The web pages (/ui: AI Keys, AI Usage, Connect)", UISettings.VARIABLES),
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        env = _environ(environ)
        return cls(
            gateway=Settings.from_env(env),
            server=ServerSettings.from_env(env),
            usage_api=UsageAPISettings.from_env(env),
            ui=UISettings.from_env(env),
        )

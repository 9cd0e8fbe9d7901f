"""Operator settings, from the environment (the Helm chart sets these).

Every variable is read here, and a value that does not parse stops the start with a message that
names the variable (`aikeys.settings`). `VARIABLES` lists them for `aikeys-operator --help` and
docs/configuration.md; a unit test checks that the list is exactly what `from_env` reads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from aikeys import credentials
from aikeys.settings import SettingsError, Variable, env_bool, env_float, env_int, env_str


@dataclass(frozen=True)
class Settings:
    redis_url: str | None
    gateway_url: str | None  # public base URL written to key Secrets as OPENAI_BASE_URL
    status_interval: float  # seconds between looks at the ledger for what was charged
    status_writes_per_second: float  # bound on status refresh writes to the API server
    last_used_granularity: float  # seconds: lastUsedAt alone is rewritten only when it moved this much
    key_workers: int  # AIKeys reconciled (minted, expired, ...) at the same time
    leader_election: bool  # only the replica holding the Lease works on AIKeys and Allocations
    lease_seconds: float  # how long a Lease holds without renewal
    watch_server_timeout: int
    watch_client_timeout: int
    metrics_port: int  # Prometheus /metrics; 0: not served
    metrics_addr: str
    redis_password: str | None = field(default=None, repr=False)
    pod_namespace: str | None = None  # the downward API's: where the operator runs (its Lease)
    credentials_secret: str | None = None  # "namespace/name" of the projected provider credentials

    VARIABLES: ClassVar[tuple[Variable, ...]] = (
        Variable("AIKEYS_REDIS_URL", "", "the ledger; unset: Allocation status is not updated"),
        Variable("AIKEYS_REDIS_PASSWORD", "", "Redis password, when the URL carries none"),
        Variable("AIKEYS_GATEWAY_URL", "", "public base URL written to key Secrets as OPENAI_BASE_URL"),
        Variable(
            "AIKEYS_CREDENTIALS_SECRET",
            "$POD_NAMESPACE/aikeys-provider-credentials",
            "namespace/name of the Secret provider keys are projected into",
        ),
        Variable("POD_NAMESPACE", "the kubeconfig's", "the operator's namespace (downward API)"),
        Variable("AIKEYS_STATUS_INTERVAL", "5", "seconds between looks at the ledger for what was charged"),
        Variable("AIKEYS_STATUS_WRITES_PER_SECOND", "20", "bound on status refresh writes"),
        Variable("AIKEYS_LAST_USED_GRANULARITY", "60", "seconds lastUsedAt alone must move to be written"),
        Variable("AIKEYS_KEY_WORKERS", "16", "AIKeys minted or reconciled at once"),
        Variable("AIKEYS_LEADER_ELECTION", "false", "true: only the Lease holder works on keys"),
        Variable("AIKEYS_LEASE_SECONDS", "15", "how long the Lease holds without renewal"),
        Variable("AIKEYS_WATCH_SERVER_TIMEOUT", "600", "seconds of each watch request (server side)"),
        Variable("AIKEYS_WATCH_CLIENT_TIMEOUT", "660", "seconds of each watch request (client side)"),
        Variable("AIKEYS_OPERATOR_METRICS_PORT", "9090", "Prometheus /metrics; 0: off"),
        Variable("AIKEYS_OPERATOR_METRICS_ADDR", "0.0.0.0", "its address"),  # noqa: S104
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        secret = env_str(env, "AIKEYS_CREDENTIALS_SECRET")
        try:
            credentials.location(secret, "default")  # only its form; the namespace comes later
        except ValueError as err:
            raise SettingsError(f"AIKEYS_CREDENTIALS_SECRET={err}") from None
        return cls(
            redis_url=env_str(env, "AIKEYS_REDIS_URL"),
            redis_password=env_str(env, "AIKEYS_REDIS_PASSWORD"),
            pod_namespace=env_str(env, "POD_NAMESPACE"),
            credentials_secret=secret,
            gateway_url=(env_str(env, "AIKEYS_GATEWAY_URL") or "").rstrip("/") or None,
            status_interval=env_float(env, "AIKEYS_STATUS_INTERVAL", 5.0, minimum=0.05),
            status_writes_per_second=env_float(env, "AIKEYS_STATUS_WRITES_PER_SECOND", 20.0, minimum=0.1),
            last_used_granularity=env_float(env, "AIKEYS_LAST_USED_GRANULARITY", 60.0, minimum=0.0),
            key_workers=env_int(env, "AIKEYS_KEY_WORKERS", 16, minimum=1),
            leader_election=env_bool(env, "AIKEYS_LEADER_ELECTION", False),
            lease_seconds=env_float(env, "AIKEYS_LEASE_SECONDS", 15.0, minimum=1.0),
            watch_server_timeout=env_int(env, "AIKEYS_WATCH_SERVER_TIMEOUT", 600, minimum=1),
            watch_client_timeout=env_int(env, "AIKEYS_WATCH_CLIENT_TIMEOUT", 660, minimum=1),
            metrics_port=env_int(env, "AIKEYS_OPERATOR_METRICS_PORT", 9090, minimum=0),
            metrics_addr=env_str(env, "AIKEYS_OPERATOR_METRICS_ADDR", "0.0.0.0") or "0.0.0.0",  # noqa: S104
        )

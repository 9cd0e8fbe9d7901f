"""The gateway and Redis as the Helm chart installs them, for the benches.

`helm template` renders charts/aikeys with its defaults (or with `--set` overrides, the way a user
changes them); the gateway Deployment's container gives the environment and the worker count, the
bundled Redis's the persistence flags. So what `make bench` measures is what the chart installs
today, whatever its values.yaml says, and a tuned row is named by the chart value it changes.

What cannot come from the chart is made local (`Rendered.env`): Redis's URL, the pod's namespace
and name (the Downward API), the usage API's serving certificate and port (loopback only) and the
pages' session key (a Secret in the cluster). Any other `valueFrom` stops the bench: the chart
grew a setting this file does not know yet.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aikeys_dev.devstack.binaries import locate
from aikeys_dev.devstack.pki import make_ca, sign, write_pair
from aikeys_dev.devstack.processes import free_port

CHART = Path(__file__).resolve().parents[1] / "charts" / "aikeys"
NAMESPACE = "aikeys-system"
RELEASE = "aikeys"
# the Redis flags that change what Redis does per request (the rest are paths and network)
REDIS_FLAGS = ("--appendonly", "--appendfsync", "--save")
# The tuned row beside the chart's defaults: the one default that costs a metered request
# measurably (docs/performance.md, "The figure users get").
TUNED = ("gateway.accessLog=false",)


@dataclass(frozen=True)
class Rendered:
    """The gateway's container and Redis's flags from one rendering of the chart."""

    sets: tuple[str, ...]
    gateway_env: tuple[tuple[str, str | None], ...]  # (name, value); None: a valueFrom to localise
    workers: int
    redis_args: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """The chart values that differ from its defaults, as `--set` takes them."""
        return ", ".join(f"`{s}`" for s in self.sets) or "chart defaults"

    def summary(self) -> str:
        """What the rendered gateway does per request, beyond the metering itself."""
        env = {name: value for name, value in self.gateway_env}

        def on(name: str, default: bool) -> str:
            value = env.get(name)
            return "on" if (default if value is None else value.lower() == "true") else "off"

        usage_api = "on" if "AIKEYS_USAGE_API_PORT" in env else "off"
        tracing = "on" if env.get("AIKEYS_OTLP_ENDPOINT") else "off"
        return (
            f"access log {on('AIKEYS_ACCESS_LOG', True)}, per-key metrics "
            f"{on('AIKEYS_METRICS_PER_KEY', True)}, usage API {usage_api}, pages {on('AIKEYS_UI', False)}, "
            f"tracing {tracing}, {self.workers} worker{'s' if self.workers != 1 else ''}"
        )

    def env(self, redis_url: str, certs: UsageAPICerts) -> dict[str, str]:
        """The gateway's environment on this machine."""
        env: dict[str, str] = {}
        for name, value in self.gateway_env:
            if value is not None:
                env[name] = value
            elif name == "POD_NAMESPACE":
                env[name] = NAMESPACE
            elif name == "POD_NAME":
                env[name] = f"{RELEASE}-gateway-bench"
            elif name == "AIKEYS_UI_SESSION_KEY":
                env[name] = secrets.token_urlsafe(32)
            else:
                raise ValueError(f"the chart sets {name} from a valueFrom this bench does not know")
        env["AIKEYS_REDIS_URL"] = redis_url
        if "AIKEYS_USAGE_API_PORT" in env:  # in the pod: 0.0.0.0:8443 and a mounted Secret
            env["AIKEYS_USAGE_API_PORT"] = str(free_port())
            env["AIKEYS_USAGE_API_HOST"] = "127.0.0.1"
            env["AIKEYS_USAGE_API_CERT"] = str(certs.cert)
            env["AIKEYS_USAGE_API_KEY"] = str(certs.key)
        return env


@dataclass(frozen=True)
class UsageAPICerts:
    """A serving certificate and key for the usage API's listener (the chart makes them too)."""

    cert: Path
    key: Path

    @classmethod
    def create(cls, directory: Path) -> UsageAPICerts:
        directory.mkdir(parents=True, exist_ok=True)
        ca = make_ca("aikeys-usage-api-bench-ca")
        cert, key = sign(ca, "localhost", dns_names=("localhost",), ips=("127.0.0.1",), server=True)
        pair = write_pair(cert, key, directory / "usage-api.crt", directory / "usage-api.key")
        return cls(pair.cert, pair.key)


@dataclass
class Chart:
    """Renders the chart, once per set of overrides."""

    path: Path = CHART
    _cache: dict[tuple[str, ...], Rendered] = field(default_factory=dict)

    def render(self, sets: Sequence[str] = ()) -> Rendered:
        key = tuple(sets)
        if key not in self._cache:
            args = [str(locate().helm), "template", RELEASE, str(self.path), "--namespace", NAMESPACE]
            for s in key:
                args += ["--set", s]
            out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=60).stdout
            self._cache[key] = parse(list(yaml.safe_load_all(out)), key)
        return self._cache[key]


def parse(docs: Sequence[Any], sets: tuple[str, ...] = ()) -> Rendered:
    """The gateway's environment and workers and Redis's flags from the rendered manifests."""
    gateway: dict[str, Any] | None = None
    redis_args: tuple[str, ...] = ()
    for doc in docs:
        if not isinstance(doc, dict) or doc.get("kind") not in ("Deployment", "StatefulSet"):
            continue
        container: dict[str, Any] = doc["spec"]["template"]["spec"]["containers"][0]
        if doc["metadata"]["name"].endswith("-gateway"):
            gateway = container
        elif doc["metadata"]["name"].endswith("-redis"):
            args = [str(a) for a in container.get("args") or []]
            redis_args = tuple(
                x for i in range(len(args) - 1) if args[i] in REDIS_FLAGS for x in (args[i], args[i + 1])
            )
    if gateway is None:
        raise ValueError("the chart rendered no gateway Deployment")
    env = tuple(
        (str(e["name"]), None if "valueFrom" in e else str(e.get("value", "")))
        for e in gateway.get("env") or []
    )
    workers = next(
        (int(a.split("=", 1)[1]) for a in map(str, gateway.get("args") or []) if a.startswith("--workers=")),
        1,
    )
    return Rendered(sets, env, workers, redis_args)

"""aikeys' own processes (operator, gateway) as children, for tests and the dev stack."""

from __future__ import annotations

import os
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from aikeys_dev.devstack.processes import Child, free_port


def _ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback
        return int(resp.status) == 200


@dataclass
class OperatorProcess:
    """`aikeys-operator` running against a kubeconfig, with its liveness endpoint on loopback."""

    kubeconfig: Path
    redis_url: str | None
    log_path: Path
    gateway_url: str | None = None
    status_interval: float = 1.0
    extra_env: dict[str, str] = field(default_factory=dict)
    child: Child | None = None
    port: int = 0
    metrics_port: int = 0

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self, timeout: float = 60) -> OperatorProcess:
        self.port = free_port()
        self.metrics_port = self.metrics_port or free_port()  # never the default 9090 of a shared box
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "AIKEYS_STATUS_INTERVAL": str(self.status_interval),
            "AIKEYS_OPERATOR_METRICS_PORT": str(self.metrics_port),
            "AIKEYS_OPERATOR_METRICS_ADDR": "127.0.0.1",
            **({"AIKEYS_REDIS_URL": self.redis_url} if self.redis_url else {}),
            **({"AIKEYS_GATEWAY_URL": self.gateway_url} if self.gateway_url else {}),
            **self.extra_env,
        }
        argv = [
            sys.executable,
            "-m",
            "aikeys_operator.main",
            "--standalone",
            f"--liveness=http://127.0.0.1:{self.port}/healthz",
        ]
        self.child = Child("aikeys-operator", argv, self.log_path, env=env).start()
        self.child.wait_until(
            lambda: _ok(f"http://127.0.0.1:{self.port}/healthz"), timeout=timeout, what="live"
        )
        return self

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class GatewayProcess:
    """`aikeys-gateway` on a free loopback port, ready when /readyz says so."""

    kubeconfig: Path
    redis_url: str
    log_path: Path
    credentials_secret: str = "aikeys-system/aikeys-provider-credentials"  # noqa: S105 - a name
    extra_env: dict[str, str] = field(default_factory=dict)
    workers: int = 1
    child: Child | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_url(self) -> str:
        """Base URL for OpenAI clients."""
        return f"{self.url}/api/openai/v1"

    def start(self, timeout: float = 60, port: int | None = None) -> GatewayProcess:
        self.port = port or self.port or free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "AIKEYS_REDIS_URL": self.redis_url,
            "AIKEYS_CREDENTIALS_SECRET": self.credentials_secret,
            **self.extra_env,
        }
        argv = [
            sys.executable,
            "-m",
            "aikeys_gateway.main",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]
        self.child = Child(f"aikeys-gateway-{self.port}", argv, self.log_path, env=env).start()
        self.child.wait_until(lambda: _ok(f"{self.url}/readyz"), timeout=timeout, what="ready")
        return self

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

"""A real Prometheus (Debian's package) scraping given targets every second, for end-to-end checks."""

from __future__ import annotations

import json
import shutil
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from aikeys_dev.devstack.processes import Child, free_port


@dataclass
class PrometheusServer:
    port: int
    child: Child

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query; returns the result vector."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback
            body = json.loads(resp.read())
        if body.get("status") != "success":
            raise RuntimeError(f"query failed: {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def stop(self) -> None:
        self.child.stop()


def launch_prometheus(workdir: Path, targets: list[str], interval: str = "1s") -> PrometheusServer:
    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeError("prometheus not found: run `make setup` (installs Debian's prometheus)")
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [{"job_name": "aikeys-gateway", "static_configs": [{"targets": targets}]}],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    argv = [
        binary,
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    child = Child("prometheus", argv, workdir / "prometheus.log").start()
    server = PrometheusServer(port, child)

    def ready() -> bool:
        with urllib.request.urlopen(f"{server.url}/-/ready", timeout=1) as resp:  # noqa: S310
            return int(resp.status) == 200

    child.wait_until(ready, timeout=60)
    return server

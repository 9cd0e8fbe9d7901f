"""The mock OpenAI upstream as a child process on a free loopback port."""

from __future__ import annotations

import json
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aikeys_dev.devstack.processes import Child, free_port


@dataclass
class MockUpstreamProcess:
    port: int
    child: Child

    @property
    def url(self) -> str:
        """Base URL as OpenAI clients take it (…/v1)."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.root + path, data=data, method=method)  # noqa: S310 - loopback
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310
            raw = resp.read()
            return json.loads(raw) if raw else None

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change the mock's behaviour (see `aikeys_dev.mockupstream.behaviour.Behaviour`)."""
        result: dict[str, Any] = self._call("PUT", "/_mock/config", changes)
        return result

    def requests(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/_mock/requests")
        return result

    def clear_requests(self) -> None:
        self._call("DELETE", "/_mock/requests")

    def stop(self) -> None:
        self.child.stop()


def launch_mock_upstream(workdir: Path, *args: str, port: int | None = None) -> MockUpstreamProcess:
    port = port or free_port()
    argv = [sys.executable, "-m", "aikeys_dev.mockupstream", "--port", str(port), *args]
    child = Child(f"mock-upstream-{port}", argv, workdir / f"mock-upstream-{port}.log").start()
    mock = MockUpstreamProcess(port=port, child=child)
    child.wait_until(lambda: mock._call("GET", "/_mock/config") is not None, timeout=30)
    return mock

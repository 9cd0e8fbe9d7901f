"""A benchmark stack: control plane, Redis, mock upstream, operator, gateway, one key."""

from __future__ import annotations

import base64
import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aikeys.devstack.controlplane import ControlPlane, launch
from aikeys.devstack.redis import RedisServer, launch_redis
from aikeys.devstack.services import GatewayProcess, OperatorProcess
from aikeys.devstack.upstream import MockUpstreamProcess, launch_mock_upstream

NS = "bench"
CREDENTIALS = "aikeys-system/aikeys-provider-credentials"


@dataclass
class BenchStack:
    workdir: Path
    cp: ControlPlane
    redis: RedisServer
    mock: MockUpstreamProcess
    operator: OperatorProcess
    key: str

    def gateway(self, workers: int = 1, name: str = "gw") -> GatewayProcess:
        return GatewayProcess(
            self.cp.kubeconfig,
            self.redis.url,
            self.workdir / f"{name}.log",
            CREDENTIALS,
            workers=workers,
            extra_env={"AIKEYS_ACCESS_LOG": "false"},
        ).start()


def _wait(predicate: object, timeout: float) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("bench stack did not come up")
        time.sleep(0.1)


@contextmanager
def bench_stack() -> Iterator[BenchStack]:
    workdir = Path(tempfile.mkdtemp(prefix="aikeys-bench-"))
    cp = launch(workdir / "cp")
    redis = launch_redis(workdir / "redis")
    mock = launch_mock_upstream(workdir)
    cp.kubectl("apply", "--server-side", "-f", str(Path(__file__).resolve().parents[1] / "crds"))
    for crd in ("aikeys", "allocations", "aiproviders"):
        cp.kubectl("wait", "--for=condition=Established", f"crd/{crd}.aikeys.dev", "--timeout=60s")
    cp.kubectl("create", "namespace", NS)
    cp.kubectl("create", "namespace", "aikeys-system")
    operator = OperatorProcess(
        cp.kubeconfig,
        redis.url,
        workdir / "operator.log",
        extra_env={"AIKEYS_CREDENTIALS_SECRET": CREDENTIALS},
    ).start()
    try:
        cp.kubectl(
            "apply",
            "-n",
            NS,
            "-f",
            "-",
            stdin=f"""
apiVersion: aikeys.dev/v1alpha1
kind: AIProvider
metadata: {{name: mock}}
spec:
  baseURL: {mock.url}
  models: [{{name: gpt, inputPricePerMillion: "1.00", outputPricePerMillion: "2.00"}}]
---
apiVersion: aikeys.dev/v1alpha1
kind: Allocation
metadata: {{name: bench}}
spec: {{budget: "1000000", period: None}}
---
apiVersion: aikeys.dev/v1alpha1
kind: AIKey
metadata: {{name: bench}}
spec: {{allocationRef: {{name: bench}}}}
""",
        )

        def secret() -> str | None:
            out = cp.kubectl("get", "secret", "aikey-bench", "-n", NS, "-o", "json", check=False)
            if out.returncode:
                return None
            return base64.b64decode(json.loads(out.stdout)["data"]["OPENAI_API_KEY"]).decode()

        _wait(secret, 30)
        key = secret()
        assert key is not None
        yield BenchStack(workdir, cp, redis, mock, operator, key)
    finally:
        operator.stop()
        mock.stop()
        redis.stop()
        cp.stop()

"""A benchmark stack: control plane, Redis, mock upstream, operator, gateway, one key."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aikeys.devstack.controlplane import ControlPlane, launch
from aikeys.devstack.redis import RedisServer, launch_redis
from aikeys.devstack.services import GatewayProcess, OperatorProcess
from aikeys.devstack.stack import seed_demo
from aikeys.devstack.upstream import MockUpstreamProcess, launch_mock_upstream

MODEL = "demo:mock/gpt-4o-mini"
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


@contextmanager
def bench_stack() -> Iterator[BenchStack]:
    workdir = Path(tempfile.mkdtemp(prefix="aikeys-bench-"))
    cp = launch(workdir / "cp")
    redis = launch_redis(workdir / "redis")
    mock = launch_mock_upstream(workdir)
    cp.kubectl("apply", "--server-side", "-f", str(Path(__file__).resolve().parents[1] / "crds"))
    for crd in ("aikeys", "allocations", "aiproviders"):
        cp.kubectl("wait", "--for=condition=Established", f"crd/{crd}.aikeys.dev", "--timeout=60s")
    cp.kubectl("create", "namespace", "aikeys-system")
    operator = OperatorProcess(
        cp.kubeconfig,
        redis.url,
        workdir / "operator.log",
        extra_env={"AIKEYS_CREDENTIALS_SECRET": CREDENTIALS},
    ).start()
    try:
        key = seed_demo(cp, mock)  # the dev stack's demo namespace: a provider on the mock, 10 USD, one key
        yield BenchStack(workdir, cp, redis, mock, operator, key)
    finally:
        operator.stop()
        mock.stop()
        redis.stop()
        cp.stop()

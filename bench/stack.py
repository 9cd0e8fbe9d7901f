"""A benchmark stack: control plane, Redis, mock upstream, nginx, operator, gateway, one key.

The gateway and Redis run as the Helm chart installs them (bench.chart: its defaults, or the
`--set` overrides a bench names). The key's namespace (`demo`, seeded as by `make dev`) has three
providers with the same model: `mock` on the Python mock upstream (streaming, delays), `nginx`, a
static nginx answering every
chat completion with one fixed 16-token completion (the fastest upstream there is, so what is
measured is the gateway), and `nginx-sse`, the same nginx answering that completion streamed (one
static SSE body, at its `/sse/v1` path). The key names no models, so it may use all three.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aikeys_dev.devstack.controlplane import ControlPlane, launch
from aikeys_dev.devstack.redis import RedisServer, launch_redis
from aikeys_dev.devstack.services import GatewayProcess, OperatorProcess
from aikeys_dev.devstack.stack import seed_demo
from aikeys_dev.devstack.upstream import MockUpstreamProcess, launch_mock_upstream

from bench.chart import Chart, UsageAPICerts
from bench.nginx import Nginx, launch_nginx

MODEL = "demo:mock/gpt-4o-mini"
NGINX_MODEL = "demo:nginx/gpt-4o-mini"
SSE_MODEL = "demo:nginx-sse/gpt-4o-mini"
CREDENTIALS = "aikeys-system/aikeys-provider-credentials"
BUDGET = '{"spec": {"budget": "100000.00"}}'
# Same model and prices as the demo's mock provider; with an API key, as a real upstream has one.
# `nginx-sse` shares the Secret: the same nginx, its streamed answer.
NGINX_PROVIDER = """
apiVersion: v1
kind: Secret
metadata: {{name: nginx-upstream}}
type: aikeys.dev/provider-credentials
stringData: {{apiKey: sk-upstream}}
---
apiVersion: aikeys.dev/v1alpha1
kind: AIProvider
metadata: {{name: nginx}}
spec:
  baseURL: {url}
  credentialsSecretRef: {{name: nginx-upstream}}
  models:
  - {{name: gpt-4o-mini, inputPricePerMillion: "0.15", outputPricePerMillion: "0.60", maxOutputTokens: 4096}}
---
apiVersion: aikeys.dev/v1alpha1
kind: AIProvider
metadata: {{name: nginx-sse}}
spec:
  baseURL: {sse_url}
  credentialsSecretRef: {{name: nginx-upstream}}
  models:
  - {{name: gpt-4o-mini, inputPricePerMillion: "0.15", outputPricePerMillion: "0.60", maxOutputTokens: 4096}}
"""


@dataclass
class BenchStack:
    workdir: Path
    cp: ControlPlane
    redis: RedisServer
    mock: MockUpstreamProcess
    nginx: Nginx
    operator: OperatorProcess
    key: str
    chart: Chart
    certs: UsageAPICerts

    def gateway(
        self, sets: Sequence[str] = (), name: str = "gw", extra_env: dict[str, str] | None = None
    ) -> GatewayProcess:
        """A gateway as the chart installs it with `sets` (`--set` overrides; none: its defaults),
        its log (stdout, the access log included) in the work dir."""
        rendered = self.chart.render(sets)
        return GatewayProcess(
            self.cp.kubeconfig,
            self.redis.url,
            self.workdir / f"{name}.log",
            CREDENTIALS,
            workers=rendered.workers,
            extra_env={**rendered.env(self.redis.url, self.certs), **(extra_env or {})},
        ).start()


@contextmanager
def bench_stack() -> Iterator[BenchStack]:
    workdir = Path(tempfile.mkdtemp(prefix="aikeys-bench-"))
    chart = Chart()
    cp = launch(workdir / "cp")
    redis = launch_redis(workdir / "redis", chart.render().redis_args)  # AOF, as the chart's Redis
    mock = launch_mock_upstream(workdir)
    nginx = launch_nginx()
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
    failed = True
    try:
        key = seed_demo(cp, mock)  # the dev stack's demo namespace: a provider on the mock, 10 USD, one key
        # 10 USD is ≈ 900,000 of the bench's requests, which bench.variants alone nearly spends; past it
        # every answer would be a cheap 402
        cp.kubectl("patch", "allocation", "demo", "-n", "demo", "--type=merge", "-p", BUDGET)
        cp.kubectl(
            "apply",
            "-n",
            "demo",
            "-f",
            "-",
            stdin=NGINX_PROVIDER.format(url=nginx.url, sse_url=nginx.sse_url),
        )
        certs = UsageAPICerts.create(workdir / "usage-api")
        yield BenchStack(workdir, cp, redis, mock, nginx, operator, key, chart, certs)
        failed = False
    finally:
        operator.stop()
        nginx.stop()
        mock.stop()
        redis.stop()
        cp.stop()
        if failed:
            print(f"[bench] logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)  # etcd's data and the logs: ~60 MB a run

"""Everything one gateway process shares between requests, built in one place and run under one
exit stack.

`Services(config)` builds every object at once, complete (no I/O yet: the clients connect on first
use). `running()` is the app's only lifespan: it starts the caches' watches, the ledger's
background tasks and the usage API's listener, and on the way out stops everything in the reverse
order — the usage API's listener, the pages' connection pool, then the settles still running in
the background (`Pipeline.drain`), the last spans, the background tasks, the caches, the upstream
and Kubernetes clients, Redis. The routers get the parts they use (app.py), never this object.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

from aikeys import __version__
from aikeys.kube import config as kubeconfig
from aikeys.kube.client import KubeClient
from aikeys.ledger.meter import Meter
from aikeys.ledger.store import Ledger, RedisClient, connect, pipelined
from aikeys_gateway.cache.catalog import Catalog
from aikeys_gateway.config import Config
from aikeys_gateway.kubeauth import KubeAuth
from aikeys_gateway.observe.metrics import Metrics
from aikeys_gateway.observe.tracing import setup as setup_tracing
from aikeys_gateway.pipeline.pipeline import Pipeline
from aikeys_gateway.surfaces.openai.stored import StoredResponses
from aikeys_gateway.surfaces.openai.surface import OpenAISurface
from aikeys_gateway.ui.person import Connections
from aikeys_gateway.upstreams.client import Client
from aikeys_gateway.usage.aggregated import UsageServer


class RedisHealth:
    """Whether Redis answered its last ping (once a second, for /readyz); also keeps the gauge of
    releases waiting for Redis current."""

    def __init__(self, redis: RedisClient, meter: Meter, metrics: Metrics, interval: float = 1.0):
        self.redis = redis
        self.meter = meter
        self.metrics = metrics
        self.interval = interval
        self.ok = False

    async def run(self) -> None:
        while True:
            try:
                self.ok = bool(await self.redis.ping())
            except Exception:
                self.ok = False
            self.metrics.pending_releases.set(self.meter.pending_releases)
            await asyncio.sleep(self.interval)


class Services:
    """The process's shared objects; see the module docstring for their start and stop."""

    def __init__(self, config: Config):
        s = config.gateway
        self.config = config
        self.kube = KubeClient(kubeconfig.load(), user_agent=f"aikeys-gateway/{__version__}")
        self.catalog = Catalog(self.kube, s.credentials_secret, s.watch_timeout)
        self.redis = connect(
            s.redis_url, timeout=s.redis_timeout, max_connections=256, password=s.redis_password
        )
        # the hot path's own connection for the ledger's scripts (None on Redis Cluster)
        self.scripts = pipelined(s.redis_url, timeout=s.redis_timeout, password=s.redis_password)
        self.ledger = Ledger(self.redis, lease=dt.timedelta(seconds=s.lease_seconds), pipelined=self.scripts)
        self.meter = Meter(self.ledger, s.failure_policy)
        self.metrics = Metrics(per_key=s.metrics_per_key)
        self.http = Client(connect_timeout=s.upstream_connect_timeout)
        self.stored = StoredResponses(self.redis, s.responses_ttl, s.max_answer_bytes)
        self.tracer = setup_tracing(s.otlp_endpoint, (s.pod_namespace, s.pod_name))  # None: off
        self.pipeline = Pipeline(s, self.catalog, self.meter, self.metrics, self.http, tracer=self.tracer)
        self.openai = OpenAISurface(self.catalog, self.stored)
        self.kubeauth = KubeAuth(self.kube)
        self.redis_health = RedisHealth(self.redis, self.meter, self.metrics)
        api = config.usage_api
        self.usage_api = UsageServer(api, self.kube, self.catalog, self.ledger) if api.port else None
        # the web pages send each person's requests to the API server over one pool of their own
        self.connections = Connections(self.kube.config) if config.ui.enabled else None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Start; on leaving (or a failed start), stop what was started, last started first."""
        async with contextlib.AsyncExitStack() as stack:
            if self.scripts is not None:
                stack.push_async_callback(self.scripts.close)
            stack.push_async_callback(self.redis.aclose)
            stack.push_async_callback(self.kube.close)
            stack.push_async_callback(self.http.close)
            self.catalog.start()
            stack.push_async_callback(self.catalog.stop)
            with contextlib.suppress(Exception):  # open the pool now, not on the first requests
                await asyncio.gather(*(self.redis.ping() for _ in range(32)))
            tasks = [
                asyncio.create_task(self.meter.run_drainer()),
                asyncio.create_task(self.meter.run_heartbeat()),  # long streams keep their leases
                asyncio.create_task(self.redis_health.run()),
            ]
            stack.push_async_callback(_cancel, tasks)
            if self.tracer is not None:  # export the last spans (bounded by the exporter's timeout)
                stack.push_async_callback(asyncio.to_thread, self.tracer.shutdown)
            stack.push_async_callback(self.pipeline.drain)  # settles in the background finish first
            if self.connections is not None:
                stack.push_async_callback(self.connections.close)
            if self.usage_api is not None:
                await self.usage_api.start()
                stack.push_async_callback(self.usage_api.stop)
            yield


async def _cancel(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

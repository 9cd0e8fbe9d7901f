"""The gateway's ASGI app: routes, start-up and shutdown of the shared clients."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from aikeys import __version__
from aikeys.estimate import Endpoint
from aikeys.kube import config as kubeconfig
from aikeys.kube.client import KubeClient
from aikeys.ledger.meter import Meter
from aikeys.ledger.store import Ledger, connect, pipelined
from aikeys_gateway import errors, ui
from aikeys_gateway.cache.catalog import Catalog
from aikeys_gateway.config import Settings
from aikeys_gateway.kubeauth import KubeAuth
from aikeys_gateway.observe.logs import configure_logging
from aikeys_gateway.observe.metrics import Metrics
from aikeys_gateway.observe.tracing import setup as setup_tracing
from aikeys_gateway.pipeline.intake import request_id
from aikeys_gateway.pipeline.pipeline import Pipeline
from aikeys_gateway.surfaces.openai import routes as openai_routes
from aikeys_gateway.surfaces.openai.routes import PREFIX
from aikeys_gateway.surfaces.openai.stored import StoredResponses
from aikeys_gateway.surfaces.openai.surface import OpenAISurface
from aikeys_gateway.upstreams.client import Client
from aikeys_gateway.usage import api as reports

log = logging.getLogger("aikeys.gateway")
UNLOGGED = frozenset({"/healthz", "/readyz", "/metrics"})  # probes and scrapes: not traffic
T = TypeVar("T")


class State:
    """Everything one gateway process shares between requests."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.redis_ok = False
        self.tasks: list[asyncio.Task[Any]] = []

    async def start(self) -> None:
        s = self.settings
        cfg = kubeconfig.load()
        self.kube = KubeClient(cfg, user_agent=f"aikeys-gateway/{__version__}")
        self.catalog = Catalog(self.kube, s.credentials_secret, s.watch_timeout)
        self.redis = connect(s.redis_url, timeout=s.redis_timeout, max_connections=256)
        self.scripts = pipelined(s.redis_url, timeout=s.redis_timeout)  # the hot path's own connection
        ledger = Ledger(self.redis, lease=dt.timedelta(seconds=s.lease_seconds), pipelined=self.scripts)
        self.meter = Meter(ledger, s.failure_policy)
        self.metrics = Metrics(per_key=s.metrics_per_key)
        self.http = Client(connect_timeout=s.upstream_connect_timeout)
        self.stored = StoredResponses(self.redis, s.responses_ttl, s.max_answer_bytes)
        tracer = setup_tracing(s.otlp_endpoint)  # None: tracing off
        self.gateway = Pipeline(s, self.catalog, self.meter, self.metrics, self.http, tracer=tracer)
        self.openai = OpenAISurface(self.catalog, self.stored)
        self.kubeauth = KubeAuth(self.kube)
        self.catalog.start()
        with contextlib.suppress(Exception):  # open the pool now, not on the first requests
            await asyncio.gather(*(self.redis.ping() for _ in range(32)))
        self.tasks = [
            asyncio.create_task(self.meter.run_drainer()),
            asyncio.create_task(self.meter.run_heartbeat()),  # long streams keep their leases
            asyncio.create_task(self._watch_redis()),
        ]

    async def _watch_redis(self) -> None:
        while True:
            try:
                self.redis_ok = bool(await self.redis.ping())
            except Exception:
                self.redis_ok = False
            self.metrics.pending_releases.set(self.meter.pending_releases)
            await asyncio.sleep(1.0)

    async def stop(self) -> None:
        await self.gateway.drain()
        if self.gateway.tracer is not None:  # export the last spans (bounded by the exporter's timeout)
            await asyncio.to_thread(self.gateway.tracer.shutdown)
        for task in self.tasks:
            task.cancel()
        await self.catalog.stop()
        await self.http.close()
        await self.kube.close()
        await self.redis.aclose()
        if self.scripts is not None:
            await self.scripts.close()


class FastPath:
    """Sends the three metered POST routes straight to the gateway, around FastAPI's middleware
    and dependency machinery (about a sixth of a request's CPU); everything else goes to FastAPI."""

    def __init__(self, app: FastAPI, state: State):
        self.app = app
        self.state = state
        self.routes = {f"{PREFIX}/{e.value}": e for e in Endpoint}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        endpoint = self.routes.get(scope.get("path", "")) if scope["type"] == "http" else None
        if endpoint is None or scope["method"] != "POST":
            if scope["type"] != "http" or scope.get("path") in UNLOGGED:
                await self.app(scope, receive, send)
            else:
                await self._observed(scope, receive, send)
            return
        request = Request(scope, receive)
        response = await self.state.gateway.handle(request, self.state.openai, endpoint)  # never raises
        await response(scope, receive, send)

    async def _observed(self, scope: Any, receive: Any, send: Any) -> None:
        """Every other request — known or unknown URL, any status — in the access log and in
        aikeys_requests_total, under its route's template (or "unmatched"), with its request id."""
        started = time.perf_counter()
        rid = request_id(Request(scope))
        if not any(name == b"x-request-id" for name, _ in scope["headers"]):
            scope["headers"] = [*scope["headers"], (b"x-request-id", rid.encode())]
        status = 500

        async def sending(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            self.state.gateway.observe(
                scope["method"], label.removeprefix(PREFIX + "/"), status, started, rid
            )


def create_app(settings: Settings | None = None) -> FastPath:
    settings = settings or Settings.from_env()
    configure_logging()
    state = State(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.start()
        yield
        await state.stop()

    app = FastAPI(
        title="aikeys gateway",
        version=__version__,
        lifespan=lifespan,
        description="OpenAI-compatible API with AI keys and budgets. "
        "Authenticate with `Authorization: Bearer <key>`.",
    )
    app.state.aikeys = state

    @app.exception_handler(errors.GatewayError)
    async def gateway_error(request: Request, exc: errors.GatewayError) -> Response:
        return exc.response(request_id(request))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            err = errors.GatewayError(
                404,
                f"Unknown request URL: {request.method} {request.url.path}.",
                "invalid_request_error",
                "unknown_url",
            )
        else:
            err = errors.GatewayError(exc.status_code, str(exc.detail), "invalid_request_error")
        return err.response(request_id(request))

    def proxy(endpoint: Endpoint) -> Any:
        async def handler(request: Request) -> Response:
            return await state.gateway.handle(request, state.openai, endpoint)

        handler.__name__ = endpoint.name.lower()
        handler.__doc__ = f"OpenAI-compatible `POST /{endpoint.value}`, metered against the key's Allocation."
        return handler

    for endpoint in Endpoint:
        app.add_api_route(f"{PREFIX}/{endpoint.value}", proxy(endpoint), methods=["POST"], tags=["openai"])

    app.include_router(openai_routes.router(state))

    @app.exception_handler(RequestValidationError)
    async def invalid_query(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        param = str(first.get("loc", ["", ""])[-1])
        err = errors.invalid_request(
            f"Invalid value for '{param}': {first.get('msg', 'invalid')}.", param=param
        )
        return err.response(request_id(request))

    app.include_router(reports.router(state))
    ui_settings = ui.Settings.from_env()
    if ui_settings.enabled:  # the web pages under /ui (AIKEYS_UI=true)
        app.include_router(ui.router(state, ui_settings))

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> Response:
        """The process is alive."""
        return Response("ok", media_type="text/plain")

    @app.get("/readyz", tags=["ops"])
    async def readyz() -> Response:
        """Ready when every cache has done its first list and Redis answers."""
        synced = {i.kind: i.synced.is_set() for i in state.catalog.informers}
        ready = all(synced.values()) and state.redis_ok
        return JSONResponse(
            {"ready": ready, "caches": synced, "redis": state.redis_ok}, status_code=200 if ready else 503
        )

    @app.get("/metrics", tags=["ops"])
    async def metrics() -> Response:
        """Prometheus metrics."""
        m = state.metrics
        for kind, size in state.catalog.sizes().items():
            m.cache_objects.labels(kind).set(size)
        for informer in state.catalog.informers:
            m.relists.labels(informer.kind).set(informer.relists)
        m.settle_backlog.set(len(state.meter.backlog))
        return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)

    return FastPath(app, state)

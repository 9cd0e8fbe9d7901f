"""The gateway's ASGI app: the routes, each router given the services it uses (services.py,
whose `running()` is the app's one lifespan)."""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from aikeys import __version__
from aikeys.estimate import Endpoint
from aikeys_gateway import errors
from aikeys_gateway.config import Config
from aikeys_gateway.observe.logs import configure_logging
from aikeys_gateway.pipeline.intake import request_id
from aikeys_gateway.pipeline.pipeline import Pipeline
from aikeys_gateway.pipeline.surface import Surface
from aikeys_gateway.services import Services
from aikeys_gateway.surfaces.openai import routes as openai_routes
from aikeys_gateway.surfaces.openai.routes import PREFIX
from aikeys_gateway.usage import api as reports

log = logging.getLogger("aikeys.gateway")
UNLOGGED = frozenset({"/healthz", "/readyz", "/metrics"})  # probes and scrapes: not traffic


class FastPath:
    """Sends the metered POST routes of every surface straight to the pipeline, around FastAPI's
    middleware and dependency machinery (about a sixth of a request's CPU); everything else goes to
    FastAPI."""

    def __init__(self, app: FastAPI, pipeline: Pipeline, routes: dict[str, tuple[Surface, Endpoint]]):
        self.app = app
        self.pipeline = pipeline
        self.routes = routes  # path → the surface and endpoint it serves

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        metered = self.routes.get(scope.get("path", "")) if scope["type"] == "http" else None
        if metered is None or scope["method"] != "POST":
            if scope["type"] != "http" or scope.get("path") in UNLOGGED:
                await self.app(scope, receive, send)
            else:
                await self._observed(scope, receive, send)
            return
        request = Request(scope, receive)
        response = await self.pipeline.handle(request, *metered)  # never raises
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
            self.pipeline.observe(scope["method"], label.removeprefix(PREFIX + "/"), status, started, rid)


def create_app(config: Config) -> FastPath:
    configure_logging()
    services = Services(config)
    pipeline, catalog, openai = services.pipeline, services.catalog, services.openai
    metered: dict[str, tuple[Surface, Endpoint]] = {f"{PREFIX}/{e.value}": (openai, e) for e in Endpoint}
    app = FastAPI(
        title="aikeys gateway",
        version=__version__,
        lifespan=lambda _app: services.running(),
        description="OpenAI-compatible API with AI keys and budgets. "
        "Authenticate with `Authorization: Bearer <key>`.",
    )

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

    def proxy(surface: Surface, endpoint: Endpoint) -> Any:
        async def handler(request: Request) -> Response:
            return await pipeline.handle(request, surface, endpoint)

        handler.__name__ = endpoint.name.lower()
        handler.__doc__ = f"OpenAI-compatible `POST /{endpoint.value}`, metered against the key's Allocation."
        return handler

    for path, (surface, endpoint) in metered.items():
        app.add_api_route(path, proxy(surface, endpoint), methods=["POST"], tags=[surface.name])

    app.include_router(openai_routes.router(catalog, services.stored, services.http))

    @app.exception_handler(RequestValidationError)
    async def invalid_query(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        param = str(first.get("loc", ["", ""])[-1])
        err = errors.invalid_request(
            f"Invalid value for '{param}': {first.get('msg', 'invalid')}.", param=param
        )
        return err.response(request_id(request))

    app.include_router(reports.router(catalog, services.ledger, services.kubeauth))
    if services.connections is not None:  # the web pages under /ui (AIKEYS_UI=true)
        from aikeys_gateway.ui import routes as ui_routes  # cryptography and the pages load only then
        from aikeys_gateway.ui.web import UI

        pages = UI(
            config.ui,
            catalog,
            services.ledger,
            services.kubeauth,
            services.connections,
            config.gateway.body_timeout,
        )
        app.include_router(ui_routes.router(pages))

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> Response:
        """The process is alive."""
        return Response("ok", media_type="text/plain")

    @app.get("/readyz", tags=["ops"])
    async def readyz() -> Response:
        """Ready when every cache has done its first list and Redis answers."""
        redis_ok = services.redis_health.ok
        synced = {i.kind: i.synced.is_set() for i in catalog.informers}
        ready = all(synced.values()) and redis_ok
        return JSONResponse(
            {"ready": ready, "caches": synced, "redis": redis_ok}, status_code=200 if ready else 503
        )

    @app.get("/metrics", tags=["ops"])
    async def metrics() -> Response:
        """Prometheus metrics."""
        m = services.metrics
        for kind, size in catalog.sizes().items():
            m.cache_objects.labels(kind).set(size)
        for informer in catalog.informers:
            m.relists.labels(informer.kind).set(informer.relists)
        m.settle_backlog.set(len(services.meter.backlog))
        return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)

    return FastPath(app, pipeline, metered)

"""One request through the gateway: authenticate → route → reserve → upstream → settle.

authenticate (auth) ─► resolve model (routing) ─► estimate ─► reserve (ledger, 402 if it
cannot be covered) ─► upstream (aiohttp) ─► JSON: settle with its usage, answer
                                          └► SSE: forward each event, settle when it ends
                                             (also when the client leaves or the upstream breaks)
upstream error or transport failure ─► release the reservation, OpenAI-shaped error
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import aiohttp
import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from aikeys.estimate import Endpoint, estimate
from aikeys.ledger.meter import UNMETERED, Meter, PendingSettle
from aikeys.ledger.store import Allocation, Estimate, LedgerUnavailable, ReserveStatus
from aikeys.money import NANO_PER_USD, format_usd
from aikeys_gateway import errors
from aikeys_gateway.auth import authenticate
from aikeys_gateway.catalog import Catalog, KeyEntry
from aikeys_gateway.config import Settings
from aikeys_gateway.metrics import Metrics
from aikeys_gateway.routing import Route, resolve
from aikeys_gateway.streaming import SSEFilter, count_output, response_text

log = logging.getLogger("aikeys.gateway.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_REQUIRED = {Endpoint.CHAT: "messages", Endpoint.COMPLETIONS: "prompt", Endpoint.EMBEDDINGS: "input"}


def request_id(request: Request) -> str:
    given = request.headers.get("x-request-id")
    return given if given and _REQUEST_ID.match(given) else uuid.uuid4().hex


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise errors.too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise errors.too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise errors.invalid_request(f"We could not parse the JSON body of your request: {err}.") from err
    if not isinstance(body, dict):
        raise errors.invalid_request("The request body must be a JSON object.")
    return body


def validate(endpoint: Endpoint, body: dict[str, Any]) -> None:
    field = _REQUIRED[endpoint]
    value = body.get(field)
    if value is None or value in ("", []):
        raise errors.invalid_request(
            f"Missing required parameter: '{field}'.", param=field, code="missing_required_parameter"
        )
    if endpoint is Endpoint.CHAT and not (
        isinstance(value, list) and all(isinstance(m, dict) for m in value)
    ):
        raise errors.invalid_request(
            "'messages' must be an array of message objects.", param="messages", code="invalid_type"
        )
    if "stream" in body and not isinstance(body["stream"], bool):
        raise errors.invalid_request("'stream' must be a boolean.", param="stream", code="invalid_type")
    for name in ("max_tokens", "max_completion_tokens", "n"):
        v = body.get(name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise errors.invalid_request(
                f"'{name}' must be a positive integer.", param=name, code="invalid_type"
            )
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise errors.invalid_request(
            "'stream_options' must be an object.", param="stream_options", code="invalid_type"
        )


class Gateway:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        meter: Meter,
        metrics: Metrics,
        http: aiohttp.ClientSession,
        clock: Callable[[], float] = time.time,
    ):
        self.settings = settings
        self.catalog = catalog
        self.meter = meter
        self.metrics = metrics
        self.http = http
        self.clock = clock
        self._background: set[asyncio.Task[Any]] = set()

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run outside the request's cancellation scope (a client leaving must not stop a charge)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    # --- the request ------------------------------------------------------------------------------

    async def handle(self, request: Request, endpoint: Endpoint) -> Response:
        started = time.perf_counter()
        rid = request_id(request)
        ctx: dict[str, Any] = {"rid": rid, "endpoint": endpoint.value}
        try:
            response = await self._handle(request, endpoint, rid, ctx, started)
        except errors.GatewayError as err:
            response = err.response(rid)
            ctx["error"] = err.code or err.type
        ctx["status"] = response.status_code
        if not isinstance(response, StreamingResponse):
            self._finish(ctx, started)
        return response

    def _finish(self, ctx: dict[str, Any], started: float) -> None:
        elapsed = time.perf_counter() - started
        m = self.metrics
        m.requests.labels(
            ctx.get("namespace", ""), ctx.get("model", ""), ctx["endpoint"], str(ctx["status"])
        ).inc()
        m.request_seconds.labels(ctx["endpoint"], "true" if ctx.get("stream") else "false").observe(elapsed)
        if self.settings.access_log:
            ctx["ms"] = round(elapsed * 1000, 2)
            log.info("request", extra={"access": ctx})

    async def _handle(
        self, request: Request, endpoint: Endpoint, rid: str, ctx: dict[str, Any], started: float
    ) -> Response:
        raw = await read_body(request, self.settings.max_body_bytes)
        key = authenticate(request.headers, self.catalog, self.now())
        ctx.update(namespace=key.namespace, key=key.name)
        body = parse_json_object(raw)
        route = resolve(body.get("model"), key, self.catalog)
        ctx["model"] = route.model_id
        validate(endpoint, body)
        alloc = self.catalog.allocation(key.namespace, key.allocation)
        if alloc is None:
            raise errors.forbidden(
                f"This key's Allocation {key.namespace}/{key.allocation} does not exist.",
                code="allocation_not_found",
            )
        stream = bool(body.get("stream")) and endpoint is not Endpoint.EMBEDDINGS
        ctx["stream"] = stream
        est = estimate(
            endpoint, body, route.model.upstream_name, route.model.price, route.model.max_output_tokens
        )
        ledger_rid = uuid.uuid4().hex
        await self._reserve(alloc, ledger_rid, key, route, est)
        client_wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        upstream_body = dict(body)
        upstream_body["model"] = route.model.upstream_name
        if stream and route.provider.stream_usage:
            upstream_body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        try:
            resp = await self._send(route, endpoint, upstream_body)
        except errors.GatewayError:  # the upstream never took the request
            await self.meter.release(alloc, ledger_rid)
            raise
        except BaseException:  # cancelled mid-call: the upstream may be generating, charge the upper bound
            self.spawn(
                self.meter.settle(
                    PendingSettle(
                        alloc,
                        ledger_rid,
                        key.name,
                        route.model_id,
                        est.input_tokens,
                        est.output_tokens,
                        est.cost,
                    )
                )
            )
            raise
        if resp.status >= 400:
            await self.meter.release(alloc, ledger_rid)
            return await self._upstream_error(resp, route, rid)
        charge = _Charge(self, alloc, ledger_rid, key, route, est, ctx)
        if not stream:
            return await self._json(resp, charge, rid)
        return self._stream(resp, charge, SSEFilter(client_wants_usage), rid, started)

    async def _reserve(
        self, alloc: Allocation, ledger_rid: str, key: KeyEntry, route: Route, est: Estimate
    ) -> None:
        try:
            outcome = await self.meter.reserve(alloc, ledger_rid, key.name, route.model_id, est)
        except LedgerUnavailable as err:
            self.metrics.ledger_errors.inc()
            raise errors.unavailable(
                "The budget ledger is unreachable; no request is served unmetered. Retry shortly."
            ) from err
        if outcome is UNMETERED:
            self.metrics.unmetered.inc()
            return
        self.metrics.budget.labels(alloc.namespace, alloc.name).set(alloc.budget / NANO_PER_USD)
        if outcome.accepted:
            return
        self.metrics.rejected_budget.labels(alloc.namespace, alloc.name).inc()
        if outcome.status is ReserveStatus.OVER_TOKEN_LIMIT:
            raise errors.insufficient_quota(
                f"Allocation {alloc.namespace}/{alloc.name} has reached its token limit for this period."
            )
        remaining = max(alloc.budget - outcome.spent - outcome.reserved, 0)
        self.metrics.remaining.labels(alloc.namespace, alloc.name).set(
            max(alloc.budget - outcome.spent, 0) / NANO_PER_USD
        )
        raise errors.insufficient_quota(
            f"You exceeded your current quota: allocation {alloc.namespace}/{alloc.name} has "
            f"{format_usd(remaining)} USD left this period and this request may cost up to "
            f"{format_usd(est.cost)} USD (lower max_tokens or ask for a larger budget)."
        )

    async def _send(self, route: Route, endpoint: Endpoint, body: dict[str, Any]) -> aiohttp.ClientResponse:
        headers = {"Content-Type": "application/json", **route.auth_headers()}
        timeout = aiohttp.ClientTimeout(
            total=route.provider.timeout_seconds, sock_connect=self.settings.upstream_connect_timeout
        )
        started = time.perf_counter()
        provider = f"{route.provider.namespace}:{route.provider.name}"
        try:
            resp = await self.http.post(
                route.url(endpoint.value), data=orjson.dumps(body), headers=headers, timeout=timeout
            )
        except TimeoutError as err:
            self.metrics.upstream_errors.labels(provider, "timeout").inc()
            raise errors.gateway_timeout(f"The upstream {provider} did not answer in time.") from err
        except aiohttp.ClientError as err:
            self.metrics.upstream_errors.labels(provider, "transport").inc()
            raise errors.bad_gateway(
                f"The upstream {provider} could not be reached: {type(err).__name__}."
            ) from err
        self.metrics.upstream_seconds.labels(provider).observe(time.perf_counter() - started)
        if resp.status >= 500:
            self.metrics.upstream_errors.labels(provider, "status").inc()
        return resp

    async def _upstream_error(self, resp: aiohttp.ClientResponse, route: Route, rid: str) -> Response:
        raw = await resp.read()
        resp.release()
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            return Response(
                raw, status_code=resp.status, media_type="application/json", headers={"x-request-id": rid}
            )
        status = 502 if resp.status >= 500 else resp.status
        message = (
            f"The upstream {route.provider.namespace}:{route.provider.name} answered HTTP {resp.status}."
        )
        return errors.GatewayError(status, message, "upstream_error", "upstream_error").response(rid)

    async def _json(self, resp: aiohttp.ClientResponse, charge: _Charge, rid: str) -> Response:
        try:
            raw = await resp.read()
        except (TimeoutError, aiohttp.ClientError) as err:
            charge.settle_estimate_input()
            raise errors.bad_gateway("The upstream broke off its response.") from err
        finally:
            resp.release()
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = {}
        usage = parsed.get("usage") if isinstance(parsed, dict) else None
        if isinstance(usage, dict):
            await charge.settle(usage.get("prompt_tokens"), usage.get("completion_tokens"))
        else:
            text = response_text(parsed) if isinstance(parsed, dict) else ""
            await charge.settle(None, count_output(text, 0, charge.route.model.upstream_name) if text else 0)
        return Response(
            raw,
            status_code=resp.status,
            media_type=resp.headers.get("Content-Type", "application/json"),
            headers={"x-request-id": rid},
        )

    def _stream(
        self, resp: aiohttp.ClientResponse, charge: _Charge, sse: SSEFilter, rid: str, started: float
    ) -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            try:
                async for chunk in resp.content.iter_any():
                    out = sse.feed(chunk)
                    if out:
                        yield out
            except (TimeoutError, aiohttp.ClientError):
                charge.ctx["upstream_broke"] = True  # headers are sent: the stream just ends
            finally:
                resp.close()  # stop the upstream generating (and us paying) if the client left
                if not sse.done:
                    charge.ctx.setdefault("cut", True)
                self.spawn(self._after_stream(charge, sse, started))

        return StreamingResponse(
            events(),
            status_code=resp.status,
            media_type=resp.headers.get("Content-Type", "text/event-stream"),
            headers={"x-request-id": rid, "Cache-Control": "no-cache"},
        )

    async def _after_stream(self, charge: _Charge, sse: SSEFilter, started: float) -> None:
        await charge.settle_stream(sse)
        self._finish(charge.ctx, started)


class _Charge:
    """Settles one request's reservation with what it actually used."""

    def __init__(
        self,
        gw: Gateway,
        alloc: Allocation,
        ledger_rid: str,
        key: KeyEntry,
        route: Route,
        est: Estimate,
        ctx: dict[str, Any],
    ):
        self.gw, self.alloc, self.ledger_rid, self.key, self.route, self.est, self.ctx = (
            gw,
            alloc,
            ledger_rid,
            key,
            route,
            est,
            ctx,
        )

    async def settle(self, input_tokens: Any, output_tokens: Any) -> None:
        """Charge `input_tokens`/`output_tokens` (the upstream's usage); unknown input → the estimate."""
        tin = input_tokens if isinstance(input_tokens, int) and input_tokens >= 0 else self.est.input_tokens
        tout = output_tokens if isinstance(output_tokens, int) and output_tokens >= 0 else 0
        cost = self.route.model.price.cost(tin, tout)
        m = self.gw.metrics
        outcome = await self.gw.meter.settle(
            PendingSettle(self.alloc, self.ledger_rid, self.key.name, self.route.model_id, tin, tout, cost)
        )
        if outcome is None:
            m.ledger_errors.inc()
        else:
            m.remaining.labels(self.alloc.namespace, self.alloc.name).set(
                max(self.alloc.budget - outcome.spent, 0) / NANO_PER_USD
            )
        m.settle_backlog.set(len(self.gw.meter.backlog))
        ns, alloc, model = self.alloc.namespace, self.alloc.name, self.route.model_id
        m.tokens.labels(ns, alloc, model, "input").inc(tin)
        m.tokens.labels(ns, alloc, model, "output").inc(tout)
        usd = cost / NANO_PER_USD
        m.cost.labels(ns, alloc, model).inc(usd)
        if m.per_key:
            m.key_requests.labels(ns, self.key.name).inc()
            m.key_cost.labels(ns, self.key.name, alloc).inc(usd)
        self.ctx.update(input_tokens=tin, output_tokens=tout, cost_usd=format_usd(cost))

    def settle_estimate_input(self) -> None:
        self.gw.spawn(self.settle(None, 0))

    async def settle_stream(self, sse: SSEFilter) -> None:
        if sse.usage is not None:
            await self.settle(sse.usage.get("prompt_tokens"), sse.usage.get("completion_tokens"))
            return
        text, pieces = sse.generated_text()
        await self.settle(
            None, count_output(text, pieces, self.route.model.upstream_name) if text else pieces
        )

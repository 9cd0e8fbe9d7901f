"""One request through the gateway: authenticate → route → cap → reserve → upstream → settle.

read the body (413, 408) ─► authenticate ─► resolve the model (404 for models the key may not
use) ─► validate (400) ─► cap the output and write the cap into the upstream request ─► estimate
─► reserve (402 if it cannot be covered, 503 if the ledger does not answer in time) ─► upstream
  ├► JSON: settle with its usage (or the counted output)
  └► SSE: forward each event, settle when it ends; a client that leaves does not stop the count:
          the upstream is read on (bounded) for its usage, else the reservation is charged
upstream error, transport failure, or our own failure ─► release the reservation
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from aikeys import notices
from aikeys.estimate import Endpoint, OutputCap, apply_cap, estimate, output_cap
from aikeys.generated import Output, Usage
from aikeys.ledger.meter import UNMETERED, Meter
from aikeys.ledger.store import (
    MAX_AMOUNT,
    NO_RATE,
    Allocation,
    Estimate,
    LedgerUnavailable,
    RateState,
    ReserveStatus,
)
from aikeys.money import NANO_PER_USD, format_usd
from aikeys_gateway import errors, ratelimits, translate
from aikeys_gateway.auth import authenticate
from aikeys_gateway.breakers import Breakers
from aikeys_gateway.catalog import Catalog, KeyEntry
from aikeys_gateway.charge import Charge
from aikeys_gateway.config import Settings
from aikeys_gateway.eventstream import EventStream
from aikeys_gateway.httpclient import Client, UpstreamError, UpstreamTooLarge
from aikeys_gateway.httpclient import Response as Upstream
from aikeys_gateway.intake import (
    headers_of,
    new_id,
    parse_json_object,
    read_body,
    request_id,
    serialize,
    validate,
)
from aikeys_gateway.metrics import Metrics
from aikeys_gateway.routing import Route, resolve
from aikeys_gateway.stored import Owner, StoredResponses
from aikeys_gateway.streaming import ChatReader, Reader, ResponsesReader, SSEFilter, json_output
from aikeys_gateway.tracing import RequestSpan, Tracing

log = logging.getLogger("aikeys.gateway.access")


@dataclass
class Exchange:
    """One request as the gateway handles it: what the access log says, and what it holds."""

    rid: str
    endpoint: Endpoint
    started: float
    ctx: dict[str, Any] = field(default_factory=dict)
    held: tuple[Allocation, str] | None = None  # a reservation not yet settled or released
    span: RequestSpan | None = None  # its trace span, when tracing is on (tracing.py)
    rate: RateState = NO_RATE  # the tightest rate limits met, for the x-ratelimit-* headers
    model_window: tuple[str, int, int] | None = None  # a model's rate window: scope, start, tokens
    settling: bool = False  # a whole answer's charge is being settled; it finishes the exchange


class Gateway:
    tracer: Tracing | None = None  # set at start-up when an OTLP endpoint is configured

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        meter: Meter,
        metrics: Metrics,
        http: Client,
        stored: StoredResponses,
        clock: Callable[[], float] = time.time,
        breakers: Breakers | None = None,
    ):
        self.stored = stored
        self.breakers = breakers or Breakers(settings.breaker_failures, settings.breaker_open_seconds)
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

    async def notify(self, namespace: str, provider: str, overrun: notices.Overrun) -> None:
        try:
            await notices.report(self.meter.ledger.client, namespace, provider, overrun)
        except Exception:  # a notice is best effort; the metric and the log line already tell
            log.debug("overrun notice not recorded", exc_info=True)

    # --- the request ------------------------------------------------------------------------------

    async def handle(self, request: Request, endpoint: Endpoint) -> Response:
        headers = headers_of(request)
        ex = Exchange(request_id(request, headers), endpoint, time.perf_counter())
        ex.ctx.update(rid=ex.rid, endpoint=endpoint.value)
        if self.tracer is not None:
            ex.span = self.tracer.start(request, endpoint)
        try:
            response = await self._handle(request, headers, ex)
        except errors.GatewayError as err:
            response = err.response(ex.rid)
            ex.ctx["error"] = err.code or err.type
        except Exception:
            log.exception("unexpected error", extra={"access": {"rid": ex.rid}})
            if ex.held is not None:
                self.spawn(self.meter.release(*ex.held))
                self.give_back_window(ex)
            charged = "the upstream answered and it was charged" if ex.settling else "it was not charged"
            response = errors.server_error(
                f"The gateway failed unexpectedly with this request; {charged}."
            ).response(ex.rid)
            ex.ctx["error"] = "server_error"
        ex.ctx["status"] = response.status_code
        if not ex.settling and not isinstance(response, StreamingResponse):
            self._finish(ex)  # else once the charge is settled
        return response

    def _finish(self, ex: Exchange) -> None:
        elapsed = time.perf_counter() - ex.started
        ctx = ex.ctx
        m = self.metrics
        m.requests.labels(
            ctx.get("namespace", ""), ctx.get("model", ""), ctx["endpoint"], str(ctx["status"])
        ).inc()
        m.request_seconds.labels(ctx["endpoint"], "true" if ctx.get("stream") else "false").observe(elapsed)
        if "cost" in ctx and (self.settings.access_log or ex.span is not None):
            ctx["cost_usd"] = format_usd(ctx.pop("cost"))
        if self.settings.access_log:
            ctx["ms"] = round(elapsed * 1000, 2)
            log.info("request", extra={"access": ctx})
        if ex.span is not None:  # ends when the request is done, a stream's charge settled
            ex.span.end(ctx)

    def give_back_window(self, ex: Exchange, used_tokens: int | None = None) -> None:
        """Correct a model's rate window: to the tokens used (settled), or give the whole request
        back (refused or never sent). Best effort, off the request path."""
        if ex.model_window is None:
            return
        scope, start, bound = ex.model_window
        ex.model_window = None
        requests, tokens = (-1, -bound) if used_tokens is None else (0, used_tokens - bound)
        self.spawn(self._adjust_window(scope, start, requests, tokens))

    async def _adjust_window(self, scope: str, start: int, requests: int, tokens: int) -> None:
        with contextlib.suppress(LedgerUnavailable):  # the window ends soon; it only stays stricter
            await self.meter.ledger.adjust_rate(scope, start, requests, tokens)

    def observe(self, method: str, route: str, status: int, started: float, rid: str) -> None:
        """A request outside the metered routes (models, usage, stored responses, unknown URLs)."""
        ex = Exchange(
            rid, Endpoint.CHAT, started, {"rid": rid, "method": method, "endpoint": route, "status": status}
        )
        self._finish(ex)

    async def _handle(self, request: Request, headers: dict[str, str], ex: Exchange) -> Response:
        s, endpoint, ctx = self.settings, ex.endpoint, ex.ctx
        raw = await read_body(request, s.max_body_bytes, s.body_timeout, headers.get("content-length"))
        key = authenticate(headers, self.catalog, self.now())
        ctx.update(namespace=key.namespace, key=key.name)
        body = request_body = parse_json_object(raw)
        route = resolve(body.get("model"), key, self.catalog, s.upstream_hosts)
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
        attempts = self.breakers.order(route)
        if (
            endpoint is Endpoint.RESPONSES
            and body.get("previous_response_id")
            and route.model.responses_native
        ):
            attempts = await self._holders(str(body["previous_response_id"]), key, attempts)
        plans = [plan(endpoint, body, r, stream) for r in attempts]
        first = plans[0]
        if first.translated:
            ctx["translated"] = True
        if ex.span is not None:
            ex.span.request(first.body, first.cap, alloc.name)
        est = dearest(plans)
        ledger_rid = new_id()
        await self._reserve(ex, alloc, ledger_rid, key, route, est)
        charge = Charge(self, alloc, ledger_rid, key, route, est, ctx)
        sent = await self._upstream(ex, plans, charge)
        if isinstance(sent, Response):
            return sent
        used, resp = sent
        ex.held = None  # from here on the Charge settles it, whatever happens
        charge.route, charge.exchange = used.route, ex  # at the answering backend's price
        if used.route is not route:
            ctx["backend"] = used.route.model_id
        if (
            ex.endpoint is Endpoint.RESPONSES
            and not used.translated
            and request_body.get("store") is not False
        ):
            charge.stored = Owner(key.namespace, used.route.provider.namespace, used.route.provider.name)
        if not stream:
            return await self._json(resp, charge, ex, request_body if used.translated else None)
        reader = _reader(ex.endpoint, used.translated, request_body, used.route)
        return self._stream(resp, charge, SSEFilter(reader, s.max_event_bytes), ex)

    async def _upstream(
        self, ex: Exchange, plans: list[Plan], charge: Charge
    ) -> tuple[Plan, Upstream] | Response:
        """Send the reserved request to the first upstream that takes it: on a connection failure,
        timeout, 429 or 5xx — nothing has reached the client yet — the next one is tried. When none
        does, release what the request holds."""
        ex.held = (charge.alloc, charge.ledger_rid)
        for i, attempt in enumerate(plans):
            last = i == len(plans) - 1
            try:
                resp = await self._send(attempt.route, attempt.endpoint, attempt.payload)
            except errors.GatewayError:  # the upstream never took the request
                self.breakers.failed(attempt.route)
                if not last:
                    self._fell_back(ex, attempt.route, plans[i + 1].route, "transport")
                    continue
                ex.held = None
                await self.meter.release(charge.alloc, charge.ledger_rid)
                self.give_back_window(ex)
                raise
            except BaseException:  # cancelled mid-call: the upstream may be generating, charge the bound
                ex.held = None
                self.spawn(charge.reservation())
                raise
            if resp.status == 429 or resp.status >= 500:
                self.breakers.failed(attempt.route)
                if not last:
                    resp.release()
                    self._fell_back(ex, attempt.route, plans[i + 1].route, str(resp.status))
                    continue
            if resp.status >= 400:
                ex.held = None
                await self.meter.release(charge.alloc, charge.ledger_rid)
                self.give_back_window(ex)
                return await self._upstream_error(resp, attempt.route, ex.rid)
            self.breakers.succeeded(attempt.route)
            return attempt, resp
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _fell_back(self, ex: Exchange, failed: Route, to: Route, why: str) -> None:
        ex.ctx.setdefault("fallbacks", []).append(f"{failed.model_id}:{why}")
        self.metrics.fallbacks.labels(failed.model_id, to.model_id, why).inc()

    async def _holders(self, response_id: str, key: KeyEntry, attempts: list[Route]) -> list[Route]:
        """previous_response_id must be a response of this namespace; only the upstream that holds
        it can continue it."""
        provider = await self.stored.provider_for(response_id, key, self.catalog)
        holders = [r for r in attempts if r.provider is provider and r.model.responses_native]
        if not holders:
            raise errors.invalid_request(
                f"Previous response with id '{response_id[:80]}' was created through another provider; "
                "continue it with a model of that provider.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        return holders

    async def _reserve(
        self, ex: Exchange, alloc: Allocation, ledger_rid: str, key: KeyEntry, route: Route, est: Estimate
    ) -> None:
        bound = est.input_tokens + est.output_tokens
        if est.cost > MAX_AMOUNT or bound > MAX_AMOUNT:
            self.metrics.rejected_budget.labels(alloc.namespace, alloc.name).inc()
            raise errors.insufficient_quota(
                "This request's upper bound is beyond what any allocation can cover; lower max_tokens or n."
            )
        model_rate = NO_RATE
        try:
            if route.model.limits is not None:  # a model's window spans allocations: its own call
                admitted = await self.meter.ledger.admit_rate(
                    route.model.rate_scope, route.model.limits, bound
                )
                model_rate = admitted.state
                if not admitted.admitted:
                    self.metrics.rate_limited.labels("model").inc()
                    raise ratelimits.limited(model_rate, admitted.status, f"model {route.model_id}", bound)
                ex.model_window = (route.model.rate_scope, admitted.window_start, bound)
            outcome = await self.meter.reserve(alloc, ledger_rid, key.name, route.model_id, est, key.limits)
        except LedgerUnavailable as err:
            self.give_back_window(ex)
            self.metrics.ledger_errors.inc()
            raise errors.unavailable(
                "The budget ledger is unreachable; no request is served unmetered. Retry shortly."
            ) from err
        if outcome is UNMETERED:
            self.metrics.unmetered.inc()
            return
        if not outcome.accepted:
            self.give_back_window(ex)
        ex.rate = model_rate.tighter(outcome.rate)
        if outcome.status in (ReserveStatus.RATE_LIMITED_REQUESTS, ReserveStatus.RATE_LIMITED_TOKENS):
            self.metrics.rate_limited.labels("allocation_or_key").inc()
            scope = f"allocation {alloc.namespace}/{alloc.name} or key {key.name}"
            raise ratelimits.limited(ex.rate, outcome.status, scope, bound)
        self.metrics.budget.labels(alloc.namespace, alloc.name).set(alloc.budget / NANO_PER_USD)
        if outcome.accepted:
            return
        if outcome.status is ReserveStatus.EXPIRED:  # reached Redis after we would have given up
            self.metrics.ledger_errors.inc()
            raise errors.unavailable(
                "The budget ledger answered too late; nothing was reserved. Retry shortly."
            )
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

    async def _send(self, route: Route, endpoint: Endpoint, payload: bytes) -> Upstream:
        """POST the request upstream; transport failures are 502/504 (nothing was generated)."""
        headers = {"Content-Type": "application/json", **route.auth_headers()}
        if self.tracer is not None:  # W3C trace context for the upstream
            self.tracer.inject(headers, route)
        started = time.perf_counter()
        provider = f"{route.provider.namespace}:{route.provider.name}"
        try:
            resp = await self.http.request(
                "POST", route.url(endpoint.value), payload, headers, total=route.provider.timeout_seconds
            )
        except TimeoutError as err:
            self.metrics.upstream_errors.labels(provider, "timeout").inc()
            raise errors.gateway_timeout(f"The upstream {provider} did not answer in time.") from err
        except UpstreamError as err:
            self.metrics.upstream_errors.labels(provider, "transport").inc()
            raise errors.bad_gateway(
                f"The upstream {provider} could not be reached: {type(err.__cause__ or err).__name__}."
            ) from err
        self.metrics.upstream_seconds.labels(provider).observe(time.perf_counter() - started)
        if resp.status >= 500:
            self.metrics.upstream_errors.labels(provider, "status").inc()
        return resp

    async def _upstream_error(self, resp: Upstream, route: Route, rid: str) -> Response:
        try:
            raw = await resp.read(self.settings.max_answer_bytes)
        except (TimeoutError, UpstreamError):  # too large or broken off: told without its body
            raw = b""
        resp.release()
        provider = f"{route.provider.namespace}:{route.provider.name}"
        if resp.status in (401, 403):  # about the provider's key: none of its body reaches a key holder
            self.metrics.upstream_errors.labels(provider, "auth").inc()
            return errors.GatewayError(
                502,
                f"The upstream {provider} refused the gateway's credentials (HTTP {resp.status}); "
                "the provider's owner needs to check its Secret.",
                "upstream_error",
                "upstream_auth_failed",
            ).response(rid)
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            return Response(
                raw, status_code=resp.status, media_type="application/json", headers={"x-request-id": rid}
            )
        status = 502 if resp.status >= 500 else resp.status
        message = f"The upstream {provider} answered HTTP {resp.status}."
        return errors.GatewayError(status, message, "upstream_error", "upstream_error").response(rid)

    async def _json(
        self,
        resp: Upstream,
        charge: Charge,
        ex: Exchange,
        responses_request: dict[str, Any] | None,
    ) -> Response:
        """A whole answer: charge it, and hand it on (as a Responses object when translated)."""
        try:
            raw = await resp.read(self.settings.max_answer_bytes)
        except (TimeoutError, UpstreamError) as err:
            self.spawn(charge.reservation())  # it may have generated everything: charge the bound
            if isinstance(err, UpstreamTooLarge):
                raise errors.upstream_too_large(err.what, err.limit) from err
            raise errors.bad_gateway("The upstream broke off its response.") from err
        finally:
            resp.release()
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        usage, output = json_output(parsed, with_output=ex.endpoint is not Endpoint.EMBEDDINGS)
        # Answered first, settled right after: the settle starts in the next turn of the event
        # loop, once this answer is written (the reservation holds the budget until it lands), and
        # whatever happens to the answer, it is settled. It finishes the exchange (log, metrics), so
        # it starts only once nothing here awaits anymore: `handle` records the status first.
        ex.settling = True
        try:
            if ex.span is not None:
                ex.span.response(parsed)
            media_type = resp.headers.get("content-type", "application/json")
            if responses_request is not None:
                translated = translate.response_from_chat(parsed, responses_request, charge.route.model_id)
                raw, media_type = orjson.dumps(translated), "application/json"
            elif charge.stored is not None and isinstance(parsed, dict) and isinstance(parsed.get("id"), str):
                await self.remember(parsed["id"], charge.stored)
        finally:
            self.spawn(self._settle_json(charge, usage, output, ex))
        headers = {"x-request-id": ex.rid, **ratelimits.headers(ex.rate)}
        return Response(raw, status_code=resp.status, media_type=media_type, headers=headers)

    async def _settle_json(self, charge: Charge, usage: Usage | None, output: Output, ex: Exchange) -> None:
        try:
            await charge.usage(usage, output)
        finally:
            self._finish(ex)

    async def remember(self, response_id: str, owner: Owner) -> None:
        try:
            await self.stored.remember(response_id, owner)
        except Exception:  # the answer stands; only a later GET of it will not find it
            log.warning("stored response not remembered", extra={"access": {"response_id": response_id}})

    def _stream(self, resp: Upstream, charge: Charge, sse: SSEFilter, ex: Exchange) -> StreamingResponse:
        if ex.span is not None:
            ex.span.watch(sse)

        settled = False

        def settle(ended: bool) -> None:
            """Once per stream: charge what it used, or — the client left while the upstream
            was still streaming — read on for the usage first."""
            nonlocal settled
            if settled:
                return
            settled = True
            if ended or sse.done:
                resp.release()  # kept alive when the upstream finished its body
                self.spawn(self._after_stream(charge, sse, ex))
            else:
                ex.ctx["client_left"] = True
                self.spawn(self._read_on(resp, charge, sse, ex))

        async def events() -> AsyncIterator[bytes]:
            ended = False
            try:
                async for chunk in resp.iter_any():
                    out = sse.feed(chunk)
                    if out:
                        yield out
                ended = True
                out = sse.end()
                if out:
                    yield out
            except (TimeoutError, UpstreamError) as err:
                ex.ctx["upstream_broke"] = True  # headers are sent: the stream just ends
                ended = True
                if isinstance(err, UpstreamTooLarge):  # with the reason, as OpenAI ends a stream
                    yield errors.upstream_too_large(err.what, err.limit).event()
            finally:
                settle(ended)

        return EventStream(
            events(),
            status_code=resp.status,
            media_type=resp.headers.get("content-type", "text/event-stream"),
            headers={"x-request-id": ex.rid, "Cache-Control": "no-cache", **ratelimits.headers(ex.rate)},
            on_close=lambda: settle(False),  # the client left before the stream even began
        )

    async def _after_stream(self, charge: Charge, sse: SSEFilter, ex: Exchange) -> None:
        await charge.usage(sse.usage, sse.output)
        response_id = getattr(sse.reader, "response_id", None)
        if charge.stored is not None and response_id:
            await self.remember(response_id, charge.stored)
        self._finish(ex)

    async def _read_on(self, resp: Upstream, charge: Charge, sse: SSEFilter, ex: Exchange) -> None:
        """Keep reading a stream whose client left, for the usage it ends with (bounded in time);
        without an end in time, charge the reservation."""
        ended = False
        try:
            async with asyncio.timeout(self.settings.drain_seconds):
                try:
                    async for chunk in resp.iter_any():
                        sse.feed(chunk)
                        if sse.usage is not None or sse.done:
                            break
                    sse.end()
                except (UpstreamError, TimeoutError):  # the upstream broke or timed out: it ended
                    pass  # (our own bound below cancels the read, it does not raise in here)
                ended = True
        except TimeoutError:
            pass  # still generating after our bound: charge the reservation
        finally:
            resp.release()  # kept alive only when the body was read to its end
        if sse.usage is not None or ended:
            self.metrics.streams_abandoned.labels("usage" if sse.usage is not None else "counted").inc()
            await charge.usage(sse.usage, sse.output)
        else:
            self.metrics.streams_abandoned.labels("reservation").inc()
            await charge.reservation()
        self._finish(ex)


def _reader(endpoint: Endpoint, translated: bool, request: dict[str, Any], route: Route) -> Reader:
    """How a stream is read (and, for a translated one, rewritten) for this request."""
    if translated:
        return translate.ChatToResponses(request, route.model_id)
    if endpoint is Endpoint.RESPONSES:
        return ResponsesReader()
    return ChatReader(bool((request.get("stream_options") or {}).get("include_usage")))


@dataclass(frozen=True)
class Plan:
    """The request as one upstream gets it: its endpoint (chat for a translated Responses request),
    body, cap and bytes."""

    route: Route
    endpoint: Endpoint
    body: dict[str, Any]
    cap: OutputCap
    payload: bytes
    translated: bool


def plan(endpoint: Endpoint, body: dict[str, Any], route: Route, stream: bool) -> Plan:
    translated = endpoint is Endpoint.RESPONSES and not route.model.responses_native
    if translated:  # a chat-only backend: the request goes as a chat completion
        body, endpoint = translate.chat_request(body), Endpoint.CHAT
    cap = output_cap(endpoint, body, route.model.max_output_tokens)
    upstream_body = dict(body)
    upstream_body["model"] = route.model.upstream_name
    apply_cap(endpoint, upstream_body, cap, route.provider.max_tokens_parameter)
    if stream and endpoint is not Endpoint.RESPONSES and route.provider.stream_usage:
        upstream_body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    return Plan(route, endpoint, body, cap, serialize(upstream_body), translated)


def dearest(plans: list[Plan]) -> Estimate:
    """One reservation that covers whichever upstream answers."""
    estimates = [
        estimate(p.endpoint, p.body, p.route.model.price, p.route.model.encoding, p.cap) for p in plans
    ]
    return Estimate(
        max(e.cost for e in estimates),
        max(e.input_tokens for e in estimates),
        max(e.output_tokens for e in estimates),
    )

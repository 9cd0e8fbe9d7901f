"""One request through the gateway, whatever its API surface: the steps every surface shares.

read the body (413, 408) ─► authenticate ─► resolve the model (404 for models the key may not
use) ─► validate (400, the surface's schemas) ─► plan each route: the surface's form, the cap,
the upstream's body ─► bound ─► reserve (402 if it cannot be covered, 503 if the ledger does not
answer in time) ─► upstream, attempt by attempt (each passes its own model's rate limits)
  ├► JSON: settle with its usage (or the counted output)
  └► SSE: forward each event, settle when it ends; a client that leaves does not stop the count:
          the upstream is read on (bounded) for its usage, else the reservation is charged
an error answer, or a request that never left ─► release the reservation
a request that left and got no answer (timeout, reset) ─► charge its bound; a fallback reserves anew

What differs per API surface comes from its `Surface` (surface.py), per upstream kind from the
route's `UpstreamKind` (upstreams/kinds.py). The money is in `Reservation` (reservation.py): it is
the only thing that ends a hold; here each path ends in one `close(outcome)` of it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from aikeys.estimate import Endpoint
from aikeys.ledger.meter import UNMETERED, Meter
from aikeys.ledger.store import MAX_AMOUNT, Allocation, LedgerUnavailable, ReserveStatus
from aikeys.money import NANO_PER_USD, format_usd
from aikeys_gateway import errors
from aikeys_gateway.cache.catalog import Catalog, KeyEntry
from aikeys_gateway.config import Settings
from aikeys_gateway.observe.metrics import Metrics
from aikeys_gateway.observe.tracing import Tracing
from aikeys_gateway.pipeline import ratelimits
from aikeys_gateway.pipeline.auth import authenticate
from aikeys_gateway.pipeline.background import Background
from aikeys_gateway.pipeline.breakers import Breakers
from aikeys_gateway.pipeline.exchange import Exchange
from aikeys_gateway.pipeline.intake import headers_of, new_id, parse_json_object, read_body, request_id
from aikeys_gateway.pipeline.plan import Plan, dearest
from aikeys_gateway.pipeline.reservation import BOUND, RELEASE, Books, Reservation, State, answered
from aikeys_gateway.pipeline.routing import Route, resolve
from aikeys_gateway.pipeline.surface import Surface
from aikeys_gateway.surfaces.eventstream import EventStream
from aikeys_gateway.upstreams.client import Client, Unanswered, UpstreamError, UpstreamTooLarge
from aikeys_gateway.upstreams.client import Response as Upstream
from aikeys_gateway.upstreams.sse import SSEFilter

log = logging.getLogger("aikeys.gateway.access")


class Pipeline:
    tracer: Tracing | None = None  # None: tracing off (the hooks on the request path are `is not None` tests)

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        meter: Meter,
        metrics: Metrics,
        http: Client,
        clock: Callable[[], float] = time.time,
        breakers: Breakers | None = None,
        tracer: Tracing | None = None,  # None: tracing off
    ):
        self.settings = settings
        self.catalog = catalog
        self.meter = meter
        self.metrics = metrics
        self.http = http
        self.clock = clock
        self.breakers = breakers or Breakers(settings.breaker_failures, settings.breaker_open_seconds)
        self.tracer = tracer
        self.background = Background(metrics)
        self.books = Books(meter, metrics, self.background.spawn)

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC)

    async def drain(self) -> None:
        """Wait for the settles still running (shutdown)."""
        await self.background.drain()

    # --- the request ------------------------------------------------------------------------------

    async def handle(self, request: Request, surface: Surface, endpoint: Endpoint) -> Response:
        """Never raises but on cancellation: every failure is an answer in the surface's shape."""
        headers = headers_of(request)
        ex = Exchange(request_id(request, headers), endpoint.value, time.perf_counter())
        if self.tracer is not None:
            ex.span = self.tracer.start(request, endpoint)
        try:
            response = await self._handle(request, headers, surface, endpoint, ex)
        except errors.GatewayError as err:
            self._abandon(ex)
            response = surface.error(err, ex.rid)
            ex.error = err.code or err.type
        except Exception:
            log.exception("unexpected error", extra={"access": {"rid": ex.rid}})
            charged = self._abandon(ex)
            charged_text = "it was charged" if charged else "it was not charged"
            failure = errors.server_error(
                f"The gateway failed unexpectedly with this request; {charged_text}."
            )
            response = surface.error(failure, ex.rid)
            ex.error = "server_error"
        except BaseException:  # cancelled: the client left, or shutdown
            self._abandon(ex)
            raise
        ex.status = response.status_code
        self._ended(ex)  # the answer's part; a settle that outlives it ends the other
        return response

    def _abandon(self, ex: Exchange) -> bool:
        """The request ends without an answer that took its reservation: close it (released while
        nothing may have been generated, else charged its bound). True when it is charged."""
        r = ex.reservation
        if r is None:
            return False
        if r.state is State.HELD:
            self.background.spawn(r.close(RELEASE))
            return r.billable
        return r.state in (State.SETTLING, State.SETTLED)

    def _settle_later(self, r: Reservation, ex: Exchange, work: Coroutine[Any, Any, Any]) -> None:
        """Run `work`, which closes `r`, outside the request (a client leaving must not stop a
        charge); whatever happens, `r` is closed, then the exchange's part ends."""

        async def settle() -> None:
            try:
                await r.closing(work)
            finally:
                self._ended(ex)

        self.background.spawn(settle())

    def _ended(self, ex: Exchange) -> None:
        """One part of the exchange ended; after the last: metrics, the access log, the span."""
        ex.pending -= 1
        if ex.pending:
            return
        elapsed = time.perf_counter() - ex.started
        m = self.metrics
        m.requests.labels(ex.namespace, ex.model, ex.endpoint, str(ex.status)).inc()
        m.request_seconds.labels(ex.endpoint, "true" if ex.stream else "false").observe(elapsed)
        if not (self.settings.access_log or ex.span is not None):
            return
        record = ex.record()
        if self.settings.access_log:
            record["ms"] = round(elapsed * 1000, 2)
            log.info("request", extra={"access": record})
        if ex.span is not None:  # ends when the request is done, a stream's charge settled
            ex.span.end(record)

    def observe(self, method: str, route: str, status: int, started: float, rid: str) -> None:
        """A request outside the metered routes (models, usage, stored responses, unknown URLs)."""
        self._ended(Exchange(rid, route, started, method=method, status=status))

    async def _handle(
        self, request: Request, headers: dict[str, str], surface: Surface, endpoint: Endpoint, ex: Exchange
    ) -> Response:
        s = self.settings
        raw = await read_body(request, s.max_body_bytes, s.body_timeout, headers.get("content-length"))
        key = authenticate(headers, self.catalog, self.now())
        ex.namespace, ex.key = key.namespace, key.name
        body = parse_json_object(raw)
        route = resolve(body.get("model"), key, self.catalog, s.upstream_hosts)
        ex.model = route.model_id
        surface.validate(endpoint, body)
        alloc = self.catalog.allocation(key.namespace, key.allocation)
        if alloc is None:
            raise errors.forbidden(
                f"This key's Allocation {key.namespace}/{key.allocation} does not exist.",
                code="allocation_not_found",
            )
        stream = bool(body.get("stream")) and endpoint is not Endpoint.EMBEDDINGS
        ex.stream = stream
        routes = await surface.routes(endpoint, body, key, route, self.breakers.order(route))
        plans = [surface.plan(endpoint, body, r, stream) for r in routes]
        first = plans[0]
        ex.translated = first.translated
        if ex.span is not None:
            ex.span.request(first.body, first.cap, alloc.name)
        reservation = await self._reserve(ex, alloc, key, plans)
        sent = await self._upstream(ex, surface, plans, reservation)
        if isinstance(sent, Response):
            return sent
        used, resp = sent
        if used.route is not route:
            ex.backend = used.route.model_id
        answer = _Answer(surface, used, body, key, route.model_id)
        if not stream:
            return await self._json(resp, answer, ex)
        return self._stream(resp, answer, ex)

    async def _upstream(
        self, ex: Exchange, surface: Surface, plans: list[Plan], r: Reservation
    ) -> tuple[Plan, Upstream] | Response:
        """Send the reserved request to the first upstream that takes it; each attempt passes its
        own model's rate limits first. On a refused connection, a model rate limit, a 429 or 5xx —
        nothing has reached the client yet — the next one is tried. An attempt that left and got no
        answer is charged its bound (the upstream may have generated it), and the next one is
        reserved anew. When none answers, the last error is the answer."""
        for i, attempt in enumerate(plans):
            last = i == len(plans) - 1
            try:
                window = await self._admit(ex, attempt)
                r.attempt(attempt.route, attempt.estimate, window)
                resp = await self._send(attempt.route, attempt.endpoint, attempt.payload)
            except _Unanswered as unanswered:  # it left: charged, whatever follows
                self.breakers.failed(attempt.route)
                await r.close(BOUND)
                if last:
                    raise unanswered.error from unanswered
                self._fell_back(ex, attempt.route, plans[i + 1].route, "unanswered")
                r = await self._reserve(ex, r.alloc, r.key, plans[i + 1 :])
                continue
            except errors.GatewayError as err:  # it never left (or a model's rate limit refused it)
                r.not_billed()
                if err.status != 429:
                    self.breakers.failed(attempt.route)
                if not last:
                    self._fell_back(ex, attempt.route, plans[i + 1].route, _why(err))
                    continue
                await r.close(RELEASE)
                raise
            if resp.status == 429 or resp.status >= 500:
                self.breakers.failed(attempt.route)
                if not last:
                    resp.release()
                    r.not_billed()  # an error answer: not billed
                    self._fell_back(ex, attempt.route, plans[i + 1].route, str(resp.status))
                    continue
            if resp.status >= 400:
                r.not_billed()
                await r.close(RELEASE)
                return await self._upstream_error(surface, resp, attempt.route, ex.rid)
            self.breakers.succeeded(attempt.route)
            return attempt, resp
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _fell_back(self, ex: Exchange, failed: Route, to: Route, why: str) -> None:
        ex.fallbacks.append(f"{failed.model_id}:{why}")
        self.metrics.fallbacks.labels(failed.model_id, to.model_id, why).inc()

    async def _admit(self, ex: Exchange, attempt: Plan) -> tuple[str, int, int] | None:
        """An attempt's model rate limits (a model's window spans allocations: its own call); the
        window it takes a place in, to correct once the attempt is settled or given back."""
        model = attempt.route.model
        if model.limits is None:
            return None
        bound = attempt.estimate.input_tokens + attempt.estimate.output_tokens
        try:
            admitted = await self.meter.ledger.admit_rate(model.rate_scope, model.limits, bound)
        except LedgerUnavailable as err:
            self.metrics.ledger_errors.inc()
            raise errors.unavailable(
                "The budget ledger is unreachable; no request is served unmetered. Retry shortly."
            ) from err
        ex.rate = ex.rate.tighter(admitted.state)
        if not admitted.admitted:
            self.metrics.rate_limited.labels("model").inc()
            scope = f"model {attempt.route.model_id}"
            raise ratelimits.limited(admitted.state, admitted.status, scope, bound)
        return (model.rate_scope, admitted.window_start, bound)

    async def _reserve(
        self, ex: Exchange, alloc: Allocation, key: KeyEntry, plans: list[Plan]
    ) -> Reservation:
        """Hold what covers whichever of `plans` answers: the exchange's reservation from now on."""
        est = dearest(plans)
        bound = est.input_tokens + est.output_tokens
        if est.cost > MAX_AMOUNT or bound > MAX_AMOUNT:
            self.metrics.rejected_budget.labels(alloc.namespace, alloc.name).inc()
            raise errors.insufficient_quota(
                "This request's upper bound is beyond what any allocation can cover; lower max_tokens or n."
            )
        first = plans[0]
        r = Reservation(self.books, alloc, key, first.route, est, first.estimate, ex.tally, new_id(), ex.rid)
        try:
            outcome = await self.meter.reserve(
                alloc, r.ledger_rid, key.uid, first.route.model_id, est, key.limits, key.label, r.in_flight()
            )
        except LedgerUnavailable as err:
            self.metrics.ledger_errors.inc()
            raise errors.unavailable(
                "The budget ledger is unreachable; no request is served unmetered. Retry shortly."
            ) from err
        if outcome is UNMETERED:
            self.metrics.unmetered.inc()
            ex.reservation = r
            return r
        ex.rate = ex.rate.tighter(outcome.rate)
        if outcome.status in (ReserveStatus.RATE_LIMITED_REQUESTS, ReserveStatus.RATE_LIMITED_TOKENS):
            self.metrics.rate_limited.labels("allocation_or_key").inc()
            scope = f"allocation {alloc.namespace}/{alloc.name} or key {key.name}"
            raise ratelimits.limited(ex.rate, outcome.status, scope, bound)
        self.metrics.budget.labels(alloc.namespace, alloc.name).set(alloc.budget / NANO_PER_USD)
        if outcome.accepted:
            ex.reservation = r
            return r
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
        """POST the request upstream. Failures before it left are 502/504 (`GatewayError`); after it
        left, with no answer, `_Unanswered` carrying the 502/504."""
        headers = {"Content-Type": "application/json", **route.auth_headers()}
        if self.tracer is not None:  # W3C trace context for the upstream
            self.tracer.inject(headers, route)
        started = time.perf_counter()
        provider = f"{route.provider.namespace}:{route.provider.name}"
        try:
            resp = await self.http.request(
                "POST", route.url(endpoint.value), payload, headers, total=route.provider.timeout_seconds
            )
        except Unanswered as err:
            timed_out = isinstance(err, TimeoutError)
            self.metrics.upstream_errors.labels(provider, "timeout" if timed_out else "transport").inc()
            raise _Unanswered(
                errors.gateway_timeout(f"The upstream {provider} did not answer in time.")
                if timed_out
                else errors.bad_gateway(f"The upstream {provider} broke off before answering.")
            ) from err
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

    async def _upstream_error(self, surface: Surface, resp: Upstream, route: Route, rid: str) -> Response:
        try:
            raw = await resp.read(self.settings.max_answer_bytes)
        except (TimeoutError, UpstreamError):  # too large or broken off: told without its body
            raw = b""
        resp.release()
        provider = f"{route.provider.namespace}:{route.provider.name}"
        if resp.status in (401, 403):  # about the provider's key: none of its body reaches a key holder
            self.metrics.upstream_errors.labels(provider, "auth").inc()
            err = errors.GatewayError(
                502,
                f"The upstream {provider} refused the gateway's credentials (HTTP {resp.status}); "
                "the provider's owner needs to check its Secret.",
                "upstream_error",
                "upstream_auth_failed",
            )
            return surface.error(err, rid)
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        passed = surface.upstream_error(resp.status, parsed, raw, rid)
        if passed is not None:
            return passed
        status = 502 if resp.status >= 500 else resp.status
        message = f"The upstream {provider} answered HTTP {resp.status}."
        return surface.error(errors.GatewayError(status, message, "upstream_error", "upstream_error"), rid)

    async def _json(self, resp: Upstream, answer: _Answer, ex: Exchange) -> Response:
        """A whole answer: charge it, and hand it on in the surface's form."""
        r, plan = answer.reservation(ex), answer.plan
        try:
            raw = await resp.read(self.settings.max_answer_bytes)
        except (TimeoutError, UpstreamError) as err:  # it may have generated everything: the bound
            if isinstance(err, UpstreamTooLarge):
                raise errors.upstream_too_large(err.what, err.limit) from err
            raise errors.bad_gateway("The upstream broke off its response.") from err
        finally:
            resp.release()
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        usage, output = plan.route.kind.usage(plan.endpoint, parsed)
        # Answered first, settled right after: the settle runs in the background once this answer
        # is on its way (the reservation holds the budget until it lands), and whatever happens to
        # the answer, it is settled.
        r.settling()
        ex.pending += 1
        try:
            if ex.span is not None:
                ex.span.response(parsed)
            media_type = resp.headers.get("content-type", "application/json")
            raw, media_type = answer.surface.answer(plan, answer.request, parsed, raw, media_type)
            answer_id = parsed.get("id") if isinstance(parsed, dict) else None
            await answer.answered(answer_id if isinstance(answer_id, str) else None)
        finally:
            self._settle_later(r, ex, r.close(answered(usage, output)))
        headers = {"x-request-id": ex.rid, **ratelimits.headers(ex.rate)}
        return Response(raw, status_code=resp.status, media_type=media_type, headers=headers)

    def _stream(self, resp: Upstream, answer: _Answer, ex: Exchange) -> StreamingResponse:
        r = answer.reservation(ex)
        sse = SSEFilter(answer.surface.reader(answer.plan, answer.request), self.settings.max_event_bytes)
        if ex.span is not None:
            ex.span.watch(sse)
        ex.pending += 1  # the stream's settle ends the exchange's second part

        def settle(ended: bool) -> None:
            """Once per stream (the reservation is taken once): charge what it used, or — the
            client left while the upstream was still streaming — read on for the usage first."""
            if not r.settling():
                return
            if ex.upstream_broke and sse.usage is None:
                # broken off without its usage: it may have generated more than it sent (tokens in
                # flight, hidden reasoning), and the provider bills that: the bound
                resp.release()
                self._settle_later(r, ex, r.close(BOUND))
            elif ended or sse.done:
                resp.release()  # kept alive when the upstream finished its body
                self._settle_later(r, ex, self._after_stream(r, sse, answer))
            else:
                ex.client_left = True
                self._settle_later(r, ex, self._read_on(resp, r, sse))

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
                ex.upstream_broke = True  # headers are sent: the stream just ends
                ended = True
                if isinstance(err, UpstreamTooLarge):  # with the reason, as the surface ends a stream
                    yield answer.surface.error_event(errors.upstream_too_large(err.what, err.limit))
            finally:
                settle(ended)

        return EventStream(
            events(),
            status_code=resp.status,
            media_type=resp.headers.get("content-type", "text/event-stream"),
            headers={"x-request-id": ex.rid, "Cache-Control": "no-cache", **ratelimits.headers(ex.rate)},
            on_close=lambda: settle(False),  # the client left before the stream even began
        )

    async def _after_stream(self, r: Reservation, sse: SSEFilter, answer: _Answer) -> None:
        await r.close(answered(sse.usage, sse.output))
        answer_id = getattr(sse.reader, "response_id", None)
        await answer.answered(answer_id if isinstance(answer_id, str) else None)

    async def _read_on(self, resp: Upstream, r: Reservation, sse: SSEFilter) -> None:
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
            await r.close(answered(sse.usage, sse.output))
        else:
            self.metrics.streams_abandoned.labels("reservation").inc()
            await r.close(BOUND)


class _Answer:
    """An upstream that answered: the surface, the attempt that answered, the client's request."""

    def __init__(self, surface: Surface, plan: Plan, request: dict[str, Any], key: KeyEntry, model_id: str):
        self.surface, self.plan, self.request, self.key, self.model_id = surface, plan, request, key, model_id

    def reservation(self, ex: Exchange) -> Reservation:
        assert ex.reservation is not None  # an answer follows a reservation
        return ex.reservation

    async def answered(self, answer_id: str | None) -> None:
        await self.surface.answered(self.plan, self.request, self.key, self.model_id, answer_id)


class _Unanswered(Exception):
    """The request left and no answer came: `error` is what the client gets if nothing else answers."""

    def __init__(self, error: errors.GatewayError):
        super().__init__(error.message)
        self.error = error


def _why(err: errors.GatewayError) -> str:
    """The fallback reason of an attempt that never left."""
    return "rate_limited" if err.status == 429 else "transport"

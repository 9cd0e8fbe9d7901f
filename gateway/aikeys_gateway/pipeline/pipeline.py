"""One request through the gateway: authenticate → route → cap → reserve → upstream → settle.

read the body (413, 408) ─► authenticate ─► resolve the model (404 for models the key may not
use) ─► validate (400) ─► cap the output and write the cap into the upstream request ─► estimate
─► reserve (402 if it cannot be covered, 503 if the ledger does not answer in time) ─► upstream
  ├► JSON: settle with its usage (or the counted output)
  └► SSE: forward each event, settle when it ends; a client that leaves does not stop the count:
          the upstream is read on (bounded) for its usage, else the reservation is charged
an error answer, or a request that never left ─► release the reservation
a request that left and got no answer (timeout, reset) ─► charge its bound; a fallback reserves anew

Each attempt passes its own model's rate limits. The reservation lives in a `Charge` (charge.py),
the only thing that ends it: whatever fails after reserving, the Charge is ended — released while
nothing may have been generated, else charged.
"""

from __future__ import annotations

import asyncio
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
from aikeys.estimate import Endpoint, OutputCap, UnboundedInput, apply_cap, estimate, output_cap
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
from aikeys_gateway import errors
from aikeys_gateway.cache.catalog import Catalog, KeyEntry
from aikeys_gateway.config import Settings
from aikeys_gateway.observe.metrics import Metrics
from aikeys_gateway.observe.tracing import RequestSpan, Tracing
from aikeys_gateway.pipeline import ratelimits
from aikeys_gateway.pipeline.auth import authenticate
from aikeys_gateway.pipeline.breakers import Breakers
from aikeys_gateway.pipeline.intake import (
    headers_of,
    new_id,
    parse_json_object,
    read_body,
    request_id,
    serialize,
    validate,
)
from aikeys_gateway.pipeline.reservation import Charge
from aikeys_gateway.pipeline.routing import Route, resolve
from aikeys_gateway.surfaces.eventstream import EventStream
from aikeys_gateway.surfaces.openai import translate
from aikeys_gateway.surfaces.openai.readers import ChatReader, Reader, ResponsesReader, SSEFilter, json_output
from aikeys_gateway.surfaces.openai.stored import Owner, StoredResponses
from aikeys_gateway.upstreams.client import Client, Unanswered, UpstreamError, UpstreamTooLarge
from aikeys_gateway.upstreams.client import Response as Upstream

log = logging.getLogger("aikeys.gateway.access")


@dataclass
class Exchange:
    """One request as the gateway handles it: what the access log says, and what it holds."""

    rid: str
    endpoint: Endpoint
    started: float
    ctx: dict[str, Any] = field(default_factory=dict)
    charge: Charge | None = None  # the reservation it holds (ended by the Charge, whatever happens)
    span: RequestSpan | None = None  # its trace span, when tracing is on (tracing.py)
    rate: RateState = NO_RATE  # the tightest rate limits met, for the x-ratelimit-* headers
    settling: bool = False  # a whole answer's charge is being settled; it finishes the exchange


class Gateway:
    tracer: Tracing | None = None  # the constructor's `tracer`; None: tracing off

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
        tracer: Tracing | None = None,
    ):
        self.tracer = tracer
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
        """Run outside the request's cancellation scope (a client leaving must not stop a charge).
        A background task that fails is logged, never silent."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.metrics.background_failures.inc()
            log.error("background task failed", exc_info=task.exception())

    async def _settles(self, charge: Charge, ex: Exchange, work: Coroutine[Any, Any, Any]) -> None:
        """Run `work`, which ends `charge`; if it fails, end the charge anyway (released while
        nothing can have been generated, else charged) and finish the exchange."""
        try:
            await work
        except Exception:
            self.metrics.background_failures.inc()
            log.exception("settling failed; the charge is ended anyway", extra={"access": {"rid": ex.rid}})
        finally:
            try:
                await charge.release()  # a no-op when `work` ended it
            finally:
                self._finish(ex)

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
            self._abandon(ex)
            response = err.response(ex.rid)
            ex.ctx["error"] = err.code or err.type
        except Exception:
            log.exception("unexpected error", extra={"access": {"rid": ex.rid}})
            charge = ex.charge
            charged = ex.settling or (charge is not None and charge.billable)
            self._abandon(ex)
            charged_text = "it was charged" if charged else "it was not charged"
            response = errors.server_error(
                f"The gateway failed unexpectedly with this request; {charged_text}."
            ).response(ex.rid)
            ex.ctx["error"] = "server_error"
        except BaseException:  # cancelled: the client left, or shutdown
            self._abandon(ex)
            raise
        ex.ctx["status"] = response.status_code
        if not ex.settling and not isinstance(response, StreamingResponse):
            self._finish(ex)  # else once the charge is settled
        return response

    def _abandon(self, ex: Exchange) -> None:
        """The request ends without an answer that settles its charge: end the charge (released
        while nothing may have been generated, else charged its bound)."""
        charge = ex.charge
        if charge is not None and not charge.ended and not ex.settling:
            self.spawn(charge.release())

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
        charge = await self._reserve(ex, alloc, key, plans)
        sent = await self._upstream(ex, plans, charge)
        if isinstance(sent, Response):
            return sent
        used, resp = sent
        charge = ex.charge or charge  # a fallback after an unanswered attempt holds its own
        if used.route is not route:
            ctx["backend"] = used.route.model_id
        if (
            ex.endpoint is Endpoint.RESPONSES
            and not used.translated
            and request_body.get("store") is not False
        ):
            p = used.route.provider
            charge.stored = Owner(key.namespace, p.namespace, p.name, key.uid, route.model_id)
        if not stream:
            return await self._json(resp, charge, ex, request_body if used.translated else None)
        reader = _reader(ex.endpoint, used.translated, request_body, used.route)
        return self._stream(resp, charge, SSEFilter(reader, s.max_event_bytes), ex)

    async def _upstream(
        self, ex: Exchange, plans: list[Plan], charge: Charge
    ) -> tuple[Plan, Upstream] | Response:
        """Send the reserved request to the first upstream that takes it; each attempt passes its
        own model's rate limits first. On a refused connection, a model rate limit, a 429 or 5xx —
        nothing has reached the client yet — the next one is tried. An attempt that left and got no
        answer is charged its bound (the upstream may have generated it), and the next one is
        reserved anew. When none answers, the last error is the answer."""
        for i, attempt in enumerate(plans):
            last = i == len(plans) - 1
            try:
                await self._admit(ex, charge, attempt)
                charge.attempt(attempt.route, attempt.estimate)
                resp = await self._send(attempt.route, attempt.endpoint, attempt.payload)
            except _Unanswered as unanswered:  # it left: charged, whatever follows
                self.breakers.failed(attempt.route)
                await charge.reservation()
                if last:
                    raise unanswered.error from unanswered
                self._fell_back(ex, attempt.route, plans[i + 1].route, "unanswered")
                charge = await self._reserve(ex, charge.alloc, charge.key, plans[i + 1 :])
                continue
            except errors.GatewayError as err:  # it never left (or a model's rate limit refused it)
                charge.billable = False
                if err.status != 429:
                    self.breakers.failed(attempt.route)
                if not last:
                    charge.give_back_window()
                    self._fell_back(ex, attempt.route, plans[i + 1].route, _why(err))
                    continue
                await charge.release()
                raise
            if resp.status == 429 or resp.status >= 500:
                self.breakers.failed(attempt.route)
                if not last:
                    resp.release()
                    charge.billable = False  # an error answer: not billed
                    charge.give_back_window()
                    self._fell_back(ex, attempt.route, plans[i + 1].route, str(resp.status))
                    continue
            if resp.status >= 400:
                charge.billable = False
                await charge.release()
                return await self._upstream_error(resp, attempt.route, ex.rid)
            self.breakers.succeeded(attempt.route)
            return attempt, resp
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _fell_back(self, ex: Exchange, failed: Route, to: Route, why: str) -> None:
        ex.ctx.setdefault("fallbacks", []).append(f"{failed.model_id}:{why}")
        self.metrics.fallbacks.labels(failed.model_id, to.model_id, why).inc()

    async def _holders(self, response_id: str, key: KeyEntry, attempts: list[Route]) -> list[Route]:
        """previous_response_id must be a response of this key; only the upstream that holds it
        can continue it."""
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

    async def _admit(self, ex: Exchange, charge: Charge, attempt: Plan) -> None:
        """An attempt's model rate limits (a model's window spans allocations: its own call)."""
        model = attempt.route.model
        if model.limits is None:
            return
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
        charge.window = (model.rate_scope, admitted.window_start, bound)

    async def _reserve(self, ex: Exchange, alloc: Allocation, key: KeyEntry, plans: list[Plan]) -> Charge:
        """Reserve what covers whichever of `plans` answers; the Charge it returns holds it."""
        est = dearest(plans)
        bound = est.input_tokens + est.output_tokens
        if est.cost > MAX_AMOUNT or bound > MAX_AMOUNT:
            self.metrics.rejected_budget.labels(alloc.namespace, alloc.name).inc()
            raise errors.insufficient_quota(
                "This request's upper bound is beyond what any allocation can cover; lower max_tokens or n."
            )
        first = plans[0]
        charge = Charge(self, alloc, new_id(), key, first.route, est, ex.ctx, first.estimate)
        try:
            outcome = await self.meter.reserve(
                alloc,
                charge.ledger_rid,
                key.uid,
                first.route.model_id,
                est,
                key.limits,
                key.label,
                charge.in_flight(),
            )
        except LedgerUnavailable as err:
            self.metrics.ledger_errors.inc()
            raise errors.unavailable(
                "The budget ledger is unreachable; no request is served unmetered. Retry shortly."
            ) from err
        if outcome is UNMETERED:
            self.metrics.unmetered.inc()
            ex.charge = charge
            return charge
        ex.rate = ex.rate.tighter(outcome.rate)
        if outcome.status in (ReserveStatus.RATE_LIMITED_REQUESTS, ReserveStatus.RATE_LIMITED_TOKENS):
            self.metrics.rate_limited.labels("allocation_or_key").inc()
            scope = f"allocation {alloc.namespace}/{alloc.name} or key {key.name}"
            raise ratelimits.limited(ex.rate, outcome.status, scope, bound)
        self.metrics.budget.labels(alloc.namespace, alloc.name).set(alloc.budget / NANO_PER_USD)
        if outcome.accepted:
            ex.charge = charge
            return charge
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
            self.spawn(self._settles(charge, ex, charge.usage(usage, output)))
        headers = {"x-request-id": ex.rid, **ratelimits.headers(ex.rate)}
        return Response(raw, status_code=resp.status, media_type=media_type, headers=headers)

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
            if ex.ctx.get("upstream_broke") and sse.usage is None:
                # broken off without its usage: it may have generated more than it sent (tokens in
                # flight, hidden reasoning), and the provider bills that: the bound
                resp.release()
                self.spawn(self._settles(charge, ex, charge.reservation()))
            elif ended or sse.done:
                resp.release()  # kept alive when the upstream finished its body
                self.spawn(self._settles(charge, ex, self._after_stream(charge, sse)))
            else:
                ex.ctx["client_left"] = True
                self.spawn(self._settles(charge, ex, self._read_on(resp, charge, sse)))

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

    async def _after_stream(self, charge: Charge, sse: SSEFilter) -> None:
        await charge.usage(sse.usage, sse.output)
        response_id = getattr(sse.reader, "response_id", None)
        if charge.stored is not None and response_id:
            await self.remember(response_id, charge.stored)

    async def _read_on(self, resp: Upstream, charge: Charge, sse: SSEFilter) -> None:
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


class _Unanswered(Exception):
    """The request left and no answer came: `error` is what the client gets if nothing else answers."""

    def __init__(self, error: errors.GatewayError):
        super().__init__(error.message)
        self.error = error


def _why(err: errors.GatewayError) -> str:
    """The fallback reason of an attempt that never left."""
    return "rate_limited" if err.status == 429 else "transport"


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
    estimate: Estimate  # what this attempt may cost at its model's price


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
    payload = serialize(upstream_body)  # first: it refuses bodies nested too deep to walk
    model = route.model
    try:
        bound = estimate(endpoint, body, model.price, model.encoding, cap, model.context_window)
    except UnboundedInput as err:
        raise errors.invalid_request(
            f"This request refers to input the gateway cannot see ({err.param}), and the model "
            f"{route.model_id} has no context window to bound it by: its provider's owner can set "
            "spec.models[].contextWindow on the AIProvider.",
            param=err.param,
            code="context_window_required",
        ) from err
    return Plan(route, endpoint, body, cap, payload, translated, bound)


def dearest(plans: list[Plan]) -> Estimate:
    """One reservation that covers whichever upstream answers."""
    estimates = [p.estimate for p in plans]
    return Estimate(
        max(e.cost for e in estimates),
        max(e.input_tokens for e in estimates),
        max(e.output_tokens for e in estimates),
    )

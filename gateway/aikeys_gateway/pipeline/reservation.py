"""One reservation, and the only thing that ends it.

A `Charge` is made for each reservation in the ledger and ends it exactly once:

* Valid usage from the upstream: charged as reported — that is what the provider bills — even
  above the reservation; then the overrun is made visible (metric, log line, and a notice from
  which the operator posts a Warning event on the AIProvider).
* No valid usage: every generated part counted in the model's vocabulary (or bytes), at least
  one token a piece, at most the attempt's output bound; input at its bound.
* Nothing known (the upstream may be generating, we cannot see it): the attempt's whole bound.
* Released (nothing charged) only while it is not `billable`: the request never left, or the
  upstream answered it with an error status (providers bill no errors). Once a request has been
  written upstream and no answer came, `release` charges the bound instead: no path frees a
  request the provider may bill.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aikeys import notices
from aikeys.generated import Output, Usage
from aikeys.ledger.meter import PendingSettle
from aikeys.ledger.store import MAX_AMOUNT, Allocation, Estimate, LedgerUnavailable
from aikeys.money import NANO_PER_USD, format_usd
from aikeys_gateway.cache.catalog import KeyEntry
from aikeys_gateway.pipeline.routing import Route
from aikeys_gateway.surfaces.openai.stored import Owner

if TYPE_CHECKING:
    from aikeys_gateway.pipeline.pipeline import Gateway

log = logging.getLogger("aikeys.gateway.charge")


@dataclass(eq=False)
class Charge:
    gw: Gateway
    alloc: Allocation
    ledger_rid: str
    key: KeyEntry
    route: Route  # the attempt in flight (or the one that answered): its price is charged
    est: Estimate  # what is reserved: covers every attempt still possible
    ctx: dict[str, Any]
    bound: Estimate  # what the attempt in flight may cost, at its own price
    stored: Owner | None = None  # a natively stored response: remember who owns its id
    window: tuple[str, int, int] | None = None  # the attempt's model rate window: scope, start, tokens
    billable: bool = False  # the request may have reached the upstream unanswered: never released
    ended: bool = False

    def attempt(self, route: Route, bound: Estimate) -> None:
        """The next upstream attempt: from now on, it may have left."""
        self.route, self.bound, self.billable = route, bound, True

    def in_flight(self) -> Callable[[], bool]:
        """For the lease heartbeat: true while this charge is held and not ended."""
        ref = weakref.ref(self)

        def check() -> bool:
            charge = ref()
            return charge is not None and not charge.ended

        return check

    # --- the ways it ends -------------------------------------------------------------------------

    async def release(self) -> None:
        """Give the reservation back — unless the request may have been generated unanswered: then
        its bound is charged."""
        if self.ended:
            return
        if self.billable:
            await self.reservation()
            return
        self.ended = True
        self.give_back_window()
        await self.gw.meter.release(self.alloc, self.ledger_rid)

    async def usage(self, usage: Usage | None, output: Output) -> None:
        if usage is None:  # input at its bound; output as counted
            counted = min(output.tokens(self.route.model.encoding), self.bound.output_tokens)
            await self._settle(Usage(self.bound.input_tokens, counted), at_bound=True)
        else:
            await self._settle(usage)

    async def reservation(self) -> None:
        """Charge the attempt's whole bound (nothing is known of what it generated)."""
        await self._settle(Usage(self.bound.input_tokens, self.bound.output_tokens), at_bound=True)

    # --- the model's rate window ------------------------------------------------------------------

    def give_back_window(self, used_tokens: int | None = None) -> None:
        """Correct the attempt's model rate window: to the tokens used (settled), or give the whole
        request back (refused or never sent). Best effort, off the request path."""
        if self.window is None:
            return
        scope, start, bound = self.window
        self.window = None
        requests, tokens = (-1, -bound) if used_tokens is None else (0, used_tokens - bound)
        self.gw.spawn(self._adjust_window(scope, start, requests, tokens))

    async def _adjust_window(self, scope: str, start: int, requests: int, tokens: int) -> None:
        with contextlib.suppress(LedgerUnavailable):  # the window ends soon; it only stays stricter
            await self.gw.meter.ledger.adjust_rate(scope, start, requests, tokens)

    # --- settling ---------------------------------------------------------------------------------

    async def _settle(self, u: Usage, at_bound: bool = False) -> None:
        """Charge `u` at the model's price per kind; input `at_bound` (its kind unknown) at the
        dearest input price, as it was reserved."""
        if self.ended:
            return
        self.ended = True
        tin, tout = u.all_input, u.output_tokens
        self.give_back_window(tin + tout)
        price = self.route.model.price
        if at_bound:
            cost = price.bound(tin, tout)
        else:
            cost = price.cost(
                u.input_tokens, tout, u.cached_tokens, u.cache_write_tokens, u.cache_write_1h_tokens
            )
        if cost > self.est.cost:
            self._overrun(tin, tout, cost)
            cost = min(cost, MAX_AMOUNT)
            tin, tout = min(tin, MAX_AMOUNT), min(tout, MAX_AMOUNT)
        m, k = self.gw.metrics, self.key
        written = u.cache_write_tokens + u.cache_write_1h_tokens
        outcome = await self.gw.meter.settle(
            PendingSettle(
                self.alloc,
                self.ledger_rid,
                k.uid,
                self.route.model_id,
                tin,
                tout,
                cost,
                k.label,
                cached_tokens=min(u.cached_tokens, tin),
                cache_write_tokens=min(written, tin),
            )
        )
        if outcome is None:
            m.ledger_errors.inc()
        else:
            m.remaining.labels(self.alloc.namespace, self.alloc.name).set(
                max(self.alloc.budget - outcome.spent, 0) / NANO_PER_USD
            )
        m.settle_backlog.set(len(self.gw.meter.backlog))
        ns, alloc, model = self.alloc.namespace, self.alloc.name, self.route.model_id
        kinds = (
            (("bound", tin),)
            if at_bound
            else (
                ("uncached", u.input_tokens),
                ("cache_read", u.cached_tokens),
                ("cache_write", u.cache_write_tokens),
                ("cache_write_1h", u.cache_write_1h_tokens),
            )
        )
        for kind, count in kinds:
            if count:
                m.tokens.labels(ns, alloc, model, "input", kind).inc(count)
        m.tokens.labels(ns, alloc, model, "output", "output").inc(tout)
        usd = cost / NANO_PER_USD
        m.cost.labels(ns, alloc, model).inc(usd)
        if m.per_key:
            m.key_requests.labels(ns, self.key.name).inc()
            m.key_cost.labels(ns, self.key.name, alloc).inc(usd)
        # nano-USD; logged in USD. A request that fell back after a sent attempt adds both.
        self.ctx["input_tokens"] = self.ctx.get("input_tokens", 0) + tin
        if u.cached_tokens or written:
            self.ctx["cached_tokens"] = self.ctx.get("cached_tokens", 0) + u.cached_tokens
            self.ctx["cache_write_tokens"] = self.ctx.get("cache_write_tokens", 0) + written
        self.ctx["output_tokens"] = self.ctx.get("output_tokens", 0) + tout
        self.ctx["cost"] = self.ctx.get("cost", 0) + cost

    def _overrun(self, tin: int, tout: int, cost: int) -> None:
        p = self.route.provider
        self.gw.metrics.overruns.labels(f"{p.namespace}:{p.name}", self.route.model_id).inc()
        self.ctx["overrun"] = True
        log.warning(
            "upstream reported more than the reservation; charged as reported",
            extra={
                "access": {
                    "rid": self.ctx.get("rid"),
                    "provider": f"{p.namespace}:{p.name}",
                    "model": self.route.model_id,
                    "reserved_output_tokens": self.est.output_tokens,
                    "reported_output_tokens": tout,
                    "reported_input_tokens": tin,
                    "reserved_usd": format_usd(self.est.cost),
                    "charged_usd": format_usd(cost),
                }
            },
        )
        overrun = notices.Overrun(
            self.route.model.name, self.est.output_tokens, tout, str(self.ctx.get("rid"))
        )
        self.gw.spawn(self.gw.notify(p.namespace, p.name, overrun))

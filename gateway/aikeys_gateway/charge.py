"""Settling one request's reservation with what it used.

* Valid usage from the upstream: charged as reported — that is what the provider bills — even
  above the reservation; then the overrun is made visible (metric, log line, and a notice from
  which the operator posts a Warning event on the AIProvider).
* No valid usage: every generated part counted in the model's vocabulary (or bytes), at least
  one token a piece, at most the reserved output; input at its reserved bound.
* Nothing known (the upstream may be generating, we cannot see it): the reservation itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aikeys import notices
from aikeys.generated import Output, Usage
from aikeys.ledger.meter import PendingSettle
from aikeys.ledger.store import MAX_AMOUNT, Allocation, Estimate
from aikeys.money import NANO_PER_USD, format_usd
from aikeys_gateway.catalog import KeyEntry
from aikeys_gateway.routing import Route
from aikeys_gateway.stored import Owner

if TYPE_CHECKING:
    from aikeys_gateway.proxy import Exchange, Gateway

log = logging.getLogger("aikeys.gateway.charge")


@dataclass
class Charge:
    gw: Gateway
    alloc: Allocation
    ledger_rid: str
    key: KeyEntry
    route: Route
    est: Estimate
    ctx: dict[str, Any]
    stored: Owner | None = None  # a natively stored response: remember who owns its id
    exchange: Exchange | None = None  # for the model's rate window, corrected at settle

    async def usage(self, usage: Usage | None, output: Output) -> None:
        if usage is None:
            counted = min(output.tokens(self.route.model.encoding), self.est.output_tokens)
            await self._settle(self.est.input_tokens, counted)
        else:
            await self._settle(usage.input_tokens, usage.output_tokens)

    async def reservation(self) -> None:
        await self._settle(self.est.input_tokens, self.est.output_tokens)

    async def _settle(self, tin: int, tout: int) -> None:
        if self.exchange is not None:
            self.gw.give_back_window(self.exchange, tin + tout)
        price = self.route.model.price
        cost = price.cost(tin, tout)
        if cost > self.est.cost:
            self._overrun(tin, tout, cost)
            cost = min(cost, MAX_AMOUNT)
            tin, tout = min(tin, MAX_AMOUNT), min(tout, MAX_AMOUNT)
        m, k = self.gw.metrics, self.key
        outcome = await self.gw.meter.settle(
            PendingSettle(self.alloc, self.ledger_rid, k.uid, self.route.model_id, tin, tout, cost, k.label)
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
        self.ctx.update(input_tokens=tin, output_tokens=tout, cost=cost)  # nano-USD; logged in USD

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

"""Where a request's money is held and released: one reservation, and the only way it ends.

A `Reservation` is made for each hold in the ledger. Its states:

    HELD ──► SETTLING ──► SETTLED        (an answer took it: settled when it has been read)
      │            └────► RELEASED
      └────► SETTLED / RELEASED           (closed where it stands)

`close(outcome)` is the one way out, and it runs once; later calls change nothing. Outcomes:

* `Reported(usage)` — valid usage from the upstream: charged as reported (what the provider
  bills), even above the reservation; then the overrun is made visible (metric, log line, and a
  notice from which the operator posts a Warning event on the AIProvider).
* `Counted(output)` — no valid usage: every generated part counted in the model's vocabulary (or
  bytes), at least one token a piece, at most the attempt's output bound; input at its bound.
* `BOUND` — nothing known (the upstream may be generating, we cannot see it): the whole bound.
* `RELEASE` — given back, but only while nothing may have been generated: the request never left,
  or the upstream answered with an error status (providers bill no errors). Once a request may
  have been written upstream unanswered (`attempt`), RELEASE charges the BOUND instead.

`settling()` marks that an answer has taken the reservation (HELD → SETTLING): whoever ends the
request otherwise (an error, the client leaving) then leaves it to that answer. A reservation
knows the meter, the metrics and how to run work in the background — nothing else of the gateway.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import weakref
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aikeys import notices
from aikeys.ledger.meter import Meter, PendingSettle
from aikeys.ledger.store import MAX_AMOUNT, Allocation, Estimate, LedgerUnavailable
from aikeys.money import NANO_PER_USD, format_usd
from aikeys.usage import Output, Usage
from aikeys_gateway.cache.catalog import KeyEntry
from aikeys_gateway.observe.metrics import Metrics
from aikeys_gateway.pipeline.routing import Route

log = logging.getLogger("aikeys.gateway.charge")
Spawn = Callable[[Coroutine[Any, Any, Any]], None]  # runs work outside the request (background.py)


class State(enum.Enum):
    HELD = "held"
    SETTLING = "settling"
    SETTLED = "settled"
    RELEASED = "released"


@dataclass(frozen=True)
class Reported:
    usage: Usage


@dataclass(frozen=True)
class Counted:
    output: Output


class _Bound:
    def __repr__(self) -> str:
        return "BOUND"


class _Release:
    def __repr__(self) -> str:
        return "RELEASE"


BOUND = _Bound()
RELEASE = _Release()
Outcome = Reported | Counted | _Bound | _Release


def answered(usage: Usage | None, output: Output) -> Outcome:
    """What an answer read to its end says: its usage, else its counted output."""
    return Counted(output) if usage is None else Reported(usage)


@dataclass(eq=False)
class Tally:
    """What a request was charged, summed over its charged attempts (a fallback after a sent
    attempt charges both). `cost` in nano-USD."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    cost: int = 0
    charged: bool = False  # at least one attempt was charged (even zero tokens)
    overrun: bool = False  # the upstream reported more than was reserved

    def add(self, tin: int, tout: int, cached: int, written: int, cost: int) -> None:
        self.input_tokens += tin
        self.output_tokens += tout
        self.cached_tokens += cached
        self.cache_write_tokens += written
        self.cost += cost
        self.charged = True


@dataclass(frozen=True)
class Books:
    """What a reservation needs of the gateway: the ledger's meter, the metrics, a task spawner."""

    meter: Meter
    metrics: Metrics
    spawn: Spawn


class Reservation:
    def __init__(
        self,
        books: Books,
        alloc: Allocation,
        key: KeyEntry,
        route: Route,
        reserved: Estimate,
        bound: Estimate,
        tally: Tally,
        ledger_rid: str,
        request_id: str,
    ):
        self.books = books
        self.alloc = alloc
        self.key = key
        self.route = route  # the attempt in flight (or the one that answered): its price is charged
        self.reserved = reserved  # what is held: covers every attempt still possible
        self.bound = bound  # what the attempt in flight may cost, at its own price
        self.tally = tally  # the exchange's: what it was charged
        self.ledger_rid = ledger_rid
        self.request_id = request_id
        self.state = State.HELD
        self.billable = False  # the request may have reached the upstream: never simply released
        self.window: tuple[str, int, int] | None = None  # the attempt's model rate window

    @property
    def ended(self) -> bool:
        return self.state in (State.SETTLED, State.RELEASED)

    def in_flight(self) -> Callable[[], bool]:
        """For the lease heartbeat: true while this reservation is held and not ended (a weak
        reference: a request that is gone is not renewed)."""
        ref = weakref.ref(self)

        def check() -> bool:
            reservation = ref()
            return reservation is not None and not reservation.ended

        return check

    # --- the attempt in flight --------------------------------------------------------------------

    def attempt(self, route: Route, bound: Estimate, window: tuple[str, int, int] | None) -> None:
        """The next upstream attempt is being sent: from now on, it may have left."""
        self.route, self.bound, self.window, self.billable = route, bound, window, True

    def not_billed(self, keep_window: bool = False) -> None:
        """The attempt never left, or was answered with an error status: nothing to bill for it.
        Its place in the model's rate window is given back unless `keep_window`."""
        self.billable = False
        if not keep_window:
            self.give_back_window()

    def settling(self) -> bool:
        """An answer takes the reservation (HELD → SETTLING): it will close it. False when it was
        taken or closed already."""
        if self.state is not State.HELD:
            return False
        self.state = State.SETTLING
        return True

    # --- the one way it ends ----------------------------------------------------------------------

    async def close(self, outcome: Outcome) -> None:
        if self.ended:
            return
        if isinstance(outcome, _Release) and not self.billable:
            self.state = State.RELEASED
            self.give_back_window()
            await self.books.meter.release(self.alloc, self.ledger_rid)
            return
        if isinstance(outcome, Reported):
            await self._settle(outcome.usage)
        elif isinstance(outcome, Counted):  # input at its bound; output as counted
            counted = min(outcome.output.tokens(self.route.model.encoding), self.bound.output_tokens)
            await self._settle(Usage(self.bound.input_tokens, counted), at_bound=True)
        else:  # BOUND, or RELEASE of what may have been generated
            await self._settle(Usage(self.bound.input_tokens, self.bound.output_tokens), at_bound=True)

    async def closing(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run `work`, which closes this reservation; if it fails, close it anyway (released while
        nothing can have been generated, else charged), log and count the failure."""
        try:
            await work
        except Exception:
            self.books.metrics.background_failures.inc()
            log.exception(
                "settling failed; the charge is ended anyway", extra={"access": {"rid": self.request_id}}
            )
        finally:
            await self.close(RELEASE)  # nothing when `work` closed it

    # --- the model's rate window ------------------------------------------------------------------

    def give_back_window(self, used_tokens: int | None = None) -> None:
        """Correct the attempt's model rate window: to the tokens used (settled), or give the whole
        request back (refused or never sent). Best effort, off the request path."""
        if self.window is None:
            return
        scope, start, bound = self.window
        self.window = None
        requests, tokens = (-1, -bound) if used_tokens is None else (0, used_tokens - bound)
        self.books.spawn(self._adjust_window(scope, start, requests, tokens))

    async def _adjust_window(self, scope: str, start: int, requests: int, tokens: int) -> None:
        with contextlib.suppress(LedgerUnavailable):  # the window ends soon; it only stays stricter
            await self.books.meter.ledger.adjust_rate(scope, start, requests, tokens)

    # --- settling ---------------------------------------------------------------------------------

    async def _settle(self, u: Usage, at_bound: bool = False) -> None:
        """Charge `u` at the model's price per kind; input `at_bound` (its kind unknown) at the
        dearest input price, as it was reserved."""
        self.state = State.SETTLED
        tin, tout = u.all_input, u.output_tokens
        self.give_back_window(tin + tout)
        price = self.route.model.price
        if at_bound:
            cost = price.bound(tin, tout)
        else:
            cost = price.cost(
                u.input_tokens, tout, u.cached_tokens, u.cache_write_tokens, u.cache_write_1h_tokens
            )
        if cost > self.reserved.cost:
            self._overrun(tin, tout, cost)
            cost = min(cost, MAX_AMOUNT)
            tin, tout = min(tin, MAX_AMOUNT), min(tout, MAX_AMOUNT)
        m, k, meter = self.books.metrics, self.key, self.books.meter
        written = u.cache_write_tokens + u.cache_write_1h_tokens
        outcome = await meter.settle(
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
        m.settle_backlog.set(len(meter.backlog))
        self._count(u, tin, tout, cost, at_bound)
        self.tally.add(tin, tout, u.cached_tokens, written, cost)  # a fallback after a sent attempt adds both

    def _count(self, u: Usage, tin: int, tout: int, cost: int, at_bound: bool) -> None:
        m = self.books.metrics
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

    def _overrun(self, tin: int, tout: int, cost: int) -> None:
        p = self.route.provider
        self.books.metrics.overruns.labels(f"{p.namespace}:{p.name}", self.route.model_id).inc()
        self.tally.overrun = True
        log.warning(
            "upstream reported more than the reservation; charged as reported",
            extra={
                "access": {
                    "rid": self.request_id,
                    "provider": f"{p.namespace}:{p.name}",
                    "model": self.route.model_id,
                    "reserved_output_tokens": self.reserved.output_tokens,
                    "reported_output_tokens": tout,
                    "reported_input_tokens": tin,
                    "reserved_usd": format_usd(self.reserved.cost),
                    "charged_usd": format_usd(cost),
                }
            },
        )
        overrun = notices.Overrun(self.route.model.name, self.reserved.output_tokens, tout, self.request_id)
        self.books.spawn(_notify(self.books.meter, p.namespace, p.name, overrun))


async def _notify(meter: Meter, namespace: str, provider: str, overrun: notices.Overrun) -> None:
    try:
        await notices.report(meter.ledger.client, namespace, provider, overrun)
    except Exception:  # a notice is best effort; the metric and the log line already tell
        log.debug("overrun notice not recorded", exc_info=True)

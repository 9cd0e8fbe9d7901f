"""Which upstream to try first, and which next: weights, and circuit breakers.

A model served by several upstreams (its own and its `backends`) gets one of them as the first
attempt, chosen by weight; the others follow by weight as fallbacks. An upstream that failed
`failures` times in a row (connection failure, timeout, 429, 5xx) is left out for `open_seconds`,
then gets one trial request (half open): success closes its circuit, failure opens it again.
When every candidate is out, they are tried anyway (in order) rather than failing unasked.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from aikeys_gateway.pipeline.routing import Route


@dataclass
class Circuit:
    failures: int = 0
    opened_at: float | None = None  # also: when the last half-open trial was let through


class Breakers:
    def __init__(
        self,
        failures: int = 3,
        open_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ):
        self.threshold = failures
        self.open_seconds = open_seconds
        self.clock = clock
        self.rng = rng or random.Random()  # noqa: S311 - load spreading, not security
        self.circuits: dict[str, Circuit] = {}

    def _available(self, route: Route) -> bool:
        c = self.circuits.get(route.model_id)
        if c is None or c.opened_at is None:
            return True
        now = self.clock()
        if now - c.opened_at < self.open_seconds:
            return False
        c.opened_at = now  # half open: this request is the trial; the next one waits again
        return True

    def order(self, route: Route) -> list[Route]:
        """The attempts for a request to `route`'s model, first one by weight."""
        candidates = [route, *route.backends]
        if len(candidates) == 1:
            return candidates
        ranked = sorted(candidates, key=lambda r: -r.weight)
        weighted = [r for r in ranked if r.weight > 0]
        if weighted:
            first = self.rng.choices(weighted, weights=[r.weight for r in weighted])[0]
            ranked.remove(first)
            ranked.insert(0, first)
        usable = [r for r in ranked if self._available(r)]
        return usable or ranked

    def failed(self, route: Route) -> None:
        c = self.circuits.setdefault(route.model_id, Circuit())
        c.failures += 1
        if c.failures >= self.threshold or c.opened_at is not None:
            c.opened_at = self.clock()

    def succeeded(self, route: Route) -> None:
        self.circuits.pop(route.model_id, None)

    def is_open(self, model_id: str) -> bool:
        c = self.circuits.get(model_id)
        return c is not None and c.opened_at is not None

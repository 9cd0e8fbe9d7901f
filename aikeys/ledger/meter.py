"""The ledger as the gateway uses it: failure policy and a settle backlog.

* **fail-closed** (default): when Redis is unreachable or slow, `reserve` raises
  `LedgerUnavailable` and the gateway answers 503: nothing is served unmetered.
* **fail-open** (opt-in): `reserve` returns `UNMETERED` instead, the request is served, and
  `unmetered` counts it. Budgets can then be overspent while Redis is down.

In both modes a `settle` that cannot reach Redis is kept in an in-memory backlog and retried
(settles are idempotent per request id, so a retry never charges twice). If the process dies
with settles in its backlog, their leases expire and the reaper charges their estimates: a
charge is never lost.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from dataclasses import dataclass

from aikeys.ledger.store import (
    Allocation,
    Estimate,
    Ledger,
    LedgerUnavailable,
    ReserveOutcome,
    ReserveStatus,
    SettleOutcome,
)

log = logging.getLogger(__name__)


class FailurePolicy(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"


class Unmetered(enum.Enum):
    """A request let through without a reservation (fail-open with Redis down)."""

    UNMETERED = "unmetered"


UNMETERED = Unmetered.UNMETERED


@dataclass(frozen=True)
class PendingSettle:
    alloc: Allocation
    request_id: str
    key: str
    model: str
    input_tokens: int
    output_tokens: int
    cost: int


class Meter:
    def __init__(
        self, ledger: Ledger, policy: FailurePolicy = FailurePolicy.CLOSED, backlog_limit: int = 100_000
    ):
        self.ledger = ledger
        self.policy = policy
        self.backlog: deque[PendingSettle] = deque(maxlen=backlog_limit)
        self.unmetered = 0  # requests let through in fail-open mode
        self.errors = 0  # ledger calls that failed (Redis down or slow)
        self._wake = asyncio.Event()

    async def reserve(
        self, alloc: Allocation, request_id: str, key: str, model: str, estimate: Estimate
    ) -> ReserveOutcome | Unmetered:
        """Reserve, or apply the failure policy when Redis is down or answered too late (an
        EXPIRED reserve counts as unavailable: the caller never sees that status)."""
        try:
            outcome = await self.ledger.reserve(alloc, request_id, key, model, estimate)
            if outcome.status is ReserveStatus.EXPIRED:
                raise LedgerUnavailable("redis ran the reserve after its deadline")
        except LedgerUnavailable:
            self.errors += 1
            if self.policy is FailurePolicy.OPEN:
                self.unmetered += 1
                return UNMETERED
            raise
        return outcome

    async def settle(self, pending: PendingSettle) -> SettleOutcome | None:
        """Charge now, or queue the charge for retry when Redis is unreachable (returns None)."""
        try:
            return await self._settle(pending)
        except LedgerUnavailable:
            self.errors += 1
            self.backlog.append(pending)
            self._wake.set()
            log.warning("ledger unavailable: settle queued", extra={"backlog": len(self.backlog)})
            return None

    async def release(self, alloc: Allocation, request_id: str) -> None:
        """Give a reservation back; if Redis is down the lease expires and is reaped instead."""
        try:
            await self.ledger.release(alloc, request_id)
        except LedgerUnavailable:
            self.errors += 1

    async def _settle(self, p: PendingSettle) -> SettleOutcome:
        return await self.ledger.settle(
            p.alloc, p.request_id, p.key, p.model, p.input_tokens, p.output_tokens, p.cost
        )

    async def drain_once(self) -> int:
        """Retry queued settles in order; stop at the first failure. Returns how many landed."""
        landed = 0
        while self.backlog:
            try:
                await self._settle(self.backlog[0])
            except LedgerUnavailable:
                self.errors += 1
                break
            self.backlog.popleft()
            landed += 1
        return landed

    async def run_drainer(self, interval: float = 1.0) -> None:
        """Background task: keep retrying the backlog until cancelled."""
        while True:
            await self._wake.wait()
            await self.drain_once()
            if not self.backlog:
                self._wake.clear()
            else:
                await asyncio.sleep(interval)

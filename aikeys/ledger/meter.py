"""The ledger as the gateway uses it: failure policy, a settle backlog, background releases and
lease heartbeats.

* **fail-closed** (default): when Redis is unreachable or slow, `reserve` raises
  `LedgerUnavailable` and the gateway answers 503: nothing is served unmetered.
* **fail-open** (opt-in): `reserve` returns `UNMETERED` instead, the request is served, and
  `unmetered` counts it. Budgets can then be overspent while Redis is down.

In both modes a `settle` that cannot reach Redis is kept in an in-memory backlog and retried
(settles are idempotent per request id, so a retry never charges twice). If the process dies
with settles in its backlog, their leases expire and the reaper charges their estimates: a
charge is never lost.

A reserve that failed in fail-closed mode may still have reached Redis (the reply was lost or
late). Its request id is released in the background (`run_drainer`) until a release lands, for
at most one lease: the release gives back a reservation Redis made, or leaves a tombstone that
refuses a reserve Redis runs later. With the reserve deadline (a late reserve writes nothing)
a request answered 503 is never charged. Releases that fail are retried the same way.

Reservations in flight are kept in `live`; `run_heartbeat` renews their leases every lease/4,
so a stream longer than the lease is never reaped while this process runs — but only while the
request still holds it (`in_flight`): a reservation whose request is gone is left to expire and
the reaper charges its estimate. If the process dies, the heartbeats stop and the leases expire
as before.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from aikeys.ledger.store import (
    Allocation,
    Estimate,
    KeyLabel,
    Ledger,
    LedgerUnavailable,
    RateLimit,
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
    key: str  # the AIKey's uid
    model: str
    input_tokens: int
    output_tokens: int
    cost: int
    label: KeyLabel | None = None  # the key's name and owner, for usage reports
    cached_tokens: int = 0  # of input_tokens (every kind): read from the provider's prompt cache
    cache_write_tokens: int = 0  # of input_tokens: written to it (5-minute and 1-hour writes)


def _always() -> bool:
    return True


@dataclass
class LiveReservation:
    """A reservation this process holds: `renewed` is when its lease was last set (monotonic);
    `in_flight` says whether its request is still being served (else its lease is left to expire)."""

    alloc: Allocation
    started: float
    renewed: float
    in_flight: Callable[[], bool] = _always


@dataclass(frozen=True)
class PendingRelease:
    alloc: Allocation
    request_id: str
    give_up: float  # monotonic: after this the lease is over, a release is of no more use


Ref = tuple[str, str]  # (allocation key prefix, request id)


def _ref(alloc: Allocation, request_id: str) -> Ref:
    return (alloc.keys.prefix, request_id)


class Meter:
    def __init__(
        self,
        ledger: Ledger,
        policy: FailurePolicy = FailurePolicy.CLOSED,
        backlog_limit: int = 100_000,
        *,
        max_hold: float = 6 * 3600.0,
    ):
        """`max_hold` (seconds) bounds how long the heartbeat keeps one reservation alive: a request
        that neither settles nor releases (a bug) must not hold budget forever."""
        self.ledger = ledger
        self.policy = policy
        self.backlog: deque[PendingSettle] = deque(maxlen=backlog_limit)
        self.releases: dict[Ref, PendingRelease] = {}
        self.releases_limit = backlog_limit
        self.live: dict[Ref, LiveReservation] = {}
        self.max_hold = max_hold
        # counters (metrics)
        self.unmetered = 0  # requests let through in fail-open mode
        self.errors = 0  # ledger calls that failed (Redis down or slow)
        self.released_in_background = 0  # background releases that landed
        self.releases_dropped = 0  # background releases given up (lease over, or too many)
        self.leases_extended = 0  # leases renewed by the heartbeat
        self.leases_lost = 0  # live reservations the heartbeat found gone (reaped meanwhile)
        self.holds_dropped = 0  # live reservations no longer renewed after max_hold
        self._wake = asyncio.Event()

    @property
    def pending_releases(self) -> int:
        """Request ids still to be released in the background."""
        return len(self.releases)

    @property
    def live_reservations(self) -> int:
        return len(self.live)

    async def reserve(
        self,
        alloc: Allocation,
        request_id: str,
        key: str,
        model: str,
        estimate: Estimate,
        key_limits: RateLimit | None = None,
        label: KeyLabel | None = None,
        in_flight: Callable[[], bool] = _always,
    ) -> ReserveOutcome | Unmetered:
        """Reserve, or apply the failure policy when Redis is down or answered too late (an
        EXPIRED reserve counts as unavailable: the caller never sees that status). The heartbeat
        renews the reservation's lease while `in_flight()` is true."""
        try:
            outcome = await self.ledger.reserve(
                alloc, request_id, key, model, estimate, key_limits=key_limits, label=label
            )
            if outcome.status is ReserveStatus.EXPIRED:
                raise LedgerUnavailable("redis ran the reserve after its deadline")
        except LedgerUnavailable:
            self.errors += 1
            if self.policy is FailurePolicy.OPEN:
                # served anyway: its settle clears whatever Redis may have reserved (a release
                # here would make that settle a no-op and lose the charge)
                self.unmetered += 1
                return UNMETERED
            self._release_later(alloc, request_id)
            raise
        if outcome.accepted:
            now = time.monotonic()
            self.live[_ref(alloc, request_id)] = LiveReservation(alloc, now, now, in_flight)
        return outcome

    async def settle(self, pending: PendingSettle) -> SettleOutcome | None:
        """Charge now, or queue the charge for retry when Redis is unreachable (returns None)."""
        self.live.pop(_ref(pending.alloc, pending.request_id), None)
        try:
            return await self._settle(pending)
        except LedgerUnavailable:
            self.errors += 1
            self.backlog.append(pending)
            self._wake.set()
            log.warning("ledger unavailable: settle queued", extra={"backlog": len(self.backlog)})
            return None

    async def release(self, alloc: Allocation, request_id: str) -> None:
        """Give a reservation back; if Redis is down, retry in the background (for one lease)."""
        self.live.pop(_ref(alloc, request_id), None)
        try:
            await self.ledger.release(alloc, request_id)
        except LedgerUnavailable:
            self.errors += 1
            self._release_later(alloc, request_id)

    def _release_later(self, alloc: Allocation, request_id: str) -> None:
        ref = _ref(alloc, request_id)
        self.releases.pop(ref, None)
        give_up = time.monotonic() + self.ledger.lease_ms / 1000
        self.releases[ref] = PendingRelease(alloc, request_id, give_up)
        while len(self.releases) > self.releases_limit:
            del self.releases[next(iter(self.releases))]
            self.releases_dropped += 1
        self._wake.set()

    async def _settle(self, p: PendingSettle) -> SettleOutcome:
        return await self.ledger.settle(
            p.alloc, p.request_id, p.key, p.model, p.input_tokens, p.output_tokens, p.cost, p.label
        )

    async def drain_once(self) -> int:
        """Retry queued settles in order, then queued releases; stop at the first failure.
        Returns how many landed."""
        landed = 0
        while self.backlog:
            try:
                await self._settle(self.backlog[0])
            except LedgerUnavailable:
                self.errors += 1
                return landed
            self.backlog.popleft()
            landed += 1
        for ref, p in list(self.releases.items()):
            if time.monotonic() > p.give_up:
                self.releases_dropped += 1
                log.warning("background release given up", extra={"request_id": p.request_id})
            else:
                try:
                    await self.ledger.release(p.alloc, p.request_id)
                except LedgerUnavailable:
                    self.errors += 1
                    break
                self.released_in_background += 1
                landed += 1
            if self.releases.get(ref) is p:
                del self.releases[ref]
        return landed

    async def run_drainer(self, interval: float = 1.0) -> None:
        """Background task: keep retrying the backlog and the releases until cancelled."""
        while True:
            await self._wake.wait()
            try:
                await self.drain_once()
            except Exception:  # a script error (BUSY, OOM…) must not end the retries for good
                self.errors += 1
                log.exception("settle backlog: drain failed; retrying")
            if not self.backlog and not self.releases:
                self._wake.clear()
            else:
                await asyncio.sleep(interval)

    # --- heartbeat ------------------------------------------------------------------------------

    async def heartbeat_once(self) -> int:
        """Renew the lease of every live reservation whose lease was set more than lease/4 ago,
        one script call per allocation; stop at the first failure. Returns how many were renewed."""
        now = time.monotonic()
        quarter = self.ledger.lease_ms / 4000
        due: dict[str, tuple[Allocation, list[str]]] = {}
        for ref, live in list(self.live.items()):
            if now - live.started > self.max_hold or not live.in_flight():
                del self.live[ref]
                self.holds_dropped += 1
                log.warning(
                    "reservation no longer renewed: held too long or its request is gone",
                    extra={"request_id": ref[1]},
                )
            elif now - live.renewed >= quarter:
                due.setdefault(ref[0], (live.alloc, []))[1].append(ref[1])
        renewed = 0
        for prefix, (alloc, rids) in due.items():
            for i in range(0, len(rids), 1000):
                chunk = rids[i : i + 1000]
                try:
                    flags = await self.ledger.extend_many(alloc, chunk)
                except LedgerUnavailable:
                    self.errors += 1
                    return renewed
                for rid, ok in zip(chunk, flags, strict=True):
                    entry = self.live.get((prefix, rid))
                    if entry is None:  # settled or released meanwhile
                        continue
                    if ok:
                        entry.renewed = now
                        renewed += 1
                    else:  # reaped meanwhile (this process could not renew it in time)
                        del self.live[(prefix, rid)]
                        self.leases_lost += 1
        self.leases_extended += renewed
        return renewed

    async def run_heartbeat(self, interval: float | None = None, clock_sync_every: float = 300.0) -> None:
        """Background task: every `interval` (default lease/4) renew the live leases; every
        `clock_sync_every` seconds (and first) measure the clock offset to Redis again."""
        period = interval if interval is not None else self.ledger.lease_ms / 4000
        synced = -clock_sync_every
        while True:
            try:
                if time.monotonic() - synced >= clock_sync_every:
                    await self.ledger.sync_clock()
                    synced = time.monotonic()
            except LedgerUnavailable:
                self.errors += 1
            try:
                await self.heartbeat_once()
            except Exception:  # a bug must not stop the heartbeats of every other stream
                log.exception("lease heartbeat failed")
            await asyncio.sleep(period)

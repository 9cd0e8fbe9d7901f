"""Status refreshes written to the API server at a bounded rate, however many keys are in use.

What the ledger shows (spend, last use, an Allocation's counters) becomes a merge patch that is
queued here, not written at once. Patches are coalesced per object: a newer patch for an object
already queued merges into it (the values are absolute, the newest wins) and keeps its place.
When both kinds wait, Allocations and AIKeys take turns (under traffic every busy allocation
changes on every look, and would otherwise starve the keys); within a kind, first queued, first
written. At most `rate` writes a second leave (a token bucket, `burst` at once after a quiet
spell), so a status is at most about `backlog / rate` seconds behind the ledger (twice that while
the other kind has a backlog too): with 10,000 keys charged in the same minute and the default 20
writes/s, each key's spend is rewritten every 8 to 16 minutes, and 1,000 busy allocations each
every 50 to 100 seconds.

Lifecycle writes (a minted key, an expiry, a disable) do not go through here: they follow what a
user or the clock did, one write each, and must not wait behind refreshes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aikeys.kube.client import KubeClient, NotFound, resource_path

log = logging.getLogger("aikeys.operator")
Key = tuple[str, str]
JSON = dict[str, Any]
KINDS = ("allocations", "aikeys")  # in the order they are written


class StatusWriter:
    def __init__(
        self,
        kube: KubeClient,
        rate: float = 20.0,
        burst: int | None = None,
        on_written: Callable[[str, Key, JSON], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.kube = kube
        self.rate = rate
        self.burst = float(burst if burst is not None else max(1, int(rate)))
        self.on_written = on_written
        self.clock = clock
        self._queues: dict[str, deque[Key]] = {kind: deque() for kind in KINDS}
        self._patches: dict[str, dict[Key, JSON]] = {kind: {} for kind in KINDS}
        self._since: dict[str, dict[Key, float]] = {kind: {} for kind in KINDS}
        self._tokens = self.burst
        self._turn = len(KINDS) - 1  # allocations first
        self._filled = clock()
        self._ready = asyncio.Event()
        self.written = dict.fromkeys(KINDS, 0)
        self.failed = 0

    def put(self, kind: str, key: Key, patch: JSON) -> None:
        if not patch:
            return
        queued = self._patches[kind].get(key)
        if queued is None:
            self._patches[kind][key] = dict(patch)
            self._since[kind][key] = self.clock()
            self._queues[kind].append(key)
            self._ready.set()
        else:
            queued.update(patch)

    def pending(self, kind: str, key: Key) -> JSON | None:
        """The patch queued for an object, not yet written (to compute the next one against)."""
        return self._patches[kind].get(key)

    def forget(self, kind: str, key: Key) -> None:
        self._patches[kind].pop(key, None)
        self._since[kind].pop(key, None)

    def backlog(self, kind: str | None = None) -> int:
        return sum(len(self._patches[k]) for k in ((kind,) if kind else KINDS))

    def lag(self) -> float:
        """Seconds the oldest queued patch has waited (0: nothing queued)."""
        oldest = [min(since.values()) for since in self._since.values() if since]
        return max(0.0, self.clock() - min(oldest)) if oldest else 0.0

    def _next(self) -> tuple[str, Key, JSON] | None:
        self._turn = (self._turn + 1) % len(KINDS)
        for kind in KINDS[self._turn :] + KINDS[: self._turn]:
            queue, patches = self._queues[kind], self._patches[kind]
            while queue:
                key = queue.popleft()
                patch = patches.pop(key, None)
                if patch is not None:  # else forgotten (deleted) since
                    self._since[kind].pop(key, None)
                    return kind, key, patch
        return None

    async def _token(self) -> None:
        while True:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._filled) * self.rate)
            self._filled = now
            if self._tokens >= 1:
                self._tokens -= 1
                return
            await asyncio.sleep((1 - self._tokens) / self.rate)

    async def write(self, kind: str, key: Key, patch: JSON) -> None:
        namespace, name = key
        try:
            obj = await self.kube.patch(resource_path(kind, namespace, name, "status"), {"status": patch})
        except NotFound:
            return  # deleted since
        except Exception as err:  # the API server is away: put it back (a newer patch wins)
            self.failed += 1
            log.warning("status of %s %s/%s not written: %s", kind, namespace, name, err)
            newer = self._patches[kind].get(key)
            if newer is None:
                self.put(kind, key, patch)
            else:
                self._patches[kind][key] = {**patch, **newer}
            await asyncio.sleep(1.0)
            return
        self.written[kind] += 1
        if self.on_written is not None:
            self.on_written(kind, key, obj)

    async def run(self) -> None:
        while True:
            item = self._next()
            if item is None:
                self._ready.clear()
                await self._ready.wait()
                continue
            await self._token()
            await self.write(*item)

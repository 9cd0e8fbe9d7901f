"""One timer for every deadline, and one queue for every key to reconcile.

`Deadlines` replaces a task per AIKey: a heap of (moment, key) and one task that sleeps until the
earliest moment and hands each due key to a callback. Setting a key's deadline again supersedes
the old entry (left in the heap and skipped when it comes up, compacted when stale entries
pile up), so the heap costs one small tuple per key with a deadline.

`WorkQueue` is a keyed queue in the manner of client-go's: a key is queued at most once however
often it is added; a key being worked on is not handed out again until it is `done`, and if it
was added meanwhile it is queued again then. Urgent keys (time-driven changes, spec changes of
keys that exist) go before the rest (a burst of new keys to mint), so a disable or an expiry
never waits behind ten thousand creates.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Deadlines(Generic[K]):
    def __init__(self, due: Callable[[K], None], clock: Callable[[], float] = time.time):
        self._due = due
        self._clock = clock
        self._heap: list[tuple[float, K]] = []
        self._at: dict[K, float] = {}
        self._wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self._at)

    def get(self, key: K) -> float | None:
        return self._at.get(key)

    def set(self, key: K, when: float | None) -> None:
        """`key` is due at `when` (epoch seconds); None: never."""
        if when is None:
            self._at.pop(key, None)
            return
        if self._at.get(key) == when:
            return
        self._at[key] = when
        first = self._heap[0][0] if self._heap else None
        heapq.heappush(self._heap, (when, key))
        if len(self._heap) > 2 * len(self._at) + 1024:  # superseded entries: rebuild
            self._heap = [(w, k) for k, w in self._at.items()]
            heapq.heapify(self._heap)
        if first is None or when < first:
            self._wake.set()

    def discard(self, key: K) -> None:
        self._at.pop(key, None)

    def pop_due(self) -> list[K]:
        """The keys whose moment has come (each once), earliest first."""
        now = self._clock()
        due = []
        while self._heap and self._heap[0][0] <= now:
            when, key = heapq.heappop(self._heap)
            if self._at.get(key) == when:
                del self._at[key]
                due.append(key)
        return due

    def next_in(self) -> float | None:
        """Seconds until the earliest live deadline (None: none)."""
        while self._heap and self._at.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)  # superseded or discarded
        return max(self._heap[0][0] - self._clock(), 0.0) if self._heap else None

    async def run(self) -> None:
        while True:
            for key in self.pop_due():
                self._due(key)
            self._wake.clear()
            wait = self.next_in()
            if wait is not None and wait <= 0:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)


class WorkQueue(Generic[K]):
    def __init__(self) -> None:
        self._urgent: deque[K] = deque()
        self._normal: deque[K] = deque()
        self._queued: dict[K, bool] = {}  # key → queued as urgent
        self._busy: set[K] = set()
        self._again: dict[K, bool] = {}  # added while busy → urgent
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def __len__(self) -> int:
        return len(self._queued)

    @property
    def busy(self) -> int:
        return len(self._busy)

    def idle(self) -> bool:
        return not self._queued and not self._busy

    async def drained(self) -> None:
        """Until nothing is queued or being worked on."""
        while not self.idle():
            self._idle.clear()
            await self._idle.wait()

    def add(self, key: K, urgent: bool = False) -> None:
        if key in self._busy:
            self._again[key] = self._again.get(key, False) or urgent
            return
        queued = self._queued.get(key)
        if queued is None:
            self._queued[key] = urgent
            (self._urgent if urgent else self._normal).append(key)
            self._ready.set()
        elif urgent and not queued:  # promote: the entry in the normal lane is skipped later
            self._queued[key] = True
            self._urgent.append(key)
            self._ready.set()

    def forget(self, key: K) -> None:
        """Drop a queued key (deleted); one being worked on finishes."""
        self._queued.pop(key, None)
        self._again.pop(key, None)
        if self.idle():
            self._idle.set()

    def _pop(self) -> K | None:
        for lane, urgent in ((self._urgent, True), (self._normal, False)):
            while lane:
                key = lane.popleft()
                if self._queued.get(key) is urgent:
                    del self._queued[key]
                    self._busy.add(key)
                    return key
        return None

    async def get(self) -> K:
        while True:
            key = self._pop()
            if key is not None:
                return key
            self._ready.clear()
            await self._ready.wait()

    def done(self, key: K) -> None:
        self._busy.discard(key)
        again = self._again.pop(key, None)
        if again is not None:
            self.add(key, again)
        elif self.idle():
            self._idle.set()

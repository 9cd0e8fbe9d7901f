"""Work that outlives its request: settles, window corrections, notices.

A client that leaves must not stop a charge, so this work runs outside the request's task (and its
cancellation). A task that fails is logged and counted (`aikeys_background_failures_total`), never
silent; at shutdown `drain()` waits for whatever is still running.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from aikeys_gateway.observe.metrics import Metrics

log = logging.getLogger("aikeys.gateway.access")


class Background:
    def __init__(self, metrics: Metrics):
        self.metrics = metrics
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.metrics.background_failures.inc()
            log.error("background task failed", exc_info=task.exception())

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

"""What the ledger holds for an allocation, read straight from the test's redis-server."""

from __future__ import annotations

import asyncio

from aikeys_dev.devstack.redis import RedisServer

from aikeys.ledger.store import Allocation, Ledger, PeriodState, connect
from aikeys.periods import Period


def period_state(redis_server: RedisServer, namespace: str, name: str) -> PeriodState:
    """The current period's counters of the monthly allocation `namespace/name`."""

    async def read() -> PeriodState:
        c = connect(redis_server.url)
        try:
            return await Ledger(c).period_state(Allocation(namespace, name, 0, Period.MONTHLY))
        finally:
            await c.aclose()

    return asyncio.run(read())

"""A redis-server that can be stalled on purpose, for the tests of what a stalled ledger does."""

from __future__ import annotations

import asyncio

from aikeys.ledger.store import connect


async def stall(url: str, seconds: float) -> asyncio.Task[object]:
    """Block the whole redis-server for `seconds` (DEBUG SLEEP from another connection), as a
    burst or a slow fork would; returns once the server is blocked."""
    other = connect(url, timeout=seconds + 5)
    await other.ping()

    async def sleep() -> object:
        try:
            return await other.execute_command("DEBUG", "SLEEP", str(seconds))
        finally:
            await other.aclose()

    task = asyncio.create_task(sleep())
    await asyncio.sleep(0.1)
    return task

"""A separate process hammering one allocation (used by test_ledger_concurrency).

    python -m tests.integration.ledger_worker URL NAMESPACE NAME BUDGET TASKS COST

Runs TASKS concurrent reserve → settle cycles and prints {"accepted": N, "unavailable": M}.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid

from aikeys.ledger.store import Allocation, Estimate, Ledger, LedgerUnavailable, connect


async def cycle(ledger: Ledger, alloc: Allocation, cost: int) -> str:
    rid = uuid.uuid4().hex
    try:
        outcome = await ledger.reserve(alloc, rid, "worker", "m", Estimate(cost, 1, 1))
        if not outcome.accepted:
            return "refused"
        await asyncio.sleep(0)  # let other cycles interleave between reserve and settle
        await ledger.settle(alloc, rid, "worker", "m", 1, 1, cost)
    except LedgerUnavailable:
        return "unavailable"
    return "accepted"


async def main(url: str, namespace: str, name: str, budget: int, tasks: int, cost: int) -> None:
    client = connect(url, timeout=5, max_connections=tasks)
    ledger = Ledger(client)
    alloc = Allocation(namespace, name, budget)
    results = await asyncio.gather(*(cycle(ledger, alloc, cost) for _ in range(tasks)))
    await client.aclose()
    print(json.dumps({k: results.count(k) for k in ("accepted", "refused", "unavailable")}))


if __name__ == "__main__":
    url, ns, name, budget, tasks, cost = sys.argv[1:7]
    asyncio.run(main(url, ns, name, int(budget), int(tasks), int(cost)))

"""Ledger micro-benchmark: reserve+settle latency and throughput of one process on local Redis.

    python -m bench.ledger_bench [--cycles 5000] [--concurrency 64] [--redis-url URL] [--out FILE]

Starts its own redis-server (no persistence) unless --redis-url is given, and prints a Markdown
table. Each cycle is one reserve and one settle (two script calls, two round trips).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import uvloop
from aikeys_dev.devstack.redis import launch_redis

from aikeys.ledger.store import Allocation, Estimate, KeyLabel, Ledger, RateLimit, connect

UNREACHABLE = RateLimit(requests=10**9, tokens=10**15)  # checked and counted, never reached
KEY = str(uuid.uuid4())  # as the gateway does: the key by its AIKey's uid, its name and owner as a label
LABEL = KeyLabel("bench-key", "system:serviceaccount:bench:someone")


async def cycle(ledger: Ledger, alloc: Allocation, key_limits: RateLimit | None = None) -> float:
    rid = uuid.uuid4().hex
    start = time.perf_counter()
    outcome = await ledger.reserve(
        alloc, rid, KEY, "bench:p/m", Estimate(1000, 10, 10), key_limits=key_limits, label=LABEL
    )
    assert outcome.accepted
    await ledger.settle(alloc, rid, KEY, "bench:p/m", 10, 10, 900, LABEL)
    return time.perf_counter() - start


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(url: str, cycles: int, concurrency: int) -> list[str]:
    client = connect(url, timeout=5, max_connections=concurrency + 4)
    ledger = Ledger(client)
    alloc = Allocation("bench", f"a-{uuid.uuid4().hex[:6]}", budget=10**15)
    for _ in range(200):  # warm-up: connections, script cache
        await cycle(ledger, alloc)
    sequential = [await cycle(ledger, alloc) for _ in range(cycles)]
    start = time.perf_counter()
    queue = iter(range(cycles))

    async def worker() -> None:
        for _ in queue:
            await cycle(ledger, alloc)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    limited = Allocation("bench", f"r-{uuid.uuid4().hex[:6]}", budget=10**15, limits=UNREACHABLE)
    for _ in range(200):
        await cycle(ledger, limited, UNREACHABLE)
    rate_limited = [await cycle(ledger, limited, UNREACHABLE) * 1000 for _ in range(cycles)]
    await client.aclose()
    ms = [s * 1000 for s in sequential]
    return [
        "| measure | value |",
        "| --- | --- |",
        f"| reserve+settle latency, concurrency 1, p50 | {statistics.median(ms):.3f} ms |",
        f"| reserve+settle latency, concurrency 1, p99 | {pct(ms, 0.99):.3f} ms |",
        f"| reserve+settle cycles/s, concurrency 1 | {cycles / (sum(sequential)):,.0f} |",
        f"| reserve+settle cycles/s, concurrency {concurrency} | {cycles / elapsed:,.0f} |",
        f"| same, with allocation and key rate limits checked in the reserve, p50 | "
        f"{statistics.median(rate_limited):.3f} ms |",
        f"| same, with allocation and key rate limits, p99 | {pct(rate_limited, 0.99):.3f} ms |",
        f"| cycles measured | {cycles} each |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cycles", type=int, default=5000, help="cycles per measurement (default 5000)")
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent cycles (default 64)")
    parser.add_argument("--redis-url", help="use this Redis instead of starting one")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    server = None
    if args.redis_url is None:
        server = launch_redis(Path(tempfile.mkdtemp(prefix="aikeys-bench-")))
    try:
        url = args.redis_url or server.url  # type: ignore[union-attr]
        lines = uvloop.run(run(url, args.cycles, args.concurrency))  # the gateway's event loop
    finally:
        if server:
            server.stop()
    table = "\n".join(["## Ledger: one process (uvloop), local redis-server", "", *lines, ""])
    print(table)
    if args.out:
        args.out.write_text(table)


if __name__ == "__main__":
    main()

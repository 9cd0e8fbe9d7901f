"""Gateway benchmark: the mock upstream hit directly vs. through the gateway, same run, same wrk.

    python -m bench.gateway_bench [--seconds 8] [--out docs/benchmarks.md]

Through the gateway every request is authenticated, reserved and settled in Redis and counted in
Prometheus metrics (access logs off). Everything runs on this machine: wrk, the mock upstream, the
gateway, Redis and the control plane share its cores, so absolute numbers are a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from pathlib import Path

import aiohttp

from aikeys.devstack.services import GatewayProcess
from bench import wrk
from bench.stack import MODEL, bench_stack

CHAT = {"model": "", "messages": [{"role": "user", "content": "Hello, world!"}], "max_tokens": 16}


def body_for(model: str, stream: bool = False) -> str:
    return json.dumps({**CHAT, "model": model, "stream": stream})


async def first_chunk_ms(url: str, body: str, headers: dict[str, str], n: int) -> tuple[float, list[float]]:
    """p50 time to the first SSE event over `n` sequential streams, and one stream's chunk gaps."""
    ttfb: list[float] = []
    gaps: list[float] = []
    async with aiohttp.ClientSession() as session:
        for i in range(n):
            start = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as resp:
                first = True
                last = start
                async for _ in resp.content.iter_any():
                    now = time.perf_counter()
                    if first:
                        ttfb.append((now - start) * 1000)
                        first = False
                    elif i == n - 1:
                        gaps.append((now - last) * 1000)
                    last = now
    return statistics.median(ttfb), gaps


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=8, help="duration of each wrk run (default 8)")
    parser.add_argument("--out", type=Path, help="write the Markdown report here")
    args = parser.parse_args()
    rows: list[str] = []
    with bench_stack() as stack:
        direct = f"{stack.mock.url}/chat/completions"
        direct_headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-upstream"}
        gw_headers = {"Content-Type": "application/json", "Authorization": f"Bearer {stack.key}"}
        results: dict[str, wrk.WrkResult] = {}
        gw1 = stack.gateway(1, "gw1")
        try:
            via = f"{gw1.openai_url}/chat/completions"
            model = MODEL
            wrk.run(via, body_for(model), gw_headers, 8, 2)  # warm-up
            for c in (1, 32):
                results[f"direct c={c}"] = wrk.run(direct, body_for("gpt"), direct_headers, c, args.seconds)
                results[f"gateway c={c}"] = wrk.run(via, body_for(model), gw_headers, c, args.seconds)
            d_ttfb, _ = asyncio.run(first_chunk_ms(direct, body_for("gpt", True), direct_headers, 200))
            g_ttfb, _ = asyncio.run(first_chunk_ms(via, body_for(model, True), gw_headers, 200))
            stack.mock.configure(chunk_delay_ms=20)
            _, gaps = asyncio.run(first_chunk_ms(via, body_for(model, True), gw_headers, 3))
            stack.mock.configure(chunk_delay_ms=0)
        finally:
            gw1.stop()
        gw2: GatewayProcess = stack.gateway(2, "gw2")
        try:
            results["gateway 2 workers c=32"] = wrk.run(
                f"{gw2.openai_url}/chat/completions", body_for(model), gw_headers, 32, args.seconds, threads=1
            )
        finally:
            gw2.stop()

    for name, r in results.items():
        rows.append(f"| {name} | {r.row()} | {r.errors} |")
    d1, g1 = results["direct c=1"], results["gateway c=1"]
    d32, g32 = results["direct c=32"], results["gateway c=32"]
    g2 = results["gateway 2 workers c=32"]
    ratio = g32.requests_per_second / d32.requests_per_second
    scaling = g2.requests_per_second / g32.requests_per_second
    report = "\n".join(
        [
            "## Gateway vs. direct (non-streaming chat completion, 16 output tokens)",
            "",
            f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}; "
            "wrk, mock upstream, gateway, Redis and the control plane all on it.",
            "",
            "| run | req/s | p50 ms | p90 ms | p99 ms | errors |",
            "| --- | --- | --- | --- | --- | --- |",
            *rows,
            "",
            "| derived | value |",
            "| --- | --- |",
            f"| added latency at concurrency 1, p50 | {g1.p50_ms - d1.p50_ms:.3f} ms |",
            f"| added latency at concurrency 1, p99 | {g1.p99_ms - d1.p99_ms:.3f} ms |",
            f"| throughput ratio gateway/direct at 32 connections | {ratio:.2f} |",
            f"| scaling 1 → 2 workers at 32 connections | {scaling:.2f}x |",
            f"| streaming: time to first chunk, direct p50 | {d_ttfb:.3f} ms |",
            f"| streaming: time to first chunk, gateway p50 | {g_ttfb:.3f} ms (+{g_ttfb - d_ttfb:.3f} ms) |",
            f"| streaming: gaps between chunks through the gateway (upstream sends every 20 ms) | "
            f"min {min(gaps):.1f} / median {statistics.median(gaps):.1f} / max {max(gaps):.1f} ms |",
            "",
        ]
    )
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()

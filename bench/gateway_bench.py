"""Gateway benchmark: nginx hit directly, the aikeys gateway and LiteLLM's proxy in front of it, one run.

    python -m bench.gateway_bench [--seconds 8] [--no-litellm] [--out FILE]

The upstream is a static nginx (bench.nginx) answering every chat completion with one fixed
16-token completion; all three systems are loaded by the same wrk (bench.wrk) at 1, 16 and 32
connections:

- nginx direct: the floor, what the load tool and the machine can do;
- the aikeys gateway as the Helm chart installs it (bench.chart: its defaults, the access log,
  per-key metrics and the usage API's listener on; Redis with AOF), every request authenticated,
  reserved in Redis, sent upstream, settled with the upstream's token counts, counted in
  Prometheus metrics and logged; beside it, in alternating runs, the same chart with
  `gateway.accessLog=false` (bench.chart.TUNED); then the chart's defaults with two workers
  (`gateway.workers=2`) at 32 connections;
- LiteLLM's proxy (bench.litellm), one worker, passthrough only: one model, no keys, no budgets.

What each chart setting costs on its own: bench.variants.

CPU per request: utime+stime of each process tree (a uvicorn parent and its workers) from /proc
just before and after a wrk run, divided by the requests wrk completed (bench.cpu). Redis's beside
the gateway's.

Streaming (through the gateway with the chart's defaults), twice:

- against the static nginx SSE body (bench.nginx, its `/sse/v1` path; provider `nginx-sse`), with
  the same wrk at 1 and 32 connections, direct and through the gateway: POSTs with `"stream": true`
  and `stream_options.include_usage`, so the client gets every event, usage chunk included. The body
  is static, so a request's latency is the time to its first byte plus a few µs;
- against the Python mock upstream (nginx cannot pace chunks): time to first chunk direct and
  through the gateway (aiohttp, sequential), and the gaps of a stream paced at 20 ms. The mock
  shares the cores with the gateway and the client, so its figures say as much about the mock.

Everything runs on this machine: wrk, nginx, the gateway, Redis and the control plane share its
cores, so absolute numbers are a floor; compare within one run. `--seconds 2` is a smoke run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aikeys_dev.devstack.services import GatewayProcess

from bench import cpu, wrk
from bench.chart import TUNED, Rendered
from bench.litellm import VERSION as LITELLM_VERSION
from bench.litellm import launch_litellm
from bench.nginx import MODEL as UPSTREAM_MODEL
from bench.nginx import sse_body
from bench.stack import MODEL, NGINX_MODEL, SSE_MODEL, BenchStack, bench_stack

CHAT = {"model": "", "messages": [{"role": "user", "content": "Hello, world!"}], "max_tokens": 16}
CONNECTIONS = (1, 16, 32)
STREAM_CONNECTIONS = (1, 32)
JSON = {"Content-Type": "application/json"}


def body_for(model: str, stream: bool = False) -> str:
    return json.dumps({**CHAT, "model": model, "stream": stream})


def streamed_body(model: str) -> str:
    """A streamed request whose client asks for the usage chunk: it gets every upstream event."""
    return json.dumps({**CHAT, "model": model, "stream": True, "stream_options": {"include_usage": True}})


def log(message: str) -> None:
    print(f"[gateway_bench] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Run:
    """One wrk run and the CPU each watched process tree spent per request during it (µs)."""

    wrk: wrk.WrkResult
    cpu_us: dict[str, float]
    others: float  # share of the machine other work used during the run (cpu.others_share)


def load(url: str, body: str, headers: dict[str, str], c: int, seconds: int, trees: dict[str, int]) -> Run:
    before, machine = cpu.snapshot(trees), cpu.Machine.now()
    result = wrk.run(url, body, headers, c, seconds)
    after, others = cpu.snapshot(trees), cpu.others_share(machine, cpu.Machine.now())
    rps = result.requests_per_second
    log(f"{url} c={c}: {rps:,.0f} req/s, {result.errors} errors, other work {others:.0%}")
    return Run(result, cpu.per_request_us(before, after, result.requests), others)


def sweep(
    url: str,
    body: str,
    headers: dict[str, str],
    seconds: int,
    trees: dict[str, int],
    connections: tuple[int, ...] = CONNECTIONS,
) -> dict[int, Run]:
    wrk.run(url, body, headers, 8, min(seconds, 2))  # warm-up: connections, caches, JIT-less paths
    return {c: load(url, body, headers, c, seconds, trees) for c in connections}


@dataclass(frozen=True)
class Target:
    """One system to load: where, what, and which process trees to count."""

    url: str
    body: str
    headers: dict[str, str]
    trees: dict[str, int]


def alternating(
    targets: dict[str, Target], seconds: int, connections: tuple[int, ...] = CONNECTIONS
) -> dict[str, dict[int, Run]]:
    """`sweep` over several systems at once, taking turns at each connection count (A, B, A, B…):
    what the machine's other work does to one run it does to its neighbour too."""
    for t in targets.values():
        wrk.run(t.url, t.body, t.headers, 8, min(seconds, 2))  # warm-up
    runs: dict[str, dict[int, Run]] = {name: {} for name in targets}
    for c in connections:
        for name, t in targets.items():
            runs[name][c] = load(t.url, t.body, t.headers, c, seconds, t.trees)
    return runs


def post(url: str, body: str, headers: dict[str, str]) -> bytes:
    req = urllib.request.Request(url, body.encode(), headers, method="POST")  # noqa: S310
    with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - loopback
        return bytes(resp.read())


def wait_routable(url: str, body: str, headers: dict[str, str], timeout: float = 60) -> None:
    """Until the gateway answers 200 to `body` (its caches learn the provider and its credentials)."""
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        try:
            post(url, body, headers)
            return
        except urllib.error.HTTPError as err:
            last = f"{err.code} {err.read()[:200]!r}"
        time.sleep(0.2)
    raise TimeoutError(f"{url} never answered 200 to {body}: {last}")


def static_stream(
    url: str, model: str, headers: dict[str, str], seconds: int, trees: dict[str, int]
) -> dict[int, Run]:
    """Streamed requests against the static SSE upstream at 1 and 32 connections, after checking
    that one stream arrives whole (wrk counts a 200 cut short as a success)."""
    body = streamed_body(model)
    got = post(url, body, headers).decode()
    if got != sse_body():
        raise AssertionError(f"{url} streamed {len(got)} bytes, not the upstream's {len(sse_body())}")
    return sweep(url, body, headers, seconds, trees, STREAM_CONNECTIONS)


async def first_chunk_ms(url: str, body: str, headers: dict[str, str], n: int) -> tuple[float, list[float]]:
    """p50 time to the first SSE event over `n` sequential streams, and the last stream's gaps before
    each read that carries content (the chunks the upstream paces; its tail of finish, usage and
    [DONE] comes in one unpaced burst, however many reads that takes)."""
    ttfb: list[float] = []
    gaps: list[float] = []
    async with aiohttp.ClientSession() as session:
        for i in range(n):
            start = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as resp:
                first = True
                last = start
                async for data in resp.content.iter_any():
                    now = time.perf_counter()
                    if first:
                        ttfb.append((now - start) * 1000)
                        first = False
                    elif i == n - 1 and b'"content"' in data:
                        gaps.append((now - last) * 1000)
                    last = now
    return statistics.median(ttfb), gaps


def streaming(stack: BenchStack, via: str, key: dict[str, str]) -> tuple[float, float, list[float]]:
    """Against the Python mock upstream: p50 time to first chunk direct and via the gateway, paced gaps."""
    log("streaming against the Python mock upstream")
    direct = f"{stack.mock.url}/chat/completions"
    upstream = {**JSON, "Authorization": "Bearer sk-upstream"}
    d_ttfb, _ = asyncio.run(first_chunk_ms(direct, body_for("gpt", True), upstream, 200))
    g_ttfb, _ = asyncio.run(first_chunk_ms(via, body_for(MODEL, True), key, 200))
    stack.mock.configure(chunk_delay_ms=20)
    _, gaps = asyncio.run(first_chunk_ms(via, body_for(MODEL, True), key, 3))
    stack.mock.configure(chunk_delay_ms=0)
    return d_ttfb, g_ttfb, gaps


@dataclass
class Results:
    systems: dict[str, dict[int, Run]]  # "nginx", "aikeys" (chart defaults), "tuned", "litellm"
    workers: dict[int, Run]  # the chart's defaults with gateway.workers = 1 and 2, c=32
    static_stream: dict[str, dict[int, Run]]  # "nginx" direct, "aikeys" through the gateway; c=1 and 32
    streaming: tuple[float, float, list[float]]  # against the mock: direct ttfb, gateway ttfb, gaps
    charts: dict[str, Rendered]  # "aikeys", "tuned", "workers": what each gateway ran with


def target(stack: BenchStack, gw: GatewayProcess, key: dict[str, str]) -> Target:
    """A started gateway, once it routes the nginx model, with the trees whose CPU counts."""
    assert gw.child is not None
    via = f"{gw.openai_url}/chat/completions"
    wait_routable(via, body_for(NGINX_MODEL), key)
    trees = {"gateway": gw.child.pid, "redis": stack.redis.child.pid, "nginx": stack.nginx.child.pid}
    return Target(via, body_for(NGINX_MODEL), key, trees)


def gateways(stack: BenchStack, seconds: int, key: dict[str, str], res: Results) -> None:
    """The chart's defaults and the tuned chart, alternating; streaming and two workers with the
    defaults."""
    log(f"aikeys gateway: the chart's defaults and {', '.join(TUNED)}, alternating")
    res.charts.update(aikeys=stack.chart.render(), tuned=stack.chart.render(TUNED))
    gws = {"aikeys": stack.gateway(name="gw-chart"), "tuned": stack.gateway(TUNED, name="gw-tuned")}
    try:
        targets = {name: target(stack, gw, key) for name, gw in gws.items()}
        res.systems.update(alternating(targets, seconds))
        gws.pop("tuned").stop()
        res.workers[1] = res.systems["aikeys"][32]
        chart = targets["aikeys"]
        res.streaming = streaming(stack, chart.url, key)
        log("aikeys gateway, streamed (static SSE upstream)")
        wait_routable(chart.url, streamed_body(SSE_MODEL), key)
        res.static_stream["aikeys"] = static_stream(chart.url, SSE_MODEL, key, seconds, chart.trees)
    finally:
        for gw in gws.values():
            gw.stop()
    two = ("gateway.workers=2",)
    res.charts["workers"] = stack.chart.render(two)
    log("aikeys gateway, the chart's defaults with gateway.workers=2")
    gw = stack.gateway(two, name="gw-2workers")
    try:
        t = target(stack, gw, key)
        wrk.run(t.url, t.body, key, 8, min(seconds, 2))  # warm-up every worker
        res.workers[2] = load(t.url, t.body, key, 32, seconds, t.trees)
    finally:
        gw.stop()


def measure(stack: BenchStack, seconds: int, with_litellm: bool) -> Results:
    key = {**JSON, "Authorization": f"Bearer {stack.key}"}
    upstream = {**JSON, "Authorization": "Bearer sk-upstream"}
    res = Results({}, {}, {}, (0.0, 0.0, []), {})
    log("nginx direct")
    nginx_trees = {"nginx": stack.nginx.child.pid}
    res.systems["nginx"] = sweep(
        f"{stack.nginx.url}/chat/completions", body_for(UPSTREAM_MODEL), upstream, seconds, nginx_trees
    )
    log("nginx direct, streamed (static SSE)")
    res.static_stream["nginx"] = static_stream(
        f"{stack.nginx.sse_url}/chat/completions", UPSTREAM_MODEL, upstream, seconds, nginx_trees
    )
    gateways(stack, seconds, key, res)
    if with_litellm:
        log(f"LiteLLM {LITELLM_VERSION} proxy, 1 worker (installs into its own cache when missing)")
        proxy = launch_litellm(stack.workdir / "litellm", UPSTREAM_MODEL, stack.nginx.url)
        try:
            trees = {"litellm": proxy.child.pid, "nginx": stack.nginx.child.pid}
            res.systems["litellm"] = sweep(
                f"{proxy.url}/v1/chat/completions", body_for(UPSTREAM_MODEL), JSON, seconds, trees
            )
        finally:
            proxy.stop()
    return res


TREE = {"nginx": "nginx", "aikeys": "gateway", "tuned": "gateway", "litellm": "litellm"}


def labels(res: Results) -> dict[str, str]:
    """Each row says what ran: for the gateway, the chart values and what they switch on."""
    chart, tuned = res.charts["aikeys"], res.charts["tuned"]
    return {
        "nginx": "nginx upstream hit directly",
        "aikeys": f"**aikeys gateway as the chart installs it** ({chart.summary()})",
        "tuned": f"aikeys gateway, chart with {tuned.label} ({tuned.summary()})",
        "litellm": f"LiteLLM {LITELLM_VERSION} proxy, 1 worker, passthrough only (no keys, no budgets)",
    }


STREAM_LABELS = {
    "nginx": "nginx SSE upstream hit directly",
    "aikeys": "aikeys gateway as the chart installs it (auth, reserve, upstream, SSE read for usage, settle, "
    "metrics, access log)",
}


def report(res: Results, seconds: int) -> str:
    s = res.systems
    label = labels(res)
    rows = []
    for name, runs in s.items():
        one, full = runs[1], runs[32]
        own = TREE[name]
        rows.append(
            f"| {label[name]} | {one.wrk.p50_ms:.3f} | {one.wrk.p99_ms:.3f} | "
            + " | ".join(f"{runs[c].wrk.requests_per_second:,.0f}" for c in CONNECTIONS)
            + f" | {full.wrk.p50_ms:.2f} | {one.cpu_us[own]:,.0f} | {full.cpu_us[own]:,.0f} | "
            f"{sum(r.wrk.errors for r in runs.values())} |"
        )
    streamed = []
    for name, runs in res.static_stream.items():
        one, full = runs[1], runs[32]
        own = TREE[name]
        streamed.append(
            f"| {STREAM_LABELS[name]} | {one.wrk.p50_ms:.3f} | {one.wrk.p99_ms:.3f} | "
            f"{one.wrk.requests_per_second:,.0f} | {full.wrk.requests_per_second:,.0f} | "
            f"{full.wrk.p50_ms:.2f} | {one.cpu_us[own]:,.0f} | {full.cpu_us[own]:,.0f} | "
            f"{sum(r.wrk.errors for r in runs.values())} |"
        )
    d1, g1, g32 = s["nginx"][1].wrk, s["aikeys"][1], s["aikeys"][32]
    t1, t32 = s["tuned"][1], s["tuned"][32]
    tuned = res.charts["tuned"].label
    derived = [
        f"| gateway CPU per metered request, c=1 / c=32, **chart defaults** | {g1.cpu_us['gateway']:,.0f} / "
        f"{g32.cpu_us['gateway']:,.0f} µs |",
        f"| gateway CPU per metered request, c=1 / c=32, {tuned} | {t1.cpu_us['gateway']:,.0f} / "
        f"{t32.cpu_us['gateway']:,.0f} µs |",
        f"| Redis CPU per metered request, c=1 / c=32 (AOF everysec, as the chart's Redis) | "
        f"{g1.cpu_us['redis']:,.0f} / {g32.cpu_us['redis']:,.0f} µs |",
        f"| nginx (upstream) CPU per request through the gateway, c=32 | {g32.cpu_us['nginx']:,.0f} µs |",
        "| other work on the machine during the gateway's runs, c=1 / c=16 / c=32 (share of its cores "
        "used by processes outside the bench: noise) | "
        + " / ".join(f"{s['aikeys'][c].others:.0%}" for c in CONNECTIONS)
        + " |",
        f"| added latency at c=1, p50 / p99 (gateway − direct), chart defaults | "
        f"{g1.wrk.p50_ms - d1.p50_ms:.3f} / {g1.wrk.p99_ms - d1.p99_ms:.3f} ms |",
        f"| added latency at c=1, p50 / p99 (gateway − direct), {tuned} | "
        f"{t1.wrk.p50_ms - d1.p50_ms:.3f} / {t1.wrk.p99_ms - d1.p99_ms:.3f} ms |",
    ]
    if "litellm" in s:
        l1, l32 = s["litellm"][1], s["litellm"][32]
        ratio = g32.wrk.requests_per_second / l32.wrk.requests_per_second
        derived += [
            f"| LiteLLM CPU per request, c=1 / c=32 | {l1.cpu_us['litellm']:,.0f} / "
            f"{l32.cpu_us['litellm']:,.0f} µs |",
            f"| LiteLLM added latency at c=1, p50 / p99 | {l1.wrk.p50_ms - d1.p50_ms:.3f} / "
            f"{l1.wrk.p99_ms - d1.p99_ms:.3f} ms |",
            f"| throughput aikeys (chart defaults) / LiteLLM at c=32 (target ≥ 25×) | {ratio:.1f}× "
            f"({'met' if ratio >= 25 else 'not met'}) |",
            f"| CPU per request LiteLLM / aikeys (chart defaults) at c=32 | "
            f"{l32.cpu_us['litellm'] / g32.cpu_us['gateway']:.1f}× |",
        ]
    sd1, sg1, sg32 = (
        res.static_stream["nginx"][1].wrk,
        res.static_stream["aikeys"][1],
        res.static_stream["aikeys"][32],
    )
    derived += [
        f"| streaming: added latency at c=1, p50 / p99 (gateway − direct), static SSE upstream | "
        f"{sg1.wrk.p50_ms - sd1.p50_ms:.3f} / {sg1.wrk.p99_ms - sd1.p99_ms:.3f} ms |",
        f"| streaming: gateway CPU per streamed request, c=1 / c=32, static SSE upstream | "
        f"{sg1.cpu_us['gateway']:,.0f} / {sg32.cpu_us['gateway']:,.0f} µs |",
        f"| streaming: Redis CPU per streamed request, c=32, static SSE upstream | "
        f"{sg32.cpu_us['redis']:,.0f} µs |",
    ]
    d_ttfb, g_ttfb, gaps = res.streaming
    derived += [
        f"| streaming against the Python mock upstream: time to first chunk, direct p50 | {d_ttfb:.3f} ms |",
        f"| streaming against the Python mock upstream: time to first chunk, gateway p50 | {g_ttfb:.3f} ms "
        f"(+{g_ttfb - d_ttfb:.3f} ms) |",
        "| streaming against the Python mock upstream: gaps between content chunks through the gateway "
        f"(the mock sends one every 20 ms) | "
        f"min {min(gaps):.1f} / median {statistics.median(gaps):.1f} / max {max(gaps):.1f} ms |",
    ]
    workers = []
    for n, r in res.workers.items():
        per_core = 1e6 / r.cpu_us["gateway"]
        workers.append(
            f"| {n} | {r.wrk.requests_per_second:,.0f} | {r.wrk.p50_ms:.2f} | {r.wrk.p99_ms:.2f} | "
            f"{r.cpu_us['gateway']:,.0f} | {r.cpu_us['redis']:,.0f} | {per_core:,.0f} | {r.wrk.errors} |"
        )
    w1, w2 = res.workers[1], res.workers[2]
    sizing = (
        f"Sizing (the chart's defaults): at {w1.cpu_us['gateway']:,.0f} µs of gateway CPU per metered "
        "request, one gateway core "
        f"serves ≈ {1e6 / w1.cpu_us['gateway']:,.0f} requests/s; Redis, at {w1.cpu_us['redis']:,.0f} µs per "
        f"request, ≈ {1e6 / max(w1.cpu_us['redis'], 1):,.0f} requests/s per core. Here wrk, nginx, Redis "
        "and every worker share two cores, so the 2-worker req/s says little about a real node; CPU per "
        f"request ({w1.cpu_us['gateway']:,.0f} µs with 1 worker, {w2.cpu_us['gateway']:,.0f} µs with 2) "
        "is what carries over."
    )
    return "\n".join(
        [
            "## Gateway vs. nginx direct vs. LiteLLM "
            "(chat completion, 16 output tokens: non-streaming, then streamed)",
            "",
            f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}; "
            f"wrk (1 thread, {seconds} s a run), "
            "nginx, the gateway, Redis, LiteLLM and the control plane all on it. Upstream: a static nginx "
            "(one worker) answering a fixed completion with a usage block. CPU: utime+stime of the "
            "process tree over the run ÷ requests completed. The gateway and Redis run as the Helm chart "
            "renders them (`helm template`, bench.chart): its defaults, and beside them "
            f"{res.charts['tuned'].label} in alternating runs (A, B at each connection count). What "
            "each chart setting costs on its own: the next section.",
            "",
            "| system | c=1 p50 ms | c=1 p99 ms | c=1 req/s | c=16 req/s | c=32 req/s | c=32 p50 ms "
            "| CPU µs/req c=1 | CPU µs/req c=32 | errors |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            *rows,
            "",
            'Streamed (`"stream": true` with `stream_options.include_usage`, the same wrk): the static nginx '
            f"answers one {len(sse_body()):,}-byte SSE body (role, four content chunks, finish, usage chunk, "
            "`[DONE]`) at its `/sse/v1` path, hit directly and through the gateway (provider `nginx-sse`). "
            "The body is static, so a request's latency is its time to first byte plus a few µs; the "
            "gateway reads every event (for the usage it charges) and passes them all on.",
            "",
            "| streamed, static SSE upstream | c=1 p50 ms | c=1 p99 ms | c=1 req/s | c=32 req/s "
            "| c=32 p50 ms | CPU µs/req c=1 | CPU µs/req c=32 | errors |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            *streamed,
            "",
            "| derived | value |",
            "| --- | --- |",
            *derived,
            "",
            "Gateway workers at c=32 (the chart's defaults, and `gateway.workers=2`; CPU summed over the "
            "uvicorn parent and its workers):",
            "",
            "| workers | req/s | p50 ms | p99 ms | gateway CPU µs/req | Redis CPU µs/req "
            "| req/s per gateway core | errors |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            *workers,
            "",
            sizing,
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seconds", type=int, default=8, help="duration of each wrk run (default 8; 2 for a smoke run)"
    )
    parser.add_argument(
        "--no-litellm", action="store_true", help="skip LiteLLM (it is installed from PyPI on first use)"
    )
    parser.add_argument("--out", type=Path, help="also write the Markdown report to this file")
    args = parser.parse_args()
    started = time.monotonic()
    with bench_stack() as stack:
        results = measure(stack, args.seconds, not args.no_litellm)
    text = report(results, args.seconds)
    print(text)
    if args.out:
        args.out.write_text(text)
    log(f"done in {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()

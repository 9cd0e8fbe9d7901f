"""What each chart setting costs a metered request: the gateway as the Helm chart installs it, and
one change at a time, in turns.

    python -m bench.variants [--seconds 3] [--rounds 5] [--out FILE]

Every variant is a gateway rendered from the chart (bench.chart) with the `--set` overrides it
names, all started at once in one bench stack (bench.stack) and loaded one after the other by the
same wrk (non-streaming chat, 32 connections), round after round: chart defaults, then each
variant, then the defaults again. Its cost is the median over the rounds of (its CPU per request −
the chart defaults' in the same round): two runs a few seconds apart see the same machine, which on
a shared 2-core box matters more than anything measured here. The second row is a second gateway
with the chart defaults: its Δ is what the noise alone makes of a difference in that run.

Beside the chart's values: Redis without its append-only file (CONFIG SET for that run only; the
chart's Redis writes one, everysec), the Python mock upstream instead of nginx (what `make dev`
talks to; it answers about half as fast on these cores), the dev stack's gateway (pages on, the
mock upstream) and the bench's gateway as it was until issue 23 (no access log, no usage API, Redis
without AOF).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from aikeys_dev.devstack.processes import Child
from aikeys_dev.devstack.services import GatewayProcess

from bench import cpu, wrk
from bench.gateway_bench import body_for, wait_routable
from bench.stack import MODEL, NGINX_MODEL, BenchStack, bench_stack
from bench.tracing_bench import start_sink

OTLP = "{otlp}"  # in a set: the OTLP receiver's URL, known once it runs


@dataclass(frozen=True)
class Variant:
    label: str  # what differs from the chart's defaults
    sets: tuple[str, ...] = ()  # `helm --set` overrides
    model: str = NGINX_MODEL  # the upstream: demo:nginx (static) or demo:mock (Python)
    redis_config: tuple[tuple[str, str], ...] = ()  # CONFIG SET for its runs only
    twin: bool = False  # a gateway of its own even if another has the same settings

    def sets_for(self, otlp: str) -> tuple[str, ...]:
        return tuple(s.replace(OTLP, otlp) for s in self.sets)


DEFAULTS = Variant("**chart defaults**")
VARIANTS = (
    DEFAULTS,
    Variant("nothing: a second gateway with the chart defaults (what noise alone makes of a Δ)", twin=True),
    Variant("`gateway.accessLog=false`", ("gateway.accessLog=false",)),
    Variant("`gateway.metricsPerKey=false`", ("gateway.metricsPerKey=false",)),
    Variant("`usageAPI.enabled=false` (no usage API listener)", ("usageAPI.enabled=false",)),
    Variant("`gateway.ui.enabled=true` (the web pages)", ("gateway.ui.enabled=true",)),
    Variant(
        "`gateway.tracing.endpoint` set (spans to an OTLP receiver, sampling 1.0)",
        (f"gateway.tracing.endpoint={OTLP}",),
    ),
    Variant("Redis without AOF (`appendonly no`)", redis_config=(("appendonly", "no"),)),
    Variant("upstream: the Python mock instead of nginx", model=MODEL),
    Variant(
        "the dev stack's gateway (`make dev`): pages on, the Python mock upstream",
        ("gateway.ui.enabled=true",),
        MODEL,
    ),
    Variant(
        "the bench's gateway until issue 23: access log and usage API off, Redis without AOF",
        ("gateway.accessLog=false", "usageAPI.enabled=false"),
        redis_config=(("appendonly", "no"),),
    ),
)


@dataclass(frozen=True)
class Sample:
    gateway_us: float
    redis_us: float
    rps: float
    errors: int
    others: float  # share of the machine other work used during the run (cpu.others_share)


def log(message: str) -> None:
    print(f"[variants] {message}", file=sys.stderr, flush=True)


def configure_redis(client: redis.Redis, config: tuple[tuple[str, str], ...]) -> None:
    """CONFIG SET, and wait until an AOF rewrite it started (appendonly yes) is done."""
    if not config:
        return
    for name, value in config:
        client.config_set(name, value)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        info = client.info("persistence")
        if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled"):
            return
        time.sleep(0.2)
    raise TimeoutError("Redis's AOF rewrite did not finish in 120 s")


def start(stack: BenchStack, otlp: str, key: dict[str, str]) -> dict[Variant, GatewayProcess]:
    """A gateway per distinct setting (and per twin), each once it routes its variant's model."""
    started: dict[tuple[tuple[str, ...], bool], GatewayProcess] = {}
    gateways: dict[Variant, GatewayProcess] = {}
    try:
        for v in VARIANTS:
            sets = v.sets_for(otlp)
            if (sets, v.twin) not in started:
                log(f"starting a gateway with {', '.join(sets) or 'the chart defaults'}")
                started[sets, v.twin] = stack.gateway(sets, name=f"gw-{len(started)}")
            gateways[v] = started[sets, v.twin]
            url = f"{gateways[v].openai_url}/chat/completions"
            wait_routable(url, body_for(v.model), key)
            wrk.run(url, body_for(v.model), key, 8, 1)  # warm-up: connections, upstream pool
    except BaseException:
        for gw in started.values():
            gw.stop()
        raise
    return gateways


def run(stack: BenchStack, gw: GatewayProcess, v: Variant, key: dict[str, str], seconds: int) -> Sample:
    """One run at 32 connections, Redis configured for it (and back as the chart has it after)."""
    assert gw.child is not None
    url, body = f"{gw.openai_url}/chat/completions", body_for(v.model)
    client = redis.Redis.from_url(stack.redis.url)
    chart_config = tuple((name, str(client.config_get(name)[name])) for name, _ in v.redis_config)
    try:
        configure_redis(client, v.redis_config)
        trees = {"gateway": gw.child.pid, "redis": stack.redis.child.pid}
        before, machine = cpu.snapshot(trees), cpu.Machine.now()
        result = wrk.run(url, body, key, 32, seconds)
        per = cpu.per_request_us(before, cpu.snapshot(trees), result.requests)
        others = cpu.others_share(machine, cpu.Machine.now())
    finally:
        configure_redis(client, chart_config)
        client.close()
    return Sample(per["gateway"], per["redis"], result.requests_per_second, result.errors, others)


def measure(stack: BenchStack, otlp: str, seconds: int, rounds: int) -> dict[Variant, list[Sample]]:
    key = {"Content-Type": "application/json", "Authorization": f"Bearer {stack.key}"}
    gateways = start(stack, otlp, key)
    samples: dict[Variant, list[Sample]] = {v: [] for v in VARIANTS}
    try:
        for r in range(rounds):
            for v in VARIANTS:
                sample = run(stack, gateways[v], v, key, seconds)
                samples[v].append(sample)
                log(f"round {r + 1}/{rounds} {v.label}: {sample.gateway_us:.0f} µs, {sample.rps:,.0f} req/s")
    finally:
        for gw in {id(gw): gw for gw in gateways.values()}.values():  # each once
            gw.stop()
    return samples


def report(samples: dict[Variant, list[Sample]], seconds: int, rounds: int) -> str:
    base = samples[DEFAULTS]
    rows = []
    for v, runs in samples.items():
        gw = [s.gateway_us for s in runs]
        delta = statistics.median(s.gateway_us - b.gateway_us for s, b in zip(runs, base, strict=True))
        redis_delta = statistics.median(s.redis_us - b.redis_us for s, b in zip(runs, base, strict=True))
        rows.append(
            f"| {v.label} | {statistics.median(gw):,.0f} | "
            + ("—" if v is DEFAULTS else f"{delta:+,.0f}")
            + f" | {min(gw):,.0f}–{max(gw):,.0f} | {statistics.median(s.redis_us for s in runs):,.0f} | "
            + ("—" if v is DEFAULTS else f"{redis_delta:+,.0f}")
            + f" | {statistics.median(s.rps for s in runs):,.0f} | {sum(s.errors for s in runs)} "
            f"| {statistics.median(s.others for s in runs):.0%} |"
        )
    return "\n".join(
        [
            "## What each chart setting costs a metered request (32 connections)",
            "",
            f"One gateway per row, rendered from the chart with the values named (bench.variants); "
            f"{rounds} rounds of {seconds} s each, the rows in turn, non-streaming chat against the "
            "static nginx unless the row says otherwise. CPU: the gateway's process tree (Redis's beside "
            "it) ÷ requests; Δ: the median over the rounds of (the row − the chart defaults in the same "
            "round); other work: the share of the machine's cores that processes outside the bench used "
            "during the row's runs (median; it makes runs noisier, never cheaper).",
            "",
            "| what differs from the chart's defaults | gateway CPU µs/req | Δ µs | range | Redis CPU µs/req "
            "| Δ µs | req/s | errors | other work |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            *rows,
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=3, help="duration of each wrk run (default 3)")
    parser.add_argument("--rounds", type=int, default=5, help="runs of every variant, in turns (default 5)")
    parser.add_argument("--out", type=Path, help="also write the Markdown report to this file")
    args = parser.parse_args()
    started = time.monotonic()
    with bench_stack() as stack:
        sink: Child
        sink, otlp = start_sink(stack.workdir)
        try:
            samples = measure(stack, otlp, args.seconds, args.rounds)
        finally:
            sink.stop()
    text = report(samples, args.seconds, args.rounds)
    print(text)
    if args.out:
        args.out.write_text(text)
    log(f"done in {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()

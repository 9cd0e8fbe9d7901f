"""What tracing costs a request: off (the default) and on (exporting to an OTLP receiver).

    python -m bench.tracing_bench [--seconds 8] [--rounds 3] [--requests 20000] [--no-gateway] [--out FILE]

1. In process: the tracing work of one request exactly as pipeline.py calls it (start with a
   caller's traceparent, request settings, upstream headers, the answer, end with the access-log
   context), with the SDK's batch processor exporting over OTLP/HTTP to a receiver in another
   process. CPU per request = this process's CPU time (request path + exporter thread) / requests;
   the request path alone is the main thread's. Off: the `is not None` tests pipeline.py runs.
2. The real gateway as the chart installs it (bench.chart), under wrk (32 connections,
   non-streaming chat against the Python mock upstream), tracing off and on, in
   alternating runs: req/s and the gateway process's CPU time per request (utime + stime from
   /proc, all threads).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import timeit
import urllib.request
from pathlib import Path
from typing import Any

from aikeys_dev.devstack.processes import Child, free_port

SINK_READY_TIMEOUT = 30.0


def start_sink(workdir: Path) -> tuple[Child, str]:
    """An OTLP/HTTP receiver in its own process (its CPU is not the gateway's)."""
    port = free_port()
    argv = [sys.executable, "-m", "aikeys_dev.devstack.otlp", "--port", str(port)]
    child = Child(f"otlp-sink-{port}", argv, workdir / "otlp-sink.log").start()
    url = f"http://127.0.0.1:{port}"
    child.wait_until(lambda: sink_count(url) >= 0, timeout=SINK_READY_TIMEOUT, what="the OTLP sink")
    return child, url


def sink_count(url: str) -> int:
    try:
        with urllib.request.urlopen(f"{url}/_spans/count", timeout=2) as resp:  # noqa: S310 - loopback
            count: int = json.loads(resp.read())["spans"]
            return count
    except OSError:
        return -1


def hooks_off() -> tuple[float, float]:
    """ns per request of the hooks as pipeline.py runs them when Pipeline.tracer is None, and (for
    scale) of building the request's Exchange."""
    from aikeys_gateway.pipeline.exchange import Exchange
    from aikeys_gateway.pipeline.pipeline import Pipeline

    from aikeys.estimate import Endpoint

    gw = Pipeline.__new__(Pipeline)
    ex = Exchange("rid", Endpoint.CHAT, 0.0)

    def hooks() -> None:
        if gw.tracer is not None:  # handle
            raise AssertionError
        if ex.span is not None:  # _handle
            raise AssertionError
        if gw.tracer is not None:  # _send (once per upstream attempt)
            raise AssertionError
        if ex.span is not None:  # _json or _stream
            raise AssertionError
        if ex.span is not None:  # _finish
            raise AssertionError

    def nothing() -> None:
        pass

    n = 1_000_000
    off = min(timeit.repeat(hooks, number=n, repeat=5)) - min(timeit.repeat(nothing, number=n, repeat=5))
    exchange = min(timeit.repeat(lambda: Exchange("rid", Endpoint.CHAT, 0.0), number=n // 5, repeat=5))
    return off / n * 1e9, exchange / (n // 5) * 1e9


def in_process(requests: int, sink: str) -> dict[str, float]:
    """A real tracer, batching to the sink over OTLP/HTTP."""
    from aikeys_gateway.cache.catalog import ModelEntry, ProviderEntry
    from aikeys_gateway.observe import tracing
    from aikeys_gateway.pipeline.routing import Route
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from starlette.requests import Request

    from aikeys.estimate import Endpoint, OutputCap
    from aikeys.money import Price
    from aikeys.resources import ProviderType

    os.environ["OTEL_BSP_MAX_QUEUE_SIZE"] = str(requests + 4096)  # this loop outruns any real load: keep all
    t = tracing.build(OTLPSpanExporter(endpoint=f"{sink}/v1/traces"))
    model = ModelEntry("gpt", "gpt-4o-mini", Price.parse("0.15", "0.60"), None, "o200k_base", True)
    provider = ProviderEntry(
        "team", "openai", ProviderType.OPENAI, "https://api.openai.com/v1", None, True, frozenset(), True,
        30.0, "api.openai.com", "max_completion_tokens", {"gpt": model},
    )  # fmt: skip
    route = Route("team:openai/gpt", provider, model, "sk-x")
    traceparent = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    scope = {
        "type": "http",
        "headers": [(b"authorization", b"Bearer aik_x"), (b"traceparent", traceparent)],
    }
    body = {"model": "team:openai/gpt", "messages": [], "max_tokens": 16, "temperature": 0.7}
    answer: dict[str, Any] = {
        "id": "chatcmpl-1",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "finish_reason": "stop"}],
        "system_fingerprint": "fp_1",
    }
    cap = OutputCap(16, 1)
    done: dict[str, Any] = {"model": "team:openai/gpt", "stream": False, "status": 200}
    done |= {"input_tokens": 12, "output_tokens": 16, "cost_usd": "0.0000114"}

    def one() -> None:
        rs = t.start(Request(scope), Endpoint.CHAT)
        rs.request(body, cap, "main")
        t.inject({"Content-Type": "application/json", "Authorization": "Bearer sk-x"}, route)
        rs.response(answer)
        rs.end({"rid": "r", "endpoint": "chat/completions", "namespace": "team", "key": "alice"} | done)

    for _ in range(2000):  # warm up (imports, first export)
        one()
    t.processor.force_flush()
    before = sink_count(sink)
    cpu0, thread0 = time.process_time(), time.thread_time()
    for _ in range(requests):
        one()
    thread1 = time.thread_time()
    t.processor.force_flush()
    cpu1 = time.process_time()
    exported = sink_count(sink) - before
    t.shutdown()
    return {
        "on_path_us": (thread1 - thread0) / requests * 1e6,
        "on_cpu_us": (cpu1 - cpu0) / requests * 1e6,
        "exported": exported,
        "requests": requests,
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def through_gateway(seconds: int, rounds: int, sink: str) -> dict[str, dict[str, float]]:
    """Two gateways, tracing off and on, loaded in turn (off, on, off, on, …): the median and the
    best round of each (other work on the machine only ever adds)."""

    from bench import wrk
    from bench.gateway_bench import body_for
    from bench.stack import MODEL, bench_stack

    samples: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    with bench_stack() as stack:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {stack.key}"}
        # as the chart installs the gateway: tracing off (its default), and with an endpoint set
        gateways = {
            "off": stack.gateway(name="gw-off"),
            "on": stack.gateway(
                (f"gateway.tracing.endpoint={sink}",),
                name="gw-on",
                extra_env={"OTEL_BSP_SCHEDULE_DELAY": "500"},  # spans counted before the next run
            ),
        }
        try:
            for gw in gateways.values():
                wrk.run(f"{gw.openai_url}/chat/completions", body_for(MODEL), headers, 8, 2)  # warm-up
            time.sleep(2)  # the warm-up's spans are exported
            for _ in range(rounds):
                for name, gw in gateways.items():
                    assert gw.child is not None
                    spans0, cpu0 = sink_count(sink), cpu_seconds(gw.child.pid)
                    r = wrk.run(f"{gw.openai_url}/chat/completions", body_for(MODEL), headers, 32, seconds)
                    cpu1 = cpu_seconds(gw.child.pid)
                    time.sleep(2)  # the last batch arrives (and is counted) before the next run
                    served = r.requests_per_second * seconds
                    samples[name].append(
                        {
                            "rps": r.requests_per_second,
                            "p50": r.p50_ms,
                            "errors": r.errors,
                            "cpu_us": (cpu1 - cpu0) / served * 1e6,
                            "spans": sink_count(sink) - spans0,
                            "served": served,
                        }
                    )
        finally:
            for gw in gateways.values():
                gw.stop()
    results: dict[str, dict[str, float]] = {}
    for name, runs in samples.items():
        results[name] = {
            "rps": statistics.median(r["rps"] for r in runs),
            "p50": statistics.median(r["p50"] for r in runs),
            "cpu_us": statistics.median(r["cpu_us"] for r in runs),
            "cpu_us_best": min(r["cpu_us"] for r in runs),
            "spans": sum(r["spans"] for r in runs),
            "served": sum(r["served"] for r in runs),
            "errors": sum(r["errors"] for r in runs),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=8, help="duration of each wrk run (default 8)")
    parser.add_argument("--requests", type=int, default=20_000, help="in-process requests (default 20000)")
    parser.add_argument("--rounds", type=int, default=3, help="wrk runs per gateway, alternating (default 3)")
    parser.add_argument("--no-gateway", action="store_true", help="only the in-process measurement")
    parser.add_argument("--out", type=Path, help="write the Markdown report here")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="aikeys-tracing-bench-"))
    sink_child, sink = start_sink(workdir)
    try:
        off_ns, exchange_ns = hooks_off()
        micro = in_process(args.requests, sink)
        macro = {} if args.no_gateway else through_gateway(args.seconds, args.rounds, sink)
    finally:
        sink_child.stop()
    lines = [
        "## Tracing: cost per request, off and on",
        "",
        f"Machine: {os.cpu_count()} cores. In process, {micro['requests']:,} requests' tracing work "
        f"(start, request settings, upstream headers, answer, end) exported to an OTLP receiver in "
        f"another process ({micro['exported']:,} spans received):",
        "",
        "| tracing | per request |",
        "| --- | --- |",
        f"| off: the `is not None` tests in pipeline.py | {off_ns:.0f} ns |",
        f"| (for scale: building the request's Exchange) | {exchange_ns:.0f} ns |",
        f"| on: on the request path (event-loop thread CPU) | {micro['on_path_us']:.1f} µs |",
        f"| on: all CPU, exporter thread included | {micro['on_cpu_us']:.1f} µs |",
        "",
    ]
    if macro:
        lines += [
            "Through the gateway as the chart installs it (off: its default; on: "
            "`gateway.tracing.endpoint` set) in front of the Python mock upstream: wrk, 32 connections, "
            f"non-streaming chat, {args.rounds} runs of "
            f"{args.seconds} s per gateway, alternating; CPU of the gateway process (all threads) per "
            "request, median and best run:",
            "",
            "| tracing | req/s | p50 ms | gateway CPU per request | best run | spans received / requests "
            "| errors |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, r in macro.items():
            lines.append(
                f"| {name} | {r['rps']:,.0f} | {r['p50']:.3f} | {r['cpu_us']:.0f} µs "
                f"| {r['cpu_us_best']:.0f} µs | {r['spans']:,.0f} / {r['served']:,.0f} | {r['errors']:.0f} |"
            )
        lines.append("")
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()

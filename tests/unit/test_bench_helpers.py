"""The benchmark's own arithmetic: wrk's output parsed, CPU time of a process tree from /proc, the
gateway's settings as the chart renders them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from aikeys_dev.devstack.binaries import locate

from bench import chart, cpu, wrk

WRK_OUT = """Running 1s test @ http://127.0.0.1:40195/v1/chat/completions
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    43.85us  141.59us   3.56ms   98.00%
    Req/Sec    54.36k     4.06k   56.76k    80.00%
  Latency Distribution
     50%   27.00us
     75%   33.00us
     90%   39.00us
     99%    1.52ms
  53971 requests in 1.00s, 10.09MB read
  Non-2xx or 3xx responses: 12
  Socket errors: connect 0, read 1, write 0, timeout 2
Requests/sec:  53916.98
Transfer/sec:     10.08MB
"""


def test_wrk_output_parsed() -> None:
    r = wrk.parse(WRK_OUT)
    assert r.requests == 53971
    assert r.requests_per_second == 53916.98
    assert (r.p50_ms, r.p90_ms, r.p99_ms) == (0.027, 0.039, 1.52)
    assert r.errors == 15  # non-2xx plus socket errors


def test_cpu_counts_the_whole_tree() -> None:
    """A parent that only waits and a child that burns CPU: the tree's time is the child's."""
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
    parent = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {burn!r}])"]
    )
    try:
        deadline, grew = time.monotonic() + 10, False
        while not grew and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.05)
            procs = cpu._procs()
            # the tree's time exceeds the parent's own: the burning child's counts
            grew = cpu.tree_seconds(parent.pid, procs) - procs.get(parent.pid, (0, 0))[1] / cpu.TICKS > 0.05
        assert grew
    finally:
        parent.wait(10)
    per_request = cpu.per_request_us({"tree": 0.0}, {"tree": 0.5}, 1000)
    assert per_request == {"tree": 500.0}


def rendered_docs(env: list[dict[str, object]], args: list[str]) -> list[object]:
    def workload(kind: str, name: str, container: dict[str, object]) -> dict[str, object]:
        spec = {"template": {"spec": {"containers": [container]}}}
        return {"kind": kind, "metadata": {"name": name}, "spec": spec}

    redis_args = ["--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--dir", "/data"]
    return [
        None,
        {"kind": "Service", "metadata": {"name": "aikeys-gateway"}},
        workload("Deployment", "aikeys-gateway", {"name": "gateway", "args": args, "env": env}),
        workload("StatefulSet", "aikeys-redis", {"name": "redis", "args": redis_args}),
    ]


def test_the_chart_gateway_runs_here_with_local_paths(tmp_path: Path) -> None:
    env: list[dict[str, object]] = [
        {"name": "AIKEYS_REDIS_URL", "value": "redis://aikeys-redis:6379/0"},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "AIKEYS_ACCESS_LOG", "value": "true"},
        {"name": "AIKEYS_USAGE_API_PORT", "value": "8443"},
        {"name": "AIKEYS_USAGE_API_CERT", "value": "/etc/aikeys/usage-api/tls.crt"},
        {"name": "AIKEYS_USAGE_API_KEY", "value": "/etc/aikeys/usage-api/tls.key"},
    ]
    rendered = chart.parse(rendered_docs(env, ["--port=8080", "--workers=3"]))
    assert rendered.workers == 3
    assert rendered.redis_args == ("--appendonly", "yes", "--appendfsync", "everysec", "--save", "")
    assert rendered.summary() == (
        "access log on, per-key metrics on, usage API on, pages off, tracing off, 3 workers"
    )
    certs = chart.UsageAPICerts(tmp_path / "c.crt", tmp_path / "c.key")
    local = rendered.env("redis://127.0.0.1:7000/0", certs)
    assert local["AIKEYS_REDIS_URL"] == "redis://127.0.0.1:7000/0"
    assert local["POD_NAMESPACE"] == chart.NAMESPACE
    assert local["AIKEYS_ACCESS_LOG"] == "true"
    assert local["AIKEYS_USAGE_API_PORT"] != "8443" and local["AIKEYS_USAGE_API_HOST"] == "127.0.0.1"
    assert (local["AIKEYS_USAGE_API_CERT"], local["AIKEYS_USAGE_API_KEY"]) == (
        str(certs.cert),
        str(certs.key),
    )


def test_a_value_the_bench_cannot_make_local_stops_it(tmp_path: Path) -> None:
    secret = {"secretKeyRef": {"name": "vault", "key": "token"}}
    rendered = chart.parse(rendered_docs([{"name": "AIKEYS_SOMETHING", "valueFrom": secret}], []))
    with pytest.raises(ValueError, match="AIKEYS_SOMETHING"):
        rendered.env("redis://127.0.0.1:7000/0", chart.UsageAPICerts(tmp_path / "c", tmp_path / "k"))


@pytest.mark.skipif(not locate().helm.exists(), reason="helm is not built (make setup)")
def test_the_chart_defaults_are_what_values_yaml_says(tmp_path: Path) -> None:
    values = yaml.safe_load((chart.CHART / "values.yaml").read_text())
    gw = values["gateway"]

    def on(flag: bool) -> str:
        return "on" if flag else "off"

    workers = f"{gw['workers']} worker{'s' if gw['workers'] != 1 else ''}"
    rendered = chart.Chart().render()
    assert rendered.summary() == (
        f"access log {on(gw['accessLog'])}, per-key metrics {on(gw['metricsPerKey'])}, "
        f"usage API {on(values['usageAPI']['enabled'])}, pages {on(gw['ui']['enabled'])}, "
        f"tracing {on(bool(gw['tracing']['endpoint']))}, {workers}"
    )
    tuned = chart.Chart().render(chart.TUNED)
    assert "access log off" in tuned.summary() and tuned.label == "`gateway.accessLog=false`"
    env = rendered.env("redis://127.0.0.1:7000/0", chart.UsageAPICerts(tmp_path / "c", tmp_path / "k"))
    assert env["AIKEYS_CREDENTIALS_SECRET"] == f"{chart.NAMESPACE}/{values['credentialsSecretName']}"


def test_other_work_is_what_the_machine_ran_beside_the_bench() -> None:
    cores = os.cpu_count() or 1
    # 3 CPU-seconds busy in 2 s, 1 of them ours: 2 of the machine's 2 × cores seconds were others'
    assert cpu.others_share(cpu.Machine(0.0, 10.0, 2.0), cpu.Machine(2.0, 13.0, 3.0)) == 2 / (2 * cores)
    assert cpu.others_share(cpu.Machine(0.0, 10.0, 2.0), cpu.Machine(1.0, 10.5, 2.9)) == 0.0  # never < 0
    before = cpu.Machine.now()
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
    subprocess.run([sys.executable, "-c", burn], check=True)  # a child, reaped: the bench's own work
    after = cpu.Machine.now()
    assert after.own - before.own >= 0.25
    assert after.busy - before.busy >= 0.25

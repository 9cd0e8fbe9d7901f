"""The benchmark's own arithmetic: wrk's output parsed, CPU time of a process tree from /proc."""

from __future__ import annotations

import subprocess
import sys
import time

from bench import cpu, wrk

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

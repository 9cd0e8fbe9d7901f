"""Two independent processes racing for one allocation never overspend it."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import uuid

import pytest
import redis
from aikeys_dev.devstack.binaries import REPO_ROOT
from aikeys_dev.devstack.redis import RedisServer

from aikeys.ledger.names import AllocationKeys
from aikeys.periods import Period, window

pytestmark = pytest.mark.integration


def test_two_processes_500_concurrent_cycles_each_accept_exactly_n(redis_server: RedisServer) -> None:
    n, cost, tasks = 337, 1_000_003, 500
    name = f"race-{uuid.uuid4().hex[:8]}"
    argv = [
        sys.executable,
        "-m",
        "tests.integration.ledger_worker",
        redis_server.url,
        "team-a",
        name,
        str(n * cost),
        str(tasks),
        str(cost),
    ]
    workers = [subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    results = [json.loads(w.communicate(timeout=120)[0]) for w in workers]
    assert all(w.returncode == 0 for w in workers)
    assert sum(r["accepted"] for r in results) == n
    assert sum(r["refused"] for r in results) == 2 * tasks - n
    assert all(r["unavailable"] == 0 for r in results)
    period = AllocationKeys("team-a", name).period(window(Period.NONE, dt.datetime.now(dt.UTC)).id)
    raw = redis.Redis.from_url(redis_server.url, decode_responses=True).hgetall(period)
    state = {k: int(v) for k, v in raw.items()}
    assert state["spent"] == n * cost  # spent ≤ budget, here exactly the budget
    assert state["reserved"] == 0
    assert state["reserved_tokens"] == 0
    assert state["requests"] == n

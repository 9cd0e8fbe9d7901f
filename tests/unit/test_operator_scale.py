"""The operator's pieces for scale, without servers: one timer for every deadline, the keyed work
queue, the rate-limited status writer's queueing, and the pure decisions (what a key needs, what
a key's status patch is)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

from aikeys_operator.allocations import key_patch
from aikeys_operator.config import Settings
from aikeys_operator.keys import assess
from aikeys_operator.schedule import Deadlines, WorkQueue
from aikeys_operator.writer import StatusWriter

from aikeys.kube.client import KubeClient
from aikeys.kube.config import KubeConfig
from aikeys.ledger.store import KeyUse

NOW = dt.datetime(2026, 3, 14, 12, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_deadlines_hand_out_due_keys_once_earliest_first() -> None:
    clock, due = Clock(), list[str]()
    d: Deadlines[str] = Deadlines(due.append, clock)
    d.set("b", 1005.0)
    d.set("a", 1002.0)
    d.set("c", 1010.0)
    d.set("c", 1003.0)  # moved earlier: the old entry is skipped
    d.set("gone", 1001.0)
    d.discard("gone")
    d.set("never", None)
    assert len(d) == 3 and d.get("c") == 1003.0
    assert d.next_in() == 2.0
    clock.t = 1004.0
    assert d.pop_due() == ["a", "c"]
    assert d.pop_due() == []
    assert d.next_in() == 1.0
    clock.t = 1100.0
    assert d.pop_due() == ["b"]
    assert d.next_in() is None and len(d) == 0


def test_deadlines_stay_small_when_moved_often() -> None:
    d: Deadlines[int] = Deadlines(lambda _: None, Clock())
    for round_ in range(50):
        for key in range(100):
            d.set(key, 2000.0 + round_ + key)
    assert len(d) == 100
    assert len(d._heap) <= 2 * 100 + 1024  # superseded entries are compacted away


async def test_one_task_fires_every_deadline_on_time() -> None:
    """Never early, and as late only as a timer of the same loop due at the same moment: the
    comparison holds on a loaded machine, where the whole loop may run late."""
    loop = asyncio.get_running_loop()
    fired: dict[int, float] = {}
    timers: dict[float, float] = {}  # a plain loop timer per moment: when the loop got to it
    everything = asyncio.Event()

    def fire(key: int) -> None:
        fired.setdefault(key, time.time())
        if len(fired) == 201:
            everything.set()

    d: Deadlines[int] = Deadlines(fire)
    task = asyncio.create_task(d.run())
    start = time.time()
    moments = {i: start + 0.05 + (i % 20) * 0.01 for i in range(200)}
    moments[999] = start + 0.02  # earlier than everything: wakes the sleeping task
    offset = start - loop.time()

    def reached(at: float) -> None:
        timers.setdefault(at, time.time())

    for at in set(moments.values()):
        loop.call_at(at - offset, reached, at)
    for i in range(200):  # 200 keys, one task: each fires within milliseconds of its moment
        d.set(i, moments[i])
    d.set(999, moments[999])
    await asyncio.wait_for(everything.wait(), timeout=10)
    await asyncio.sleep(0.05)  # the timers of the last moment, too
    task.cancel()
    assert len(fired) == 201
    assert all(fired[k] >= at for k, at in moments.items())  # never early
    behind = [fired[k] - timers[at] for k, at in moments.items()]
    assert max(behind) < 0.05  # no later than the loop itself


async def test_work_queue_dedups_and_puts_urgent_keys_first() -> None:
    q: WorkQueue[str] = WorkQueue()
    for key in ("new-1", "new-2", "new-3", "new-1"):
        q.add(key)
    q.add("expiring", urgent=True)
    q.add("new-3", urgent=True)  # promoted
    assert len(q) == 4
    assert [await q.get() for _ in range(2)] == ["expiring", "new-3"]
    assert await q.get() == "new-1"
    q.add("new-1")  # added while being worked on: handed out again only after done
    assert await q.get() == "new-2"
    assert q._pop() is None
    q.done("new-1")
    assert await q.get() == "new-1"
    q.forget("nothing")
    for key in ("expiring", "new-3", "new-2", "new-1"):
        q.done(key)
    assert q.idle()
    await asyncio.wait_for(q.drained(), 1)


def test_status_writer_coalesces_and_takes_turns() -> None:
    w = StatusWriter(KubeClient(KubeConfig(server="http://127.0.0.1:1")), rate=20)
    w.put("aikeys", ("ns", "k1"), {"spend": "1.00"})
    w.put("aikeys", ("ns", "k2"), {"spend": "2.00"})
    w.put("aikeys", ("ns", "k1"), {"spend": "1.50", "lastUsedAt": "2026-03-14T12:00:00Z"})  # merged
    w.put("allocations", ("ns", "a"), {"spent": "3.50"})
    w.put("allocations", ("ns", "b"), {"spent": "1.00"})
    w.put("aikeys", ("ns", "k3"), {})  # nothing to write
    assert w.backlog() == 4 and w.backlog("aikeys") == 2
    assert w.pending("aikeys", ("ns", "k1")) == {"spend": "1.50", "lastUsedAt": "2026-03-14T12:00:00Z"}
    w.forget("allocations", ("ns", "b"))
    order = []
    while (item := w._next()) is not None:
        order.append(item)
    assert order == [
        ("allocations", ("ns", "a"), {"spent": "3.50"}),
        ("aikeys", ("ns", "k1"), {"spend": "1.50", "lastUsedAt": "2026-03-14T12:00:00Z"}),
        ("aikeys", ("ns", "k2"), {"spend": "2.00"}),
    ]
    assert w.backlog() == 0 and w.lag() == 0.0


async def test_status_writer_rate() -> None:
    clock = Clock(0.0)
    w = StatusWriter(KubeClient(KubeConfig(server="http://127.0.0.1:1")), rate=10, burst=3, clock=clock)
    for _ in range(3):  # the burst
        await asyncio.wait_for(w._token(), 0.1)
    waiter = asyncio.create_task(w._token())
    await asyncio.sleep(0.05)
    assert not waiter.done()  # no token left: 1/10 s to the next one
    clock.t = 0.1
    await asyncio.wait_for(waiter, 1)


def _aikey(spec: dict[str, Any] | None = None, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": "k", "generation": 1},
        "spec": {"allocationRef": {"name": "a"}, **(spec or {})},
        "status": status,
    }


READY: dict[str, Any] = {
    "phase": "Active",
    "keyHash": "a" * 64,
    "keyHint": "aik_…aaaa",
    "createdAt": "2026-03-14T11:00:00Z",
    "observedGeneration": 1,
    "conditions": [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Active",
            "message": "The key is accepted by the gateway",
            "lastTransitionTime": "2026-03-14T11:00:00Z",
            "observedGeneration": 1,
        }
    ],
}


def test_assess_says_what_a_key_needs_without_the_api() -> None:
    fresh = assess(_aikey(), NOW)
    assert (fresh.work, fresh.urgent) == (True, False)  # a key to mint: behind existing keys' work
    settled = assess(_aikey(**READY), NOW)
    assert (settled.work, settled.deadline) == (False, None)
    expiring = {**READY, "expiresAt": "2026-03-14T13:00:00Z"}
    with_ttl = assess(_aikey({"ttl": "2h"}, **expiring), NOW)
    assert (with_ttl.work, with_ttl.deadline) == (False, dt.datetime(2026, 3, 14, 13, tzinfo=dt.UTC))
    expired = assess(_aikey({"ttl": "2h"}, **expiring), NOW + dt.timedelta(hours=2))
    assert (expired.work, expired.urgent) == (True, True)
    disabled = assess(_aikey({"disabled": True}, **READY), NOW)
    assert (disabled.work, disabled.urgent) == (True, True)
    rotated = assess(_aikey({"rotation": 1}, **READY), NOW)
    assert (rotated.work, rotated.urgent) == (True, True)


def test_key_patch_writes_only_what_moved() -> None:
    t = dt.datetime(2026, 3, 14, 12, 0, tzinfo=dt.UTC)
    assert key_patch(None, None, KeyUse(0, None), 60) == {}  # never charged: no "0.00" to write
    assert key_patch(None, None, KeyUse(1_500_000_000, t), 60) == {
        "spend": "1.50",
        "lastUsedAt": "2026-03-14T12:00:00Z",
    }
    assert key_patch("1.50", "2026-03-14T12:00:00Z", KeyUse(1_500_000_000, t), 60) == {}
    later = t + dt.timedelta(seconds=30)
    # a charge of nothing moves lastUsedAt alone: rewritten only once it moved a minute
    assert key_patch("1.50", "2026-03-14T12:00:00Z", KeyUse(1_500_000_000, later), 60) == {}
    assert key_patch(
        "1.50", "2026-03-14T12:00:00Z", KeyUse(1_500_000_000, t + dt.timedelta(minutes=1)), 60
    ) == {"lastUsedAt": "2026-03-14T12:01:00Z"}
    # spend moved: lastUsedAt goes along, however little it moved
    assert key_patch("1.50", "2026-03-14T12:00:00Z", KeyUse(1_600_000_000, later), 60) == {
        "spend": "1.60",
        "lastUsedAt": "2026-03-14T12:00:30Z",
    }
    # a new period: the spend starts again at zero
    assert key_patch("1.50", "2026-03-14T12:00:00Z", KeyUse(0, t), 60) == {"spend": "0.00"}


def test_scale_settings() -> None:
    s = Settings.from_env({})
    assert (s.status_writes_per_second, s.last_used_granularity, s.key_workers) == (20.0, 60.0, 16)
    assert (s.leader_election, s.lease_seconds) == (False, 15.0)
    s = Settings.from_env(
        {
            "AIKEYS_STATUS_WRITES_PER_SECOND": "50",
            "AIKEYS_LEADER_ELECTION": "true",
            "AIKEYS_LEASE_SECONDS": "5",
            "AIKEYS_KEY_WORKERS": "4",
        }
    )
    assert (s.status_writes_per_second, s.leader_election, s.lease_seconds, s.key_workers) == (
        50.0,
        True,
        5.0,
        4,
    )

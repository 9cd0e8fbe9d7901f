"""The operator's design for scale, on the real control plane and redis-server: one timer for every
deadline (many keys expire on the second), urgent work before a burst of new keys, status work
that follows what was charged, status writes bounded, and a restart that re-reads what an earlier
run may have taken from the ledger without writing it; and the gateway's paged list. (Figures at
100,000 keys: bench.scale.)"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from aikeys_dev.devstack.controlplane import ControlPlane
from aikeys_dev.devstack.redis import RedisServer
from aikeys_dev.devstack.services import OperatorProcess
from aikeys_gateway.cache.catalog import key_entry
from aikeys_gateway.cache.informers import Informer

from aikeys.kube.client import KubeClient, path
from aikeys.kube.config import from_kubeconfig
from aikeys.ledger.store import Allocation, Estimate, Ledger, connect
from aikeys.periods import Period
from aikeys.resources import API_VERSION
from tests.integration.kube import apply_allocation, get, key_uids, wait_for

pytestmark = pytest.mark.integration
NS = "op-scale"
WRITES_PER_SECOND = 20  # the operator's default bound (AIKEYS_STATUS_WRITES_PER_SECOND)


@pytest.fixture(scope="module", autouse=True)
def namespace(control_plane: ControlPlane, operator: OperatorProcess) -> Iterator[None]:
    control_plane.kubectl("create", "namespace", NS)
    yield
    control_plane.kubectl("delete", "namespace", NS, "--wait=false")  # a few hundred keys less for the rest


def metrics(op: OperatorProcess) -> dict[str, float]:
    with urllib.request.urlopen(op.metrics_url, timeout=5) as resp:  # noqa: S310 - loopback
        text = resp.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


KEY_WRITES = 'aikeys_operator_status_writes_total{kind="aikeys"}'
COMPARED = "aikeys_operator_status_keys_compared_total"


def create_keys(cp: ControlPlane, names: list[str], allocation: str, **spec: Any) -> None:
    """Create AIKeys at once (32 requests in flight), as a bulk `kubectl apply` would, faster."""

    async def go() -> None:
        async with KubeClient(from_kubeconfig(cp.kubeconfig)) as kube:
            sem = asyncio.Semaphore(32)

            async def one(name: str) -> None:
                async with sem:
                    await kube.create(
                        path(API_VERSION, "aikeys", NS),
                        {
                            "apiVersion": API_VERSION,
                            "kind": "AIKey",
                            "metadata": {"name": name, "namespace": NS},
                            "spec": {"allocationRef": {"name": allocation}, **spec},
                        },
                    )

            await asyncio.gather(*(one(n) for n in names))

    asyncio.run(go())


def statuses(cp: ControlPlane, prefix: str) -> dict[str, dict[str, Any]]:
    out = cp.kubectl("get", "aikeys", "-n", NS, "-o", "json").stdout
    return {
        o["metadata"]["name"]: o.get("status") or {}
        for o in json.loads(out)["items"]
        if o["metadata"]["name"].startswith(prefix)
    }


def all_active(cp: ControlPlane, prefix: str, n: int) -> dict[str, dict[str, Any]] | None:
    found = statuses(cp, prefix)
    return found if len(found) == n and all(s.get("phase") == "Active" for s in found.values()) else None


def charge(cp: ControlPlane, redis_url: str, allocation: str, keys: list[str], nano: int) -> None:
    """Charge each of the named keys as the gateway does: by its uid."""
    uids = key_uids(cp, NS)

    async def go() -> None:
        client = connect(redis_url, max_connections=32)
        ledger = Ledger(client)
        alloc = Allocation(NS, allocation, 10**12, Period.MONTHLY)
        sem = asyncio.Semaphore(16)

        async def one(key: str) -> None:
            rid = f"{key}-{time.monotonic_ns()}"
            async with sem:
                await ledger.reserve(alloc, rid, uids[key], f"{NS}:p/m", Estimate(nano, 1, 1))
                await ledger.settle(alloc, rid, uids[key], f"{NS}:p/m", 1, 1, nano)

        await asyncio.gather(*(one(k) for k in keys))
        await client.aclose()

    asyncio.run(go())


def quiet(op: OperatorProcess, what: str, seconds: float = 2.5) -> dict[str, float]:
    """Wait until the operator's status work has settled: the same counters `seconds` apart."""

    def settled() -> dict[str, float] | None:
        before = metrics(op)
        time.sleep(seconds)
        after = metrics(op)
        same = all(before.get(k) == after.get(k) for k in (KEY_WRITES, COMPARED))
        return after if same and after.get('aikeys_operator_status_backlog{kind="aikeys"}') == 0 else None

    return wait_for(settled, 60, what)


def test_many_keys_expire_on_the_second(control_plane: ControlPlane, operator: OperatorProcess) -> None:
    apply_allocation(control_plane, NS, "short", "10.00")
    names = [f"short-{i:02d}" for i in range(40)]
    create_keys(control_plane, names, "short", ttl="8s")
    wait_for(lambda: all_active(control_plane, "short-", 40), 30, "40 keys Active")
    expired_at: dict[str, float] = {}

    def all_expired() -> bool:
        now = time.time()
        for name, st in statuses(control_plane, "short-").items():
            if st.get("phase") == "Expired":
                expired_at.setdefault(name, now)
        return len(expired_at) == 40

    wait_for(all_expired, 30, "40 keys Expired", interval=0.1)
    final = statuses(control_plane, "short-")
    late = [expired_at[n] - dt.datetime.fromisoformat(str(final[n]["expiresAt"])).timestamp() for n in names]
    print(f"\n40 keys: Expired {min(late):.2f}–{max(late):.2f}s after their expiresAt")
    assert max(late) < 2.0  # seen through a 0.1 s poll of kubectl: the operator itself is faster


def test_a_disable_overtakes_a_burst_of_new_keys(
    control_plane: ControlPlane, operator: OperatorProcess
) -> None:
    apply_allocation(control_plane, NS, "burst", "10.00")
    create_keys(control_plane, ["burst-toggle"], "burst")
    wait_for(lambda: all_active(control_plane, "burst-toggle", 1), 30, "the key to toggle")
    names = [f"burst-{i:03d}" for i in range(400)]
    creating = threading.Thread(target=create_keys, args=(control_plane, names, "burst"))
    creating.start()
    wait_for(lambda: len(statuses(control_plane, "burst-")) > 100, 30, "the burst to start", interval=0.1)
    started = time.monotonic()
    control_plane.kubectl(
        "patch", "aikey", "burst-toggle", "-n", NS, "--type=merge", "-p", '{"spec":{"disabled":true}}'
    )
    wait_for(
        lambda: (
            ((get(control_plane, "aikey", "burst-toggle", NS) or {}).get("status") or {}).get("phase")
            == "Disabled"
        ),
        10,
        "Disabled",
        interval=0.05,
    )
    took = time.monotonic() - started
    pending = sum(1 for s in statuses(control_plane, "burst-").values() if s.get("phase") != "Active")
    print(f"\nDisabled after {took:.2f}s, with {pending} of 401 keys not yet Active")
    assert took < 3.0
    creating.join()
    wait_for(lambda: all_active(control_plane, "burst-", 401) is None, 1, "(not all Active: one is Disabled)")
    wait_for(
        lambda: (
            sum(1 for s in statuses(control_plane, "burst-").values() if s.get("phase") == "Active") == 400
        ),
        90,
        "the 400 new keys Active",
    )


def test_status_work_follows_what_was_charged(
    control_plane: ControlPlane, operator: OperatorProcess, redis_server: RedisServer
) -> None:
    """An idle key costs nothing per refresh; a charged one costs one read and one write."""
    apply_allocation(control_plane, NS, "few", "10.00")
    names = [f"few-{i:02d}" for i in range(60)]
    create_keys(control_plane, names, "few")
    wait_for(lambda: all_active(control_plane, "few-", 60), 60, "60 keys Active")
    before = quiet(operator, "the status work to settle")
    rounds = before["aikeys_operator_status_rounds_total"]
    charge(control_plane, redis_server.url, "few", names[:3], 250_000_000)
    wait_for(
        lambda: all(statuses(control_plane, "few-")[n].get("spend") == "0.25" for n in names[:3]),
        15,
        "the three keys' spend",
    )
    after = quiet(operator, "the status work to settle")
    assert after["aikeys_operator_status_rounds_total"] - rounds >= 3  # it kept looking meanwhile
    assert after[COMPARED] - before[COMPARED] == 3  # the 57 idle keys were never read
    assert after[KEY_WRITES] - before[KEY_WRITES] == 3
    assert all("spend" not in statuses(control_plane, "few-")[n] for n in names[3:])


def test_status_writes_are_bounded(
    control_plane: ControlPlane, operator: OperatorProcess, redis_server: RedisServer
) -> None:
    apply_allocation(control_plane, NS, "many", "100.00")
    names = [f"many-{i:03d}" for i in range(120)]
    create_keys(control_plane, names, "many")
    wait_for(lambda: all_active(control_plane, "many-", 120), 60, "120 keys Active")
    base = quiet(operator, "the status work to settle")[KEY_WRITES]
    charge(control_plane, redis_server.url, "many", names, 10_000_000)  # 120 keys charged at once
    samples: list[tuple[float, float]] = []
    started = time.monotonic()
    while True:
        written = metrics(operator)[KEY_WRITES] - base
        samples.append((time.monotonic() - started, written))
        if written >= 120:
            break
        assert time.monotonic() - started < 60, f"only {written} of 120 written"
        time.sleep(0.2)
    took = samples[-1][0]
    # a token bucket of 20 a second after a burst of 20: never more than 20 + 20·t in t seconds
    for t0, w0 in samples:
        for t1, w1 in samples:
            if t1 > t0:
                assert w1 - w0 <= WRITES_PER_SECOND * (1 + (t1 - t0) + 0.4), (t0, t1, w1 - w0)
    print(f"\n120 key statuses written in {took:.1f}s (bound: {WRITES_PER_SECOND}/s)")
    assert took >= (120 - 2 * WRITES_PER_SECOND) / WRITES_PER_SECOND
    assert all(s.get("spend") == "0.01" for s in statuses(control_plane, "many-").values())


def test_a_restart_compares_every_key_once(
    control_plane: ControlPlane, operator: OperatorProcess, redis_server: RedisServer
) -> None:
    """A previous run took keys from the ledger's dirty set and died before writing them: after a
    restart every key is compared once, so nothing stays stale; and nothing is minted again."""
    apply_allocation(control_plane, NS, "crash", "10.00")
    names = [f"crash-{i:02d}" for i in range(20)]
    create_keys(control_plane, names, "crash")
    wait_for(lambda: all_active(control_plane, "crash-", 20), 60, "20 keys Active")
    hashes = {n: s["keyHash"] for n, s in statuses(control_plane, "crash-").items()}
    operator.stop()
    try:
        charge(control_plane, redis_server.url, "crash", names[:2], 70_000_000)

        async def lose_track() -> None:
            client = connect(redis_server.url)
            await client.delete(Allocation(NS, "crash", 1).keys.dirty)
            await client.aclose()

        asyncio.run(lose_track())
    finally:
        started = time.monotonic()
        operator.start()
    wait_for(lambda: metrics(operator).get("aikeys_operator_ready") == 1.0, 30, "the operator to be ready")
    print(f"\noperator ready {time.monotonic() - started:.2f}s after its start")
    wait_for(
        lambda: all(statuses(control_plane, "crash-")[n].get("spend") == "0.07" for n in names[:2]),
        15,
        "the spend a previous run never wrote",
    )
    assert {n: s["keyHash"] for n, s in statuses(control_plane, "crash-").items()} == hashes
    assert metrics(operator)["aikeys_operator_keys_minted_total"] == 0


async def test_the_gateway_lists_keys_in_pages(
    control_plane: ControlPlane, operator: OperatorProcess
) -> None:
    """One page of full objects in memory at a time: the cache is the same as one big list."""
    names = [f"paged-{i}" for i in range(7)]
    await asyncio.to_thread(create_keys, control_plane, names, "paged")
    await asyncio.to_thread(wait_for, lambda: all_active(control_plane, "paged-", 7), 30, "7 keys Active")
    async with KubeClient(from_kubeconfig(control_plane.kubeconfig)) as kube:
        url = path(API_VERSION, "aikeys", NS)
        paged = Informer(kube, "AIKey", url, key_entry, page=2)
        whole = Informer(kube, "AIKey", url, key_entry, page=10_000)
        await paged.relist()
        await whole.relist()
    assert {(NS, n) for n in names} <= set(paged.objects)
    assert paged.objects == whole.objects
    assert paged.resource_version and paged.synced.is_set()

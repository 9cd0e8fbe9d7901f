"""Two operator replicas with leader election (a Lease), on their own control plane: one works,
the other waits; the leader is killed (SIGKILL) while hundreds of keys are being created, the
other takes over, and every key ends Active with the one key its Secret ever held."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from aikeys_dev.devstack.controlplane import ControlPlane, launch
from aikeys_dev.devstack.redis import RedisServer
from aikeys_dev.devstack.services import OperatorProcess
from aikeys_operator.secrets import KEY_HASH

from aikeys.kube.client import KubeClient, path
from aikeys.kube.config import from_kubeconfig
from tests.conftest import CREDENTIALS
from tests.integration.kube import apply_allocation, install_crds, wait_for
from tests.integration.test_operator_scale import all_active, create_keys, statuses

pytestmark = pytest.mark.integration
NS = "op-scale"  # the helpers of test_operator_scale work in this namespace
LEASE_SECONDS = 3


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    cp = launch(tmp_path_factory.mktemp("ha-controlplane"), controller_manager=False)
    try:
        install_crds(cp)
        cp.kubectl("create", "namespace", "aikeys-system")
        cp.kubectl("create", "namespace", NS)
        yield cp
    finally:
        cp.stop()


def leading(op: OperatorProcess) -> bool:
    try:
        with urllib.request.urlopen(op.metrics_url, timeout=2) as resp:  # noqa: S310 - loopback
            return "aikeys_operator_leader 1.0" in resp.read().decode()
    except OSError:
        return False


class SecretWatch:
    """Every key hash each key Secret of the namespace ever held, from a watch."""

    def __init__(self, cp: ControlPlane):
        self.cp = cp
        self.seen: dict[str, set[str]] = {}
        self.stop = threading.Event()
        self.started = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.thread.start()
        self.started.wait(10)

    async def _run(self) -> None:
        async with KubeClient(from_kubeconfig(self.cp.kubeconfig)) as kube:
            url = path("v1", "secrets", NS)
            rv = (await kube.get(url))["metadata"]["resourceVersion"]
            self.started.set()
            while not self.stop.is_set():
                with contextlib.suppress(TimeoutError):
                    async for event in kube.watch(url, rv, timeout_seconds=2):
                        obj = event.get("object") or {}
                        rv = obj.get("metadata", {}).get("resourceVersion", rv)
                        digest = (obj.get("metadata", {}).get("annotations") or {}).get(KEY_HASH)
                        if digest:
                            self.seen.setdefault(obj["metadata"]["name"], set()).add(digest)

    def close(self) -> dict[str, set[str]]:
        self.stop.set()
        self.thread.join(10)
        return self.seen


def test_a_failover_while_keys_are_created_loses_nothing_and_mints_nothing_twice(
    plane: ControlPlane, redis_server: RedisServer, tmp_path: Path
) -> None:
    env = {
        "AIKEYS_LEADER_ELECTION": "true",
        "AIKEYS_LEASE_SECONDS": str(LEASE_SECONDS),
        "POD_NAMESPACE": "aikeys-system",
        "AIKEYS_CREDENTIALS_SECRET": CREDENTIALS,
    }
    replicas = [
        OperatorProcess(plane.kubeconfig, redis_server.url, tmp_path / f"{n}.log", extra_env=env).start()
        for n in ("a", "b")
    ]
    try:
        wait_for(lambda: sum(map(leading, replicas)) == 1, 30, "one leader")
        time.sleep(LEASE_SECONDS)  # the other has had time to try, and must still wait
        assert sum(map(leading, replicas)) == 1
        leader, other = replicas if leading(replicas[0]) else replicas[::-1]
        apply_allocation(plane, NS, "ha", "10.00")
        names = [f"ha-{i:03d}" for i in range(300)]
        watch = SecretWatch(plane)
        creating = threading.Thread(target=create_keys, args=(plane, names, "ha"))
        creating.start()
        wait_for(
            lambda: sum(1 for s in statuses(plane, "ha-").values() if s.get("phase") == "Active") >= 40,
            60,
            "the first keys minted",
            interval=0.02,
        )
        assert leader.child is not None and leader.child.proc is not None
        leader.child.proc.kill()  # no goodbye: the lease has to expire
        killed = time.monotonic()
        active_then = sum(1 for s in statuses(plane, "ha-").values() if s.get("phase") == "Active")
        wait_for(lambda: leading(other), 30, "the other replica to take over", interval=0.1)
        took_over = time.monotonic() - killed
        creating.join()
        wait_for(lambda: all_active(plane, "ha-", 300), 90, "all 300 keys Active")
        seen = watch.close()
        print(f"\nleader killed with {active_then} of 300 keys Active; the other led {took_over:.1f}s later")
        assert took_over < LEASE_SECONDS + 5
        final = statuses(plane, "ha-")
        assert len(seen) == 300
        for name in names:
            assert seen[f"aikey-{name}"] == {final[name]["keyHash"]}, name  # one key, ever
    finally:
        for op in replicas:
            op.stop()

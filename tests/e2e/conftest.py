"""tests/e2e: the project as users run it, on a real one-node cluster (aikeys_dev.devstack.node).

One node per session: the images are built (or found cached), the node comes up in its own network
namespace, the chart is installed with `helm install --wait`, an in-cluster mock upstream serves
the models, and clients talk to the gateway pods through the Ingress from this machine. The node
is always torn down; after the session, `pytest_sessionfinish` fails the run if anything of it is
left (a network namespace, the kubelet's sysctls, root-namespace iptables rules).
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aikeys_dev.devstack.cluster import (
    MOCK_HOST,
    NAMESPACE,
    RELEASE,
    deploy_mock_upstream,
    helm_install,
)
from aikeys_dev.devstack.images import Images, build_all
from aikeys_dev.devstack.node.binaries import ensure_node_built
from aikeys_dev.devstack.node.launch import launch_node
from aikeys_dev.devstack.node.running import Node
from aikeys_dev.devstack.node.slots import live_slots
from aikeys_dev.devstack.node.sysctls import KUBELET_SYSCTLS, SYSCTL_FILE, read_sysctl

E2E_TIMEOUT = 900  # the first test also waits for the session's node and release


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: runs on the real one-node cluster (tests/e2e)")
    config.addinivalue_line("markers", "own_node: starts nodes of its own; runs before the session's node")
    config.addinivalue_line("markers", "uninstalls: changes the session's release; runs after the others")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests with nodes of their own run first (so they see the machine without the session's node),
    tests that upgrade or uninstall the session's release last; the order is kept otherwise."""

    def rank(item: pytest.Item) -> int:
        return 0 if item.get_closest_marker("own_node") else 2 if item.get_closest_marker("uninstalls") else 1

    items.sort(key=rank)


@dataclass(frozen=True)
class Machine:
    """What a node must leave as it found it: the root namespace's firewall and forwarding, the
    machine-wide sysctls the kubelet changes (their values before any node ran: saved in
    SYSCTL_FILE while one does), and no network namespace without a running node."""

    iptables: str
    ip_forward: str
    sysctls: dict[str, str]
    netns: frozenset[str]

    @staticmethod
    def now() -> Machine:
        saved = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
        rules = "\n".join(line for line in saved.splitlines() if not line.startswith("#"))
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
        return Machine(
            iptables=rules,
            ip_forward=read_sysctl("net.ipv4.ip_forward"),
            sysctls=json.loads(SYSCTL_FILE.read_text())
            if SYSCTL_FILE.exists()
            else {name: read_sysctl(name) for name in KUBELET_SYSCTLS},
            netns=frozenset(line.split()[0] for line in listed.splitlines() if line.strip()),
        )

    def leftovers(self, before: Machine) -> list[str]:
        """How the machine differs from `before`, other nodes that still run allowed for."""
        running = {slot.netns for slot in live_slots()}
        problems = [
            f"network namespace {ns} without a running node"
            for ns in sorted(self.netns - running - before.netns)
        ]
        for what in ("iptables", "ip_forward", "sysctls"):
            if getattr(before, what) != getattr(self, what):
                problems.append(f"{what}: before {getattr(before, what)!r}, after {getattr(self, what)!r}")
        if not running and SYSCTL_FILE.exists():
            problems.append(f"{SYSCTL_FILE} left while no node runs")
        return problems


_before: list[Machine] = []  # the state before the session's node started, for pytest_sessionfinish


@pytest.fixture(scope="session")
def machine_before() -> Machine:
    state = Machine.now()
    _before.append(state)
    return state


@pytest.fixture(scope="session")
def images() -> Images:
    return build_all(ensure_node_built())


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory, images: Images, machine_before: Machine) -> Iterator[Node]:
    started = launch_node(tmp_path_factory.mktemp("node"), images.all)
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in started.timings.items())
    print(f"\nnode up: {timings}")
    try:
        yield started
    finally:
        started.stop()


@dataclass(frozen=True)
class Release:
    node: Node
    images: Images
    mock_url: str  # in-cluster base URL of the mock upstream
    name: str = RELEASE
    namespace: str = NAMESPACE

    @property
    def openai_url(self) -> str:
        """The gateway through the Ingress, as a user's OpenAI client sees it."""
        return f"{self.node.ingress_url}/api/openai/v1"

    def pods(self, component: str) -> list[dict[str, Any]]:
        out = self.node.kubectl(
            "get",
            "pods",
            "-n",
            self.namespace,
            "-l",
            f"app.kubernetes.io/instance={self.name},app.kubernetes.io/component={component}",
            "-o",
            "json",
        ).stdout
        pods: list[dict[str, Any]] = json.loads(out)["items"]
        return [p for p in pods if not p["metadata"].get("deletionTimestamp")]

    def exec(self, pod: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.node.kubectl("exec", "-n", self.namespace, pod, "--", *argv, check=check)

    def redis(self, *args: str) -> str:
        return self.exec(f"{self.name}-redis-0", "redis-cli", *args).stdout.strip()


@pytest.fixture(scope="session")
def release(node: Node, images: Images) -> Release:
    mock_url = deploy_mock_upstream(node, images)
    helm_install(node, images)
    return Release(node=node, images=images, mock_url=mock_url)


def mock_call(release: Release, method: str, path: str, payload: Any = None) -> Any:
    """The in-cluster mock upstream's control API, through the Ingress (Host: mock.aikeys.local)."""
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(f"{release.node.ingress_url}{path}", data=data, method=method)  # noqa: S310
    req.add_header("Host", MOCK_HOST)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - the node's address
        raw = resp.read()
        return json.loads(raw) if raw else None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The node's teardown is part of what is tested: fail the run if it left anything."""
    if not _before:
        return
    problems = Machine.now().leftovers(_before[0])
    if problems:
        print("\nthe node's teardown left the machine changed:\n  " + "\n  ".join(problems))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

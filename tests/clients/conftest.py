"""Fixtures of the real-client suite: the Node packages (installed into the cache when missing),
and one tenant — a namespace with a Responses-native and a chat-only model on the mock upstream,
an Allocation and an AIKey — served by the session's gateway."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from aikeys_dev.devstack.controlplane import ControlPlane
from aikeys_dev.devstack.services import GatewayProcess
from aikeys_dev.devstack.upstream import MockUpstreamProcess

from tests.clients.harness import ALLOCATION, HERE, NS, ROOT, ProxyTrap, Tenant
from tests.integration.kube import apply, apply_allocation, create_key, gateway_knows

INSTALL_TIMEOUT = 900  # a first install downloads about 700 MB from the npm registry


@pytest.fixture(scope="session")
def node_packages() -> Path:
    """The folder tools/node-clients.sh installs the pinned packages into (`make setup` runs it
    too). A failed install fails the tests that need it: nothing here is ever skipped."""
    result = subprocess.run(
        ["bash", str(ROOT / "tools" / "node-clients.sh")],
        stdout=subprocess.PIPE,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"tools/node-clients.sh failed (exit {result.returncode}); its output is above")
    folder = Path(result.stdout.strip().splitlines()[-1])
    assert (folder / ".complete").is_file(), folder
    return folder


@pytest.fixture(scope="session")
def node_dir(node_packages: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the test scripts next to the cached node_modules, so their imports resolve."""
    folder = tmp_path_factory.mktemp("node")
    (folder / "node_modules").symlink_to(node_packages / "node_modules")
    for script in (HERE / "js").glob("*.mjs"):
        shutil.copy(script, folder)
    return folder


def _provider(cp: ControlPlane, name: str, url: str, responses_api: str | None) -> None:
    model: dict[str, object] = {
        "name": "m",
        "inputPricePerMillion": "1.00",
        "outputPricePerMillion": "2.00",
        "cachedInputPricePerMillion": "0.10",  # harness.PRICE
    }
    if responses_api:
        model["responsesAPI"] = responses_api
        model["contextWindow"] = 400_000  # bounds input stored upstream (previous_response_id)
    body = {
        "apiVersion": "aikeys.dev/v1alpha1",
        "kind": "AIProvider",
        "metadata": {"name": name},
        "spec": {"baseURL": url, "timeout": "30s", "models": [model]},
    }
    apply(cp, json.dumps(body), NS)


@pytest.fixture(scope="session")
def tenant(
    control_plane: ControlPlane, gateway: GatewayProcess, mock_upstream_process: MockUpstreamProcess
) -> Tenant:
    control_plane.kubectl("create", "namespace", NS)
    _provider(control_plane, "native", mock_upstream_process.url, "native")
    _provider(control_plane, "chatonly", mock_upstream_process.url, None)
    apply_allocation(control_plane, NS, ALLOCATION, "100.00")
    key = create_key(control_plane, NS, "clients", ALLOCATION)
    gateway_knows(gateway.openai_url, key)
    return Tenant(gateway.openai_url, key)


@pytest.fixture
def proxy_trap() -> Iterator[ProxyTrap]:
    trap = ProxyTrap()
    try:
        yield trap
    finally:
        trap.close()

"""What the web-page tests share: a gateway with the pages on, namespaces, people with and without
RBAC, and a small HTTP client that signs in like a browser."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from aikeys_dev.devstack.admission import RELEASE
from aikeys_dev.devstack.controlplane import ControlPlane
from aikeys_dev.devstack.redis import RedisServer
from aikeys_dev.devstack.services import GatewayProcess
from aikeys_dev.devstack.upstream import MockUpstreamProcess

from tests.conftest import CREDENTIALS
from tests.integration.kube import apply_allocation, apply_provider

NS = "ui-team"
OTHER = "ui-other"
SESSION_KEY = "test-session-key-0123456789abcdefghijklmnopqrstuvwxyz"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass(frozen=True)
class People:
    alice: str  # manages keys and reads usage in NS (Role like `edit`)
    nobody: str  # no RBAC anywhere
    admin_token: str
    bob: str = ""  # as alice
    boss: str = ""  # as alice, and may act on others' keys (the owner exception, create aikeys/owner)


@pytest.fixture(scope="module")
def ui_gateway(
    control_plane: ControlPlane,
    redis_server: RedisServer,
    gateway: GatewayProcess,  # the session's: it registers the usage API and the operator's base URL
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(
        control_plane.kubeconfig,
        redis_server.url,
        tmp_path_factory.mktemp("ui-gateway") / "gateway.log",
        CREDENTIALS,
        extra_env={"AIKEYS_UI": "true", "AIKEYS_UI_SESSION_KEY": SESSION_KEY},
    ).start()
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def people(control_plane: ControlPlane, mock_upstream_process: MockUpstreamProcess) -> People:
    cp = control_plane
    for ns in (NS, OTHER):
        cp.kubectl("create", "namespace", ns, check=False)
        # an embeddings model that sorts first: never the one a chat snippet names
        models = {"ada-embedding": ("0.10", "0"), "chat": ("1.00", "2.00")}
        apply_provider(cp, ns, mock_upstream_process.url, models)
        apply_allocation(cp, ns, "team", "50.00", "None")
        apply_allocation(cp, ns, "research", "5.00", "Monthly")
    for sa in ("alice", "bob", "boss", "nobody"):
        cp.kubectl("create", "serviceaccount", sa, "-n", NS, check=False)
    cp.kubectl(
        "create",
        "role",
        "key-manager",
        "-n",
        NS,
        "--verb=get,list,watch,create,update,patch,delete",
        "--resource=aikeys.aikeys.dev,allocations.aikeys.dev,secrets,keyusages.usage.aikeys.dev",
        check=False,
    )
    cp.kubectl(
        "create",
        "rolebinding",
        "key-manager",
        "-n",
        NS,
        "--role=key-manager",
        f"--serviceaccount={NS}:alice",
        f"--serviceaccount={NS}:bob",
        f"--serviceaccount={NS}:boss",
        check=False,
    )
    cp.kubectl(
        "create",
        "rolebinding",
        "key-owner-admin",
        "-n",
        NS,
        f"--clusterrole={RELEASE}-key-owner-admin",  # as the chart ships it
        f"--serviceaccount={NS}:boss",
        check=False,
    )
    token = {
        sa: cp.kubectl("create", "token", sa, "-n", NS, "--duration=2h").stdout.strip()
        for sa in ("alice", "bob", "boss", "nobody")
    }
    return People(token["alice"], token["nobody"], cp.token, token["bob"], token["boss"])


def csrf_of(page: str) -> str:
    found = CSRF.search(page)
    assert found, "no CSRF token on the page"
    return found.group(1)


def browser(gw: GatewayProcess, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=gw.url, follow_redirects=False, timeout=60, headers=headers)


def sign_in(gw: GatewayProcess, credential: str, **headers: str) -> httpx.Client:
    client = browser(gw, **headers)
    form = client.get("/ui/login")
    assert form.status_code == 200
    done = client.post("/ui/login", data={"csrf": csrf_of(form.text), "credential": credential})
    assert done.status_code == 303, done.text
    return client


def log_of(gw: GatewayProcess) -> str:
    return Path(gw.log_path).read_text(errors="replace")

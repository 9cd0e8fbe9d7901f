"""Keys belong to people: the chart's ValidatingAdmissionPolicy on the real API server, the CLI filling
the owner from SelfSubjectReview, and usage grouped by owner (/api/usage, the aggregated API, the CLI)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from aikeys.devstack.admission import RELEASE
from aikeys.devstack.controlplane import ADMIN_USER, ControlPlane
from aikeys.devstack.services import GatewayProcess
from aikeys.devstack.upstream import MockUpstreamProcess
from tests.integration.kube import apply_allocation, apply_provider, gateway_knows, get, wait_for

pytestmark = pytest.mark.integration
NS = "owners"
ALICE = f"system:serviceaccount:{NS}:alice"
BOSS = f"system:serviceaccount:{NS}:boss"


@pytest.fixture(scope="module")
def world(
    control_plane: ControlPlane, gateway: GatewayProcess, mock_upstream_process: MockUpstreamProcess
) -> None:
    cp = control_plane
    cp.kubectl("create", "namespace", NS)
    apply_provider(cp, NS, mock_upstream_process.url, {"chat": ("1.00", "2.00")})
    apply_allocation(cp, NS, "team", "50.00", "None")
    # alice and boss manage keys in the namespace (as `edit` lets them); boss may give keys to others too
    for sa in ("alice", "boss"):
        cp.kubectl("create", "serviceaccount", sa, "-n", NS)
    cp.kubectl(
        "create",
        "role",
        "keys",
        "-n",
        NS,
        "--verb=get,list,watch,create,update,patch,delete",
        "--resource=aikeys.aikeys.dev,secrets,keyusages.usage.aikeys.dev",
    )
    cp.kubectl(
        "create",
        "rolebinding",
        "keys",
        "-n",
        NS,
        "--role=keys",
        f"--serviceaccount={NS}:alice",
        f"--serviceaccount={NS}:boss",
    )
    # the documented extra permission, as the chart ships it (a ClusterRole bound in one namespace)
    cp.kubectl(
        "create",
        "rolebinding",
        "owner-admin",
        "-n",
        NS,
        f"--clusterrole={RELEASE}-key-owner-admin",
        f"--serviceaccount={NS}:boss",
    )


def kubeconfig_for(cp: ControlPlane, sa: str, path: Path) -> Path:
    token = cp.kubectl("create", "token", sa, "-n", NS).stdout.strip()
    config = yaml.safe_load(cp.kubeconfig.read_text())
    config["users"] = [{"name": sa, "user": {"token": token}}]
    config["contexts"][0]["context"].update(user=sa, namespace=NS)
    path.write_text(yaml.safe_dump(config))
    return path


def key(name: str, owner: str | None = None) -> str:
    spec: dict[str, Any] = {"allocationRef": {"name": "team"}}
    if owner is not None:
        spec["owner"] = owner
    return json.dumps(
        {"apiVersion": "aikeys.dev/v1alpha1", "kind": "AIKey", "metadata": {"name": name}, "spec": spec}
    )


def kubectl_as(
    cp: ControlPlane, config: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(cp.binaries.kubectl), f"--kubeconfig={config}", "-n", NS, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def aikeys(
    cp: ControlPlane, gateway: GatewayProcess, config: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "KUBECONFIG": str(config), "AIKEYS_GATEWAY_URL": gateway.openai_url}
    return subprocess.run(
        [sys.executable, "-m", "aikeys.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_a_user_cannot_create_a_key_for_someone_else(
    control_plane: ControlPlane, world: None, tmp_path: Path
) -> None:
    cp = control_plane
    alice = kubeconfig_for(cp, "alice", tmp_path / "alice")
    forged = kubectl_as(cp, alice, "create", "-f", "-", stdin=key("forged", "bob"))
    assert forged.returncode != 0
    assert (
        f'spec.owner must be "{ALICE}", the user creating the key (not "bob"): a key belongs to whoever '
        "creates it (kubectl aikeys keys create fills it in). Only users allowed to create aikeys/owner "
        f"(group aikeys.dev) in namespace {NS} may create keys for someone else."
    ) in forged.stderr
    empty = kubectl_as(cp, alice, "create", "-f", "-", stdin=key("ownerless"))
    assert empty.returncode != 0 and "(it is empty)" in empty.stderr
    own = kubectl_as(cp, alice, "create", "-f", "-", stdin=key("alices", ALICE))
    assert own.returncode == 0, own.stderr
    # the owner cannot change afterwards (other fields can)
    moved = kubectl_as(
        cp, alice, "patch", "aikey", "alices", "--type=merge", "-p", '{"spec": {"owner": "bob"}}'
    )
    assert moved.returncode != 0 and f'spec.owner cannot change (it is "{ALICE}")' in moved.stderr
    described = kubectl_as(
        cp, alice, "patch", "aikey", "alices", "--type=merge", "-p", '{"spec": {"description": "mine"}}'
    )
    assert described.returncode == 0, described.stderr
    assert (
        kubectl_as(
            cp, alice, "auth", "can-i", "create", "aikeys.aikeys.dev", "--subresource=owner"
        ).stdout.strip()
        == "no"
    )
    # the printer column
    table = cp.kubectl("get", "aikeys", "-n", NS).stdout
    assert "OWNER" in table.splitlines()[0] and ALICE in table


def test_an_admin_with_the_extra_permission_may(
    control_plane: ControlPlane, world: None, tmp_path: Path
) -> None:
    cp = control_plane
    boss = kubeconfig_for(cp, "boss", tmp_path / "boss")
    assert (
        kubectl_as(
            cp, boss, "auth", "can-i", "create", "aikeys.aikeys.dev", "--subresource=owner"
        ).stdout.strip()
        == "yes"
    )
    given = kubectl_as(cp, boss, "create", "-f", "-", stdin=key("for-bob", "bob"))
    assert given.returncode == 0, given.stderr
    assert get(cp, "aikey", "for-bob", NS)["spec"]["owner"] == "bob"  # type: ignore[index]
    moved = kubectl_as(
        cp, boss, "patch", "aikey", "for-bob", "--type=merge", "-p", '{"spec": {"owner": "carol"}}'
    )
    assert moved.returncode == 0, moved.stderr
    # cluster admins (system:masters) hold every permission, so they may too
    assert cp.kubectl("create", "-n", NS, "-f", "-", stdin=key("by-admin", "dave")).returncode == 0


def test_cli_fills_the_owner_and_usage_groups_by_it(
    control_plane: ControlPlane, gateway: GatewayProcess, world: None, tmp_path: Path
) -> None:
    cp = control_plane
    alice = kubeconfig_for(cp, "alice", tmp_path / "alice")
    boss = kubeconfig_for(cp, "boss", tmp_path / "boss")
    created = aikeys(cp, gateway, alice, "keys", "create", "cli-alice", "--allocation", "team")
    assert created.returncode == 0, created.stderr
    alice_key = created.stdout.strip()
    assert get(cp, "aikey", "cli-alice", NS)["spec"]["owner"] == ALICE  # type: ignore[index]
    refused = aikeys(
        cp, gateway, alice, "keys", "create", "cli-bob", "--allocation", "team", "--owner", "bob"
    )
    assert refused.returncode != 0
    assert "not allowed" in refused.stderr and f'spec.owner must be "{ALICE}"' in refused.stderr
    given = aikeys(cp, gateway, boss, "keys", "create", "cli-erin", "--allocation", "team", "--owner", "erin")
    assert given.returncode == 0, given.stderr
    erin_key = given.stdout.strip()
    listed = json.loads(aikeys(cp, gateway, boss, "keys", "list", "--owner", "erin", "-o", "json").stdout)
    assert [(k["name"], k["owner"]) for k in listed] == [("cli-erin", "erin")]
    # traffic: alice's key twice, erin's once
    for k, times in ((alice_key, 2), (erin_key, 1)):
        gateway_knows(gateway.openai_url, k)
        client = openai.OpenAI(base_url=gateway.openai_url, api_key=k, max_retries=0)
        for _ in range(times):
            client.chat.completions.create(
                model=f"{NS}:mock/chat", messages=[{"role": "user", "content": "Hello"}], max_tokens=4
            )
    # /api/usage with a Kubernetes token
    token = yaml.safe_load(boss.read_text())["users"][0]["user"]["token"]
    req = urllib.request.Request(  # noqa: S310 - loopback
        f"{gateway.url}/api/usage?namespace={NS}&group_by=owner&days=1",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
        report = json.loads(resp.read())
    requests = {g["name"]: g["requests"] for g in report["groups"]}
    assert requests == {ALICE: 2, "erin": 1}

    # the aggregated API carries the owner; -o wide shows it
    def usage_of_erin() -> dict[str, Any] | None:
        out = cp.kubectl(
            "get", "--raw", f"/apis/usage.aikeys.dev/v1alpha1/namespaces/{NS}/keyusages/cli-erin"
        )
        obj: dict[str, Any] = json.loads(out.stdout)
        return obj if obj["usage"]["requests"] == 1 else None

    assert wait_for(usage_of_erin, 10, "erin's usage")["owner"] == "erin"
    wide = cp.kubectl("get", "keyusages", "-n", NS, "-o", "wide").stdout
    assert "OWNER" in wide.splitlines()[0] and any(
        "cli-erin" in line and "erin" in line.split()[-1] for line in wide.splitlines()
    )
    # and the CLI groups by it
    by_owner = aikeys(cp, gateway, boss, "usage", "--days", "1", "--by", "owner", "-o", "json")
    assert by_owner.returncode == 0, by_owner.stderr
    groups = {g["name"]: g["requests"] for g in json.loads(by_owner.stdout)["groups"]}
    assert groups == {ALICE: 2, "erin": 1}
    assert ADMIN_USER not in groups

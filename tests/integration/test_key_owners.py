"""Keys belong to people: the chart's ValidatingAdmissionPolicy on the real API server (the owner is
the creator; only the owner rotates, disables, enables, changes or deletes a key), the CLI filling
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
from aikeys_dev.devstack.admission import RELEASE
from aikeys_dev.devstack.controlplane import ADMIN_USER, ControlPlane
from aikeys_dev.devstack.services import GatewayProcess
from aikeys_dev.devstack.upstream import MockUpstreamProcess

from tests.integration.kube import apply, apply_allocation, apply_provider, gateway_knows, get, wait_for

pytestmark = pytest.mark.integration
NS = "owners"
ALICE = f"system:serviceaccount:{NS}:alice"
BOSS = f"system:serviceaccount:{NS}:boss"
CAROL = f"system:serviceaccount:{NS}:carol"


@pytest.fixture(scope="module")
def world(
    control_plane: ControlPlane, gateway: GatewayProcess, mock_upstream_process: MockUpstreamProcess
) -> None:
    cp = control_plane
    cp.kubectl("create", "namespace", NS)
    apply_provider(cp, NS, mock_upstream_process.url, {"chat": ("1.00", "2.00")})
    apply_allocation(cp, NS, "team", "50.00", "None")
    # alice, carol and boss manage keys in the namespace (as `edit` lets them); boss may give keys to
    # others too
    for sa in ("alice", "carol", "boss"):
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
        f"--serviceaccount={NS}:carol",
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
    cp: ControlPlane, config: Path, *args: str, stdin: str | None = None, namespace: str = NS
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(cp.binaries.kubectl), f"--kubeconfig={config}", "-n", namespace, *args],
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


def refused_to(result: subprocess.CompletedProcess[str], who: str, verb: str, name: str, owner: str) -> None:
    """The policy's refusal, readable, as kubectl and `kubectl aikeys` show it."""
    assert result.returncode != 0, result.stdout
    assert (
        f'{who} may not {verb} the key {name}: it belongs to "{owner}". Only the owner of a key rotates, '
        "disables, enables, changes or deletes it, or users allowed to create aikeys/owner (group "
        f"aikeys.dev) in namespace {NS}."
    ) in " ".join(result.stderr.split()), result.stderr


def works(gateway: GatewayProcess, key: str) -> bool:
    """The gateway accepts the key (GET /models: no usage recorded, the usage tests below count it)."""
    try:
        openai.OpenAI(base_url=gateway.openai_url, api_key=key, max_retries=0).models.list()
    except openai.AuthenticationError:
        return False
    return True


def test_only_the_owner_rotates_disables_enables_changes_or_deletes_a_key(
    control_plane: ControlPlane, gateway: GatewayProcess, world: None, tmp_path: Path
) -> None:
    cp = control_plane
    alice = kubeconfig_for(cp, "alice", tmp_path / "alice")
    carol = kubeconfig_for(cp, "carol", tmp_path / "carol")  # the same Role as alice
    created = aikeys(cp, gateway, alice, "keys", "create", "alices-key", "--allocation", "team")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    before = get(cp, "aikey", "alices-key", NS)
    assert before is not None

    def carol_may_not(verb: str, result: subprocess.CompletedProcess[str]) -> None:
        refused_to(result, CAROL, verb, "alices-key", ALICE)

    # carol may not rotate it (to read the new key from the Secret and spend with it), nor disable,
    # change, label, delete it: not with `kubectl aikeys`, not with kubectl
    carol_may_not("rotate", aikeys(cp, gateway, carol, "keys", "rotate", "alices-key", "--grace", "0s"))
    carol_may_not("disable", aikeys(cp, gateway, carol, "keys", "disable", "alices-key"))
    carol_may_not(
        "change",
        kubectl_as(
            cp, carol, "patch", "aikey", "alices-key", "--type=merge", "-p", '{"spec": {"ttl": "1h"}}'
        ),
    )
    carol_may_not("change", kubectl_as(cp, carol, "label", "aikey", "alices-key", "taken=yes"))
    carol_may_not("delete", aikeys(cp, gateway, carol, "keys", "revoke", "alices-key"))
    carol_may_not("delete", kubectl_as(cp, carol, "delete", "aikey", "alices-key"))
    after = get(cp, "aikey", "alices-key", NS)
    assert after is not None and after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    gateway_knows(gateway.openai_url, key)
    assert works(gateway, key)  # untouched: alice's key still works
    # alice disables it; carol may not enable it; alice may
    assert aikeys(cp, gateway, alice, "keys", "disable", "alices-key").returncode == 0
    carol_may_not("enable", aikeys(cp, gateway, carol, "keys", "enable", "alices-key"))
    assert aikeys(cp, gateway, alice, "keys", "enable", "alices-key").returncode == 0
    # alice rotates it: the operator still reconciles (it writes the status subresource, which the
    # policy does not match) and the new key works, the old one not after a grace of 0 s
    rotated = aikeys(cp, gateway, alice, "keys", "rotate", "alices-key", "--grace", "0s")
    assert rotated.returncode == 0, rotated.stderr
    new_key = rotated.stdout.strip()
    assert new_key.startswith("aik_") and new_key != key
    status = (get(cp, "aikey", "alices-key", NS) or {})["status"]
    assert status["observedRotation"] == 1 and status["phase"] == "Active"
    gateway_knows(gateway.openai_url, new_key)
    assert works(gateway, new_key) and not works(gateway, key)
    # the exception right: boss may disable and delete alice's key
    assert (
        aikeys(cp, gateway, alice, "keys", "create", "alices-other", "--allocation", "team").returncode == 0
    )
    boss = kubeconfig_for(cp, "boss", tmp_path / "boss")
    for args in (("keys", "disable", "alices-key"), ("keys", "revoke", "alices-key")):
        done = aikeys(cp, gateway, boss, *args)
        assert done.returncode == 0, done.stderr
    assert get(cp, "aikey", "alices-key", NS) is None
    # and alice deletes her own
    assert kubectl_as(cp, alice, "delete", "aikey", "alices-other").returncode == 0


def test_a_key_without_owner_is_the_admins(control_plane: ControlPlane, world: None, tmp_path: Path) -> None:
    cp = control_plane
    cp.kubectl("create", "-n", NS, "-f", "-", stdin=key("nobodys"))  # the admin leaves the owner empty
    carol = kubeconfig_for(cp, "carol", tmp_path / "carol")
    moved = kubectl_as(
        cp, carol, "patch", "aikey", "nobodys", "--type=merge", "-p", '{"spec": {"disabled": true}}'
    )
    assert moved.returncode != 0
    assert f"{CAROL} may not disable the key nobodys: it has no owner." in " ".join(moved.stderr.split())
    assert kubectl_as(cp, carol, "delete", "aikey", "nobodys").returncode != 0
    assert cp.kubectl("delete", "aikey", "nobodys", "-n", NS).returncode == 0


def test_status_writers_and_the_clusters_clean_up_are_let_through(
    control_plane: ControlPlane, world: None, tmp_path: Path
) -> None:
    """Whoever may write aikeys/status (the operator) is not asked whose key it is; the namespace
    controller and the garbage collector may delete any key; other kube-system identities may not."""
    cp = control_plane
    cp.kubectl("create", "-n", NS, "-f", "-", stdin=key("status-only", "dora"))
    apply(
        cp,
        """
        apiVersion: rbac.authorization.k8s.io/v1
        kind: Role
        metadata: {name: status-writer}
        rules: [{apiGroups: [aikeys.dev], resources: [aikeys/status], verbs: [get, patch]}]
        ---
        apiVersion: rbac.authorization.k8s.io/v1
        kind: RoleBinding
        metadata: {name: status-writer}
        roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: status-writer}
        subjects: [{kind: User, name: status-writer}]
        """,
        NS,
    )
    patched = cp.kubectl(
        "patch",
        "aikey",
        "status-only",
        "-n",
        NS,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"lastUsedAt": "2026-01-01T00:00:00Z"}}',
        "--as=status-writer",
        check=False,
    )
    assert patched.returncode == 0, patched.stderr
    as_namespace_controller = "--as=system:serviceaccount:kube-system:namespace-controller"
    refused = cp.kubectl("delete", "aikey", "status-only", "-n", NS, as_namespace_controller, check=False)
    refused_to(
        refused, "system:serviceaccount:kube-system:namespace-controller", "delete", "status-only", "dora"
    )
    gc = "--as=system:serviceaccount:kube-system:generic-garbage-collector"
    assert cp.kubectl("delete", "aikey", "status-only", "-n", NS, gc, check=False).returncode == 0
    # a namespace being deleted: its keys go, whoever they belong to
    gone = "owners-gone"
    cp.kubectl("create", "namespace", gone)
    held = json.loads(key("held", "dora"))
    held["metadata"]["finalizers"] = ["example.com/hold"]  # keeps it (and the namespace) while deleting
    cp.kubectl("create", "-n", gone, "-f", "-", stdin=json.dumps(held))
    before = cp.kubectl(
        "delete", "aikey", "held", "-n", gone, "--wait=false", as_namespace_controller, check=False
    )
    assert before.returncode != 0 and "may not delete the key held" in before.stderr
    cp.kubectl("delete", "namespace", gone, "--wait=false")

    def deleted_by_namespace_controller() -> bool:
        return (
            cp.kubectl(
                "delete", "aikey", "held", "-n", gone, "--wait=false", as_namespace_controller, check=False
            ).returncode
            == 0
        )

    wait_for(deleted_by_namespace_controller, 30, "the namespace controller to delete the key", interval=0.2)
    cp.kubectl(
        "patch", "aikey", "held", "-n", gone, "--type=merge", "-p", '{"metadata": {"finalizers": null}}'
    )
    wait_for(lambda: get(cp, "namespace", gone, "") is None or None, 60, "the namespace to go", interval=0.5)


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

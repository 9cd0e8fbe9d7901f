"""usage.aikeys.dev through the real kube-apiserver: discovery, `kubectl get keyusages` (server-side
table, -o json/yaml, --raw per-day series), RBAC per namespace, every kind of user, the front-proxy
certificate required on the gateway's port, and numbers equal to the ledger and the mock's counts."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from aikeys_dev.devstack.controlplane import ControlPlane
from aikeys_dev.devstack.redis import RedisServer
from aikeys_dev.devstack.services import GatewayProcess
from aikeys_dev.devstack.upstream import MockUpstreamProcess
from aikeys_dev.devstack.usageapi import UsageAPI

from aikeys.ledger.meter import Meter, PendingSettle
from aikeys.ledger.store import Allocation, KeyLabel, Ledger, connect
from aikeys.money import Price, format_usd
from aikeys.periods import Period
from tests.integration.kube import (
    apply_allocation,
    apply_provider,
    create_key,
    delete_key,
    gateway_knows,
    get,
    key_uids,
    wait_for,
)
from tests.integration.test_credentials import exec_plugin, exec_user, kubeconfig_with

pytestmark = pytest.mark.integration
NS = "usage-a"
OTHER = "usage-b"
PRICE = Price.parse("1.00", "2.00")
REFUSED = "(?i)certificate|alert|reset|eof|closed"  # how a TLS refusal reaches a client
ALICE_COST = PRICE.cost(10, 3) + PRICE.cost(10, 5)  # two chats: "Hello , world !" + framing = 10 tokens in


@pytest.fixture(scope="module")
def world(
    control_plane: ControlPlane, gateway: GatewayProcess, mock_upstream_process: MockUpstreamProcess
) -> ControlPlane:
    cp = control_plane
    for ns in (NS, OTHER):
        cp.kubectl("create", "namespace", ns)
        apply_provider(cp, ns, mock_upstream_process.url, {"chat": ("1.00", "2.00")})
        apply_allocation(cp, ns, "team", "10.00", "None")
    alice = create_key(cp, NS, "alice", "team")
    create_key(cp, NS, "bob", "team")
    create_key(cp, OTHER, "carl", "team")
    gateway_knows(gateway.openai_url, alice)
    client = openai.OpenAI(base_url=gateway.openai_url, api_key=alice, max_retries=0)
    for n in (3, 5):
        client.chat.completions.create(
            model=f"{NS}:mock/chat", messages=[{"role": "user", "content": "Hello, world!"}], max_tokens=n
        )
    cp.kubectl(
        "create", "role", "usage-reader", "-n", NS, "--verb=get,list", "--resource=keyusages.usage.aikeys.dev"
    )
    cp.kubectl(
        "create", "rolebinding", "usage-readers", "-n", NS, "--role=usage-reader", "--group=usage-readers"
    )
    for sa in ("reader", "plugin-user"):
        cp.kubectl("create", "serviceaccount", sa, "-n", NS)
        cp.kubectl(
            "create",
            "rolebinding",
            f"{sa}-usage",
            "-n",
            NS,
            "--role=usage-reader",
            f"--serviceaccount={NS}:{sa}",
        )
    return cp


def kubectl_json(cp: ControlPlane, *args: str) -> Any:
    return json.loads(cp.kubectl(*args, "-o", "json").stdout)


def test_discovery_and_server_side_table(world: ControlPlane) -> None:
    resources = world.kubectl("api-resources", "--api-group=usage.aikeys.dev").stdout.splitlines()
    assert resources[1].split() == ["keyusages", "ku", "usage.aikeys.dev/v1alpha1", "true", "KeyUsage"]
    lines = world.kubectl("get", "keyusages", "-n", NS).stdout.splitlines()
    assert lines[0].split() == [
        *("NAME", "ALLOCATION", "SPEND", "INPUT", "TOKENS", "OUTPUT", "TOKENS"),
        *("REQUESTS", "LAST", "USED", "WINDOW"),
    ]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {"alice", "bob"}  # carl lives in the other namespace
    assert rows["alice"][1:6] == ["team", format_usd(ALICE_COST), "20", "8", "2"]
    assert rows["alice"][7] == "30d" and rows["bob"][2:6] == ["0.00", "0", "0", "0"]
    assert rows["bob"][6] == "<none>"  # never used
    assert rows["alice"][6].endswith("s")  # seconds ago: the ledger's last use, not the status's later copy
    wide = world.kubectl("get", "ku", "-n", NS, "-o", "wide").stdout.splitlines()
    assert wide[0].split()[-2:] == ["PHASE", "OWNER"] and wide[1].split()[-2] == "Active"
    everywhere = world.kubectl("get", "keyusages", "-A").stdout.splitlines()
    assert everywhere[0].split()[0] == "NAMESPACE"
    assert {(line.split()[0], line.split()[1]) for line in everywhere[1:]} >= {(NS, "alice"), (OTHER, "carl")}


def test_json_yaml_and_the_raw_per_day_series(world: ControlPlane) -> None:
    one = kubectl_json(world, "get", "keyusage", "alice", "-n", NS)
    assert (one["kind"], one["apiVersion"], one["metadata"]["name"]) == (
        "KeyUsage",
        "usage.aikeys.dev/v1alpha1",
        "alice",
    )
    assert one["usage"] == {
        "cost": format_usd(ALICE_COST),
        "inputTokens": 20,
        "outputTokens": 8,
        "requests": 2,
        "cachedTokens": 0,
        "cacheWriteTokens": 0,
    }
    assert one["models"] == [{"model": f"{NS}:mock/chat", **one["usage"]}]
    assert one["keyPhase"] == "Active" and one["lastUsed"], json.dumps(one)
    listing = yaml.safe_load(world.kubectl("get", "keyusages", "-n", NS, "-o", "yaml").stdout)
    assert [i["metadata"]["name"] for i in listing["items"]] == ["alice", "bob"]
    today = dt.datetime.now(dt.UTC).date()
    raw = json.loads(
        world.kubectl(
            "get", "--raw", f"/apis/usage.aikeys.dev/v1alpha1/namespaces/{NS}/keyusages/alice?days=7"
        ).stdout
    )
    assert raw["window"] == {
        "since": (today - dt.timedelta(days=6)).isoformat(),
        "until": today.isoformat(),
        "days": 7,
    }
    assert [d["day"] for d in raw["days"]] == [
        (today - dt.timedelta(days=6 - i)).isoformat() for i in range(7)
    ]
    assert raw["days"][-1] == {"day": today.isoformat(), **one["usage"]}
    assert all(d["requests"] == 0 for d in raw["days"][:-1])
    bad = world.kubectl(
        "get", "--raw", f"/apis/usage.aikeys.dev/v1alpha1/namespaces/{NS}/keyusages?days=0", check=False
    )
    assert bad.returncode != 0 and "days must be a whole number from 1 to 100" in bad.stderr
    missing = world.kubectl("get", "keyusage", "nobody", "-n", NS, check=False)
    assert missing.returncode != 0 and 'keyusages.usage.aikeys.dev "nobody" not found' in missing.stderr


def test_numbers_equal_the_ledger(world: ControlPlane, redis_server: RedisServer) -> None:
    uid = key_uids(world, NS)["alice"]  # the ledger counts a key by its uid

    async def ledger_rows() -> list[Any]:
        client = connect(redis_server.url)
        rows = await Ledger(client).usage(
            Allocation(NS, "team", 1, Period.NONE), [dt.datetime.now(dt.UTC).strftime("%Y%m%d")]
        )
        await client.aclose()
        return [r for r in rows if r.key == uid]

    rows = asyncio.run(ledger_rows())
    one = kubectl_json(world, "get", "keyusage", "alice", "-n", NS)
    assert one["usage"] == {
        "cost": format_usd(sum(r.cost for r in rows)),
        "inputTokens": sum(r.input_tokens for r in rows),
        "outputTokens": sum(r.output_tokens for r in rows),
        "requests": sum(r.requests for r in rows),
        "cachedTokens": sum(r.cached_tokens for r in rows),
        "cacheWriteTokens": sum(r.cache_write_tokens for r in rows),
    }
    assert sum(r.cost for r in rows) == ALICE_COST


def test_cached_and_cache_write_tokens_in_every_report(
    world: ControlPlane, gateway: GatewayProcess, redis_server: RedisServer
) -> None:
    """A settle with cache reads and writes (what the gateway hands the ledger) shows them as their
    own figures in `kubectl get keyusages -o wide`, the KeyUsage object, /api/usage and `kubectl
    aikeys usage`; input tokens still count them."""
    cp, ns = world, "usage-cached"
    cp.kubectl("create", "namespace", ns)
    apply_allocation(cp, ns, "team", "10.00", "None")
    dana = create_key(cp, ns, "dana", "team", "owner: dana")
    uid = key_uids(cp, ns)["dana"]
    gateway_knows(gateway.openai_url, dana)
    model = f"{ns}:mock/chat"

    async def settle() -> None:
        meter = Meter(Ledger(connect(redis_server.url)))
        alloc = Allocation(ns, "team", 10 * 10**9, Period.NONE)
        label = KeyLabel("dana", "dana")
        await meter.settle(PendingSettle(alloc, "cached-1", uid, model, 1_000, 50, 700, label, 600, 300))
        await meter.settle(PendingSettle(alloc, "cached-2", uid, model, 200, 10, 100, label, 150))
        await meter.ledger.client.aclose()

    asyncio.run(settle())
    wide = cp.kubectl("get", "keyusages", "-n", ns, "-o", "wide").stdout.splitlines()
    assert wide[0].split()[:13] == [
        *("NAME", "ALLOCATION", "SPEND", "INPUT", "TOKENS", "CACHED", "TOKENS"),
        *("CACHE", "WRITE", "TOKENS", "OUTPUT", "TOKENS", "REQUESTS"),
    ]
    assert wide[1].split()[:7] == ["dana", "team", "0.0000008", "1200", "750", "300", "60"]
    assert wide[1].split()[7] == "2"
    narrow = cp.kubectl("get", "keyusages", "-n", ns).stdout.splitlines()
    assert "CACHED" not in narrow[0] and narrow[1].split()[3:6] == ["1200", "60", "2"]
    one = kubectl_json(cp, "get", "keyusage", "dana", "-n", ns)
    assert one["usage"] == {
        "cost": "0.0000008",
        "inputTokens": 1_200,
        "outputTokens": 60,
        "requests": 2,
        "cachedTokens": 750,
        "cacheWriteTokens": 300,
    }
    assert one["days"][-1]["cachedTokens"] == 750 and one["models"][0]["cacheWriteTokens"] == 300
    req = urllib.request.Request(  # noqa: S310 - loopback
        f"{gateway.url}/api/usage?days=1", headers={"Authorization": f"Bearer {dana}"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
        own = json.loads(resp.read())
    assert (own["totals"]["input_tokens"], own["totals"]["cached_tokens"]) == (1_200, 750)
    assert [(g["name"], g["cached_tokens"], g["cache_write_tokens"]) for g in own["groups"]] == [
        (model, 750, 300)
    ]
    cli = aikeys(cp.kubeconfig, "-n", ns, "usage", "--days", "1", "-o", "json")
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["totals"] == {
        "cost_usd": "0.0000008",
        "input_tokens": 1_200,
        "output_tokens": 60,
        "requests": 2,
        "cached_tokens": 750,
        "cache_write_tokens": 300,
    }


def test_a_new_key_named_like_a_deleted_one_starts_from_nothing(
    world: ControlPlane, gateway: GatewayProcess, mock_upstream_process: MockUpstreamProcess
) -> None:
    """Key `k` (alice's) spends and is deleted; a new `k` (bob's) spends once. The new key shows
    its own request only — in /api/usage with the key, the AIKey's status.spend, keyusages and
    the CLI; the deleted one's usage stays visible as that key: "k (deleted)", phase Gone, with
    alice as its owner."""
    cp, ns = world, "usage-reborn"
    cp.kubectl("create", "namespace", ns)
    apply_provider(cp, ns, mock_upstream_process.url, {"chat": ("1.00", "2.00")})
    apply_allocation(cp, ns, "team", "10.00", "None")
    cp.kubectl("create", "serviceaccount", "auditor", "-n", ns)
    resources = "--resource=aikeys.aikeys.dev,keyusages.usage.aikeys.dev"  # usage: the keyusages right
    cp.kubectl("create", "role", "auditor", "-n", ns, "--verb=get,list", resources)
    cp.kubectl(
        "create", "rolebinding", "auditor", "-n", ns, "--role=auditor", f"--serviceaccount={ns}:auditor"
    )

    def chat(key: str, n: int) -> None:
        gateway_knows(gateway.openai_url, key)
        openai.OpenAI(base_url=gateway.openai_url, api_key=key, max_retries=0).chat.completions.create(
            model=f"{ns}:mock/chat", messages=[{"role": "user", "content": "Hello, world!"}], max_tokens=n
        )

    def spend() -> str | None:
        return ((get(cp, "aikey", "k", ns) or {}).get("status") or {}).get("spend")

    old_key = create_key(cp, ns, "k", "team", "owner: alice")
    chat(old_key, 3)
    chat(old_key, 5)
    wait_for(lambda: spend() == format_usd(ALICE_COST), 15, "the old key's spend")
    old_uid = key_uids(cp, ns)["k"]
    delete_key(cp, ns, "k")
    new_key = create_key(cp, ns, "k", "team", "owner: bob")
    new_uid = key_uids(cp, ns)["k"]
    assert new_uid != old_uid
    chat(new_key, 4)
    new_cost = PRICE.cost(10, 4)

    wait_for(lambda: spend() == format_usd(new_cost), 15, "the new key's own spend")
    spent = (get(cp, "alloc", "team", ns) or {}).get("status", {}).get("spent")
    assert spent == format_usd(ALICE_COST + new_cost)  # the allocation paid for both

    def api_usage(token: str, query: str = "") -> Any:
        req = urllib.request.Request(  # noqa: S310 - loopback
            f"{gateway.url}/api/usage?days=1{query}", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
            return json.loads(resp.read())

    own = api_usage(new_key, "&group_by=key")
    assert own["totals"]["requests"] == 1 and own["totals"]["cost_usd"] == format_usd(new_cost)
    assert [g["name"] for g in own["groups"]] == [f"{ns}/k"]
    token = cp.kubectl("create", "token", "auditor", "-n", ns).stdout.strip()
    by_key = api_usage(token, f"&namespace={ns}&group_by=key")
    assert {g["name"]: (g["requests"], g["cost_usd"]) for g in by_key["groups"]} == {
        f"{ns}/k": (1, format_usd(new_cost)),
        f"{ns}/k (deleted)": (2, format_usd(ALICE_COST)),
    }
    by_owner = api_usage(token, f"&namespace={ns}&group_by=owner")
    assert {g["name"]: g["requests"] for g in by_owner["groups"]} == {"bob": 1, "alice": 2}

    listing = kubectl_json(cp, "get", "keyusages", "-n", ns)["items"]
    assert [
        (i["metadata"]["name"], i["metadata"].get("uid"), i["keyPhase"], i["owner"], i["usage"]["requests"])
        for i in listing
    ] == [("k", new_uid, "Active", "bob", 1), ("k", old_uid, "Gone", "alice", 2)]
    one = kubectl_json(cp, "get", "keyusage", "k", "-n", ns)
    assert (one["metadata"]["uid"], one["usage"]["cost"]) == (new_uid, format_usd(new_cost))
    cli = aikeys(cp.kubeconfig, "-n", ns, "usage", "--days", "1", "--by", "key", "-o", "json")
    assert cli.returncode == 0, cli.stderr
    assert {g["name"]: g["requests"] for g in json.loads(cli.stdout)["groups"]} == {
        f"{ns}/k": 1,
        f"{ns}/k (deleted)": 2,
    }


def aikeys(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aikeys.cli.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        timeout=60,
        check=False,
    )


def test_every_kind_of_user_reads_its_namespace_only(world: ControlPlane, tmp_path: Path) -> None:
    cert = world.client_certificate("dora", ("usage-readers",))
    token = world.kubectl("create", "token", "reader", "-n", NS).stdout.strip()
    (tmp_path / "sa-token").write_text(token)
    plugin_token = world.kubectl("create", "token", "plugin-user", "-n", NS).stdout.strip()
    (tmp_path / "plugin").mkdir()
    plugin, _ = exec_plugin(tmp_path / "plugin", [plugin_token], dt.timedelta(hours=1))
    users: dict[str, tuple[dict[str, Any], str]] = {
        "token": ({"token": token}, f"system:serviceaccount:{NS}:reader"),
        "client-certificate": ({"client-certificate": str(cert.cert), "client-key": str(cert.key)}, "dora"),
        "exec-plugin": (exec_user(plugin), f"system:serviceaccount:{NS}:plugin-user"),
        "serviceaccount-token-file": (
            {"tokenFile": str(tmp_path / "sa-token")},
            f"system:serviceaccount:{NS}:reader",
        ),
    }
    for kind, (user, name) in users.items():
        config = kubeconfig_with(world, tmp_path / kind, user, namespace=NS)
        table = world.kubectl("get", "keyusages", f"--kubeconfig={config}")
        assert "alice" in table.stdout, kind
        report = aikeys(config, "usage", "--by", "key", "-o", "json")
        assert report.returncode == 0, (kind, report.stderr)
        assert json.loads(report.stdout)["totals"]["requests"] == 2, kind
        denied = world.kubectl("get", "keyusages", "-n", OTHER, f"--kubeconfig={config}", check=False)
        assert denied.returncode != 0, kind
        refusal = f'User "{name}" cannot list resource "keyusages" in API group "usage.aikeys.dev"'
        assert f'{refusal} in the namespace "{OTHER}"' in denied.stderr, (kind, denied.stderr)
        refused = aikeys(config, "-n", OTHER, "usage")
        assert refused.returncode != 0 and "not allowed" in refused.stderr, kind
    # the admin's static token reads every namespace
    everything = aikeys(world.kubeconfig, "usage", "-A", "--by", "namespace", "-o", "json")
    assert everything.returncode == 0, everything.stderr
    assert NS in [g["name"] for g in json.loads(everything.stdout)["groups"]]


def _call(
    url: str, context: ssl.SSLContext, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(req, timeout=5, context=context) as resp:  # noqa: S310
            return int(resp.status), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_the_port_needs_the_front_proxy_certificate(world: ControlPlane, usage_api: UsageAPI) -> None:
    url = f"https://127.0.0.1:{usage_api.port}/apis/usage.aikeys.dev/v1alpha1/namespaces/{NS}/keyusages"
    admin = {"X-Remote-User": "aikeys-admin", "X-Remote-Group": "system:masters"}
    no_cert = ssl.create_default_context(cafile=str(usage_api.ca_cert))
    with pytest.raises(OSError, match=REFUSED):  # refused in the TLS handshake: no client certificate
        _call(url, no_cert, admin)
    other_ca = ssl.create_default_context(cafile=str(usage_api.ca_cert))
    user = world.client_certificate("mallory", ("system:masters",))  # the cluster's CA, not the front proxy's
    other_ca.load_cert_chain(str(user.cert), str(user.key))
    with pytest.raises(OSError, match=REFUSED):
        _call(url, other_ca, admin)
    front_proxy = ssl.create_default_context(cafile=str(usage_api.ca_cert))
    front_proxy.load_cert_chain(str(world.pki.proxy_client_cert), str(world.pki.proxy_client_key))
    code, body = _call(url, front_proxy)  # the right certificate, but nobody vouched for
    assert (code, body["reason"]) == (401, "Unauthorized")
    code, body = _call(url, front_proxy, {"X-Remote-User": "nobody"})
    assert (code, body["reason"]) == (403, "Forbidden")  # the identity is authorised like any other
    code, body = _call(url, front_proxy, admin)
    assert code == 200 and [i["metadata"]["name"] for i in body["items"]] == ["alice", "bob"]


def _api_usage(gateway: GatewayProcess, token: str) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(  # noqa: S310 - loopback
        f"{gateway.url}/api/usage?namespace={NS}&days=1", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
            return int(resp.status), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_one_right_reads_usage_on_every_path(
    world: ControlPlane, gateway: GatewayProcess, tmp_path: Path
) -> None:
    """`list keyusages` reads usage through kubectl and /api/usage alike; managing AIKeys does not."""
    world.kubectl("create", "serviceaccount", "key-manager", "-n", NS)
    world.kubectl(
        "create",
        "role",
        "key-manager",
        "-n",
        NS,
        "--verb=get,list,watch,create,update,patch,delete",
        "--resource=aikeys.aikeys.dev",
    )
    world.kubectl(
        "create",
        "rolebinding",
        "key-manager",
        "-n",
        NS,
        "--role=key-manager",
        f"--serviceaccount={NS}:key-manager",
    )
    for sa, allowed in (("reader", True), ("key-manager", False)):  # reader: get/list keyusages only
        token = world.kubectl("create", "token", sa, "-n", NS).stdout.strip()
        config = kubeconfig_with(world, tmp_path / sa, {"token": token}, namespace=NS)
        listed = world.kubectl("get", "keyusages", f"--kubeconfig={config}", check=False)
        code, body = _api_usage(gateway, token)
        if allowed:
            assert listed.returncode == 0 and "alice" in listed.stdout, listed.stderr
            assert code == 200 and body["totals"]["requests"] == 2, body
        else:
            user = f"system:serviceaccount:{NS}:{sa}"
            assert (
                listed.returncode != 0
                and (f'User "{user}" cannot list resource "keyusages" in API group "usage.aikeys.dev"')
                in listed.stderr
            )
            assert code == 403 and body["error"]["message"] == (
                f"{user} may not list keyusages.usage.aikeys.dev in namespace {NS}, so may not read "
                "its usage."
            )


def test_a_deleted_service_accounts_token_stops_working(world: ControlPlane, gateway: GatewayProcess) -> None:
    """The gateway believes a TokenReview for at most 5 s: once the API server stops accepting a
    token (its ServiceAccount deleted), /api/usage refuses it within 5 s. (The API server itself
    keeps accepting it for up to 10 s: kube-apiserver caches successful token authentications.)"""
    world.kubectl("create", "serviceaccount", "leaver", "-n", NS)
    world.kubectl(
        "create", "rolebinding", "leaver", "-n", NS, "--role=usage-reader", f"--serviceaccount={NS}:leaver"
    )
    token = world.kubectl("create", "token", "leaver", "-n", NS).stdout.strip()
    assert _api_usage(gateway, token)[0] == 200  # and now cached
    world.kubectl("delete", "serviceaccount", "leaver", "-n", NS)
    deleted = time.monotonic()
    context = world.ssl_context()

    def api_server_refuses() -> bool:
        req = urllib.request.Request(f"{world.url}/api", headers={"Authorization": f"Bearer {token}"})  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=5, context=context):  # noqa: S310 - loopback
                return False
        except urllib.error.HTTPError as err:
            return err.code == 401

    wait_for(api_server_refuses, 30, "the API server to refuse the token", interval=0.1)
    by_api_server = time.monotonic() - deleted
    wait_for(
        lambda: _api_usage(gateway, token)[0] == 401, 30, "the gateway to refuse the token", interval=0.1
    )
    by_gateway = time.monotonic() - deleted
    print(f"\na deleted ServiceAccount's token refused by the API server after {by_api_server:.2f}s,")
    print(f"by the gateway after {by_gateway:.2f}s")
    assert by_gateway <= by_api_server + 5.5

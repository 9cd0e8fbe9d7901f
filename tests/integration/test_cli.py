"""`kubectl aikeys` and the usage API against the real control plane, Redis, operator and gateway."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
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
from aikeys_dev.devstack.services import GatewayProcess, OperatorProcess
from aikeys_dev.devstack.upstream import MockUpstreamProcess

from aikeys.cli.context import explain
from aikeys.connect import Target, Tool, guide, key_snippet, snippet
from aikeys.kube.client import ApiError, KubeClient
from aikeys.kube.config import from_kubeconfig
from aikeys.ledger.store import Allocation, Estimate, Ledger, connect
from aikeys.money import Price, format_usd
from aikeys.periods import Period
from tests.integration.kube import (
    apply,
    apply_allocation,
    apply_provider,
    gateway_knows,
    get,
    key_uids,
    wait_for,
)

pytestmark = pytest.mark.integration
NS = "cli"
OTHER = "cli-other"
SNAPSHOTS = Path(__file__).resolve().parents[1] / "snapshots"
PRICE = Price.parse("1.00", "2.00")


@pytest.fixture(scope="module")
def world(
    control_plane: ControlPlane, gateway: GatewayProcess, mock_upstream_process: MockUpstreamProcess
) -> None:
    for ns in (NS, OTHER, "cli-snap"):
        control_plane.kubectl("create", "namespace", ns)
    for ns in (NS, OTHER):
        apply_provider(
            control_plane, ns, mock_upstream_process.url, {"chat": ("1.00", "2.00"), "embed": ("1.00", "0")}
        )
        apply_allocation(control_plane, ns, "team", "50.00", "None")
        apply_allocation(control_plane, ns, "lab", "5.00", "None")


def aikeys(
    cp: ControlPlane,
    gateway: GatewayProcess,
    *args: str,
    kubeconfig: Path | None = None,
    gateway_url: str | None = None,
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig or cp.kubeconfig),
        "AIKEYS_GATEWAY_URL": gateway_url or gateway.openai_url,
    }
    return subprocess.run(
        [sys.executable, "-m", "aikeys.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def chat(gateway: GatewayProcess, key: str, model: str = f"{NS}:mock/chat", max_tokens: int = 4) -> None:
    openai.OpenAI(base_url=gateway.openai_url, api_key=key, max_retries=0).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hello, world!"}], max_tokens=max_tokens
    )


def refused(gateway: GatewayProcess, key: str) -> bool:
    try:
        openai.OpenAI(base_url=gateway.openai_url, api_key=key, max_retries=0).models.list()
    except openai.AuthenticationError:
        return True
    return False


def created_key(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1  # stdout carries the key and nothing else: `KEY=$(aikeys keys create ...)` works
    return lines[0]


def test_create_shows_the_key_once_and_forgets_it(
    control_plane: ControlPlane, gateway: GatewayProcess, world: None
) -> None:
    result = aikeys(
        control_plane,
        gateway,
        "-n",
        NS,
        "keys",
        "create",
        "alice",
        "--allocation",
        "team",
        "--ttl",
        "30d",
        "--models",
        f"{NS}:mock/*",
        "--description",
        "Alice's notebook",
    )
    key = created_key(result)
    assert key.startswith("aik_")
    assert "shown once" in result.stderr
    assert "Base URL: " + gateway.openai_url in result.stderr
    assert get(control_plane, "secret", "aikey-alice", NS) is None  # the cluster no longer holds it
    gateway_knows(gateway.openai_url, key)
    chat(gateway, key)  # and it works
    st = get(control_plane, "aikey", "alice", NS)["status"]  # type: ignore[index]
    assert st["phase"] == "Active" and st["keyHint"].endswith(key[-4:])
    assert key not in json.dumps(get(control_plane, "aikey", "alice", NS))
    kept = created_key(
        aikeys(
            control_plane,
            gateway,
            "-n",
            NS,
            "keys",
            "create",
            "worker",
            "--allocation",
            "lab",
            "--keep-secret",
        )
    )
    secret = get(control_plane, "secret", "aikey-worker", NS)
    assert secret is not None
    assert base64.b64decode(secret["data"]["OPENAI_API_KEY"]).decode() == kept


def test_list_filter_and_dates(control_plane: ControlPlane, gateway: GatewayProcess, world: None) -> None:
    aikeys(
        control_plane,
        gateway,
        "-n",
        OTHER,
        "keys",
        "create",
        "carol",
        "--allocation",
        "lab",
        "--expires-at",
        "2030-01-31T00:00:00Z",
    )
    table = aikeys(control_plane, gateway, "-n", NS, "keys", "list")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "NAME",
        "OWNER",
        "HINT",
        "ALLOCATION",
        "CREATED",
        "EXPIRES",
        "LAST",
        "USED",
        "SPEND",
        "(USD)",
        "PHASE",
    ]
    names = [line.split()[0] for line in lines[1:]]
    assert names == sorted(names) and "alice" in names and "carol" not in names
    everyone = json.loads(aikeys(control_plane, gateway, "keys", "list", "-A", "-o", "json").stdout)
    carol = next(k for k in everyone if k["name"] == "carol")
    assert (carol["namespace"], carol["expires"], carol["allocation"]) == (
        OTHER,
        "2030-01-31T00:00:00Z",
        "lab",
    )
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    alice_row = next(line for line in lines if line.startswith("alice"))
    assert today in alice_row  # created today
    filtered = yaml.safe_load(
        aikeys(control_plane, gateway, "-n", NS, "keys", "list", "--filter", "notebook", "-o", "yaml").stdout
    )
    assert [k["name"] for k in filtered] == ["alice"]
    by_alloc = json.loads(
        aikeys(control_plane, gateway, "-n", NS, "keys", "list", "--allocation", "lab", "-o", "json").stdout
    )
    assert [k["name"] for k in by_alloc] == ["worker"]


def test_revoke_disable_enable(control_plane: ControlPlane, gateway: GatewayProcess, world: None) -> None:
    key = created_key(
        aikeys(control_plane, gateway, "-n", NS, "keys", "create", "dave", "--allocation", "team")
    )
    gateway_knows(gateway.openai_url, key)
    assert aikeys(control_plane, gateway, "-n", NS, "keys", "disable", "dave").returncode == 0
    wait_for(lambda: refused(gateway, key), 1.0, "the disabled key to be refused")
    assert aikeys(control_plane, gateway, "-n", NS, "keys", "enable", "dave").returncode == 0
    wait_for(lambda: not refused(gateway, key), 2.0, "the enabled key to work")
    started = time.monotonic()
    assert aikeys(control_plane, gateway, "-n", NS, "keys", "revoke", "dave").returncode == 0
    wait_for(lambda: refused(gateway, key), 1.0, "the revoked key to be refused")
    print(f"\nrevoke → 401 in {time.monotonic() - started:.2f}s (CLI start-up included)")


def test_rotate_with_grace(control_plane: ControlPlane, gateway: GatewayProcess, world: None) -> None:
    old = created_key(
        aikeys(control_plane, gateway, "-n", NS, "keys", "create", "erin", "--allocation", "team")
    )
    gateway_knows(gateway.openai_url, old)
    result = aikeys(control_plane, gateway, "-n", NS, "keys", "rotate", "erin", "--grace", "3s")
    new = created_key(result)
    assert new != old
    assert "previous key works until" in result.stderr
    gateway_knows(gateway.openai_url, new)
    chat(gateway, old)  # both work during the grace period
    chat(gateway, new)
    wait_for(lambda: refused(gateway, old), 6, "the old key to stop after the grace period")
    chat(gateway, new)
    assert get(control_plane, "secret", "aikey-erin", NS) is None


def _ledger(redis_server: RedisServer, clock: float) -> tuple[Ledger, Any]:
    client = connect(redis_server.url)
    return Ledger(client, clock=lambda: clock), client


def test_usage_matches_the_ledger_and_the_upstream(
    control_plane: ControlPlane,
    gateway: GatewayProcess,
    redis_server: RedisServer,
    world: None,
    mock_upstream: MockUpstreamProcess,
) -> None:
    key = created_key(
        aikeys(control_plane, gateway, "-n", NS, "keys", "create", "frank", "--allocation", "lab")
    )
    gateway_knows(gateway.openai_url, key)
    mock_upstream.clear_requests()
    for n in (3, 5):
        chat(gateway, key, max_tokens=n)
    openai.OpenAI(base_url=gateway.openai_url, api_key=key, max_retries=0).embeddings.create(
        model=f"{NS}:mock/embed", input="one two three"
    )
    # earlier days, written with an injected clock: they must land on their own days
    now = time.time()
    uid = key_uids(control_plane, NS)["frank"]  # the ledger counts a key by its uid

    async def seed() -> None:
        for days_ago, cost in ((1, 1_000_000), (3, 2_500_000)):
            ledger, client = _ledger(redis_server, now - days_ago * 86400)
            alloc = Allocation(NS, "lab", 5 * 10**9, Period.NONE)
            rid = f"seed-{days_ago}-{now}"
            await ledger.reserve(alloc, rid, uid, f"{NS}:mock/chat", Estimate(cost, 10, 10))
            await ledger.settle(alloc, rid, uid, f"{NS}:mock/chat", 100, 200, cost)
            await client.aclose()

    asyncio.run(seed())
    report = json.loads(
        aikeys(control_plane, gateway, "-n", NS, "usage", "--days", "7", "--by", "key", "-o", "json").stdout
    )
    frank = next(g for g in report["groups"] if g["name"] == f"{NS}/frank")
    # tokens: what the mock upstream reported, plus the two seeded days
    seen = [r["body"] for r in mock_upstream.requests()]
    assert len(seen) == 3
    mock_in = 10 + 10 + 3  # two chats ("Hello , world !" + framing) and one embedding of three words
    mock_out = 3 + 5
    assert frank["input_tokens"] == mock_in + 200
    assert frank["output_tokens"] == mock_out + 400
    assert frank["requests"] == 5
    today_cost = PRICE.cost(10, 3) + PRICE.cost(10, 5) + Price.parse("1.00", "0").cost(3, 0)
    assert frank["cost_usd"] == format_nano(today_cost + 3_500_000)
    days = {d["day"]: d for d in report["days"]}
    assert len(days) == 7
    days_by_date: dict[str, dict[str, Any]] = days

    def day(days_ago: int) -> dict[str, Any]:
        return days_by_date[dt.datetime.fromtimestamp(now - days_ago * 86400, dt.UTC).date().isoformat()]

    # the seeded days carry exactly their charges, the day between none; today has frank's and others' calls
    assert (day(1)["cost_usd"], day(1)["requests"]) == (format_nano(1_000_000), 1)
    assert (day(3)["cost_usd"], day(3)["requests"]) == (format_nano(2_500_000), 1)
    assert day(2)["requests"] == 0
    assert day(0)["requests"] >= 3

    async def ledger_total() -> int:
        ledger, client = _ledger(redis_server, now)
        rows = await ledger.usage(
            Allocation(NS, "lab", 1, Period.NONE),
            [dt.datetime.fromtimestamp(now - i * 86400, dt.UTC).strftime("%Y%m%d") for i in range(7)],
        )
        await client.aclose()
        return sum(r.cost for r in rows if r.key == uid)

    assert asyncio.run(ledger_total()) == today_cost + 3_500_000
    # the key holder sees the same with nothing but the key
    own = _get_json(f"{gateway.url}/api/usage?days=7&group_by=model", key)
    assert own["totals"]["cost_usd"] == frank["cost_usd"]
    me = _get_json(f"{gateway.url}/api/keys/self", key)
    assert (me["name"], me["allocation"], me["budget_usd"]) == ("frank", "lab", "5.00")


def format_nano(nano: int) -> str:
    return format_usd(nano)


def _get_json(url: str, token: str) -> Any:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return {"status": err.code, **json.loads(err.read())}


def test_rbac_on_one_namespace_cannot_read_another(
    control_plane: ControlPlane, gateway: GatewayProcess, world: None, tmp_path: Path
) -> None:
    control_plane.kubectl("create", "serviceaccount", "reader", "-n", NS)
    control_plane.kubectl(
        "create",
        "role",
        "aikeys-reader",
        "-n",
        NS,
        "--verb=get,list,watch",
        "--resource=aikeys.aikeys.dev,keyusages.usage.aikeys.dev",
    )
    control_plane.kubectl(
        "create", "rolebinding", "reader", "-n", NS, "--role=aikeys-reader", f"--serviceaccount={NS}:reader"
    )
    token = control_plane.kubectl("create", "token", "reader", "-n", NS).stdout.strip()
    config = yaml.safe_load(control_plane.kubeconfig.read_text())
    config["users"] = [{"name": "reader", "user": {"token": token}}]
    config["contexts"][0]["context"].update(user="reader", namespace=NS)
    (tmp_path / "reader").write_text(yaml.safe_dump(config))
    mine = aikeys(control_plane, gateway, "usage", kubeconfig=tmp_path / "reader")
    assert mine.returncode == 0, mine.stderr
    assert f"Usage of namespace {NS}" in mine.stdout
    theirs = aikeys(control_plane, gateway, "-n", OTHER, "usage", kubeconfig=tmp_path / "reader")
    assert theirs.returncode != 0
    assert "not allowed" in theirs.stderr
    assert f'cannot list resource "keyusages" in API group "usage.aikeys.dev" in the namespace "{OTHER}"' in (
        theirs.stderr
    )
    org = aikeys(control_plane, gateway, "usage", "-A", kubeconfig=tmp_path / "reader")
    assert org.returncode != 0 and "at the cluster scope" in org.stderr
    listing = aikeys(control_plane, gateway, "-n", OTHER, "keys", "list", kubeconfig=tmp_path / "reader")
    assert (
        listing.returncode != 0
        and "not allowed" in listing.stderr
        and "Ask a cluster admin" in listing.stderr
    )


def test_connect_prints_the_connect_pages_snippets(
    control_plane: ControlPlane, gateway: GatewayProcess, world: None, tmp_path: Path
) -> None:
    """`kubectl aikeys connect TOOL` prints aikeys.connect's guide for the context: the key's chat
    models (never `embed`), the base URL the operator recorded for the key, never the key."""
    key = created_key(
        aikeys(
            control_plane,
            gateway,
            "-n",
            NS,
            "keys",
            "create",
            "connector",
            "-a",
            "team",
            "--models",
            f"{NS}:mock/*",
        )
    )
    hint = get(control_plane, "aikey", "connector", NS)["status"]["keyHint"]  # type: ignore[index]
    elsewhere = "https://elsewhere.example/api/openai/v1"  # loses to the key's own URL (its status)
    codex = aikeys(
        control_plane, gateway, "-n", NS, "connect", "codex", "--key", "connector", gateway_url=elsewhere
    )
    assert codex.returncode == 0, codex.stderr
    target = Target(gateway.openai_url, (f"{NS}:mock/chat",), hint)
    config = snippet(guide(Tool.CODEX, target), "~/.codex/config.toml").rstrip("\n")
    assert config in codex.stdout and key_snippet(target).text in codex.stdout
    assert key not in codex.stdout + codex.stderr and "embed" not in codex.stdout
    # without --key: the models of my own keys in the namespace; Cursor says what it needs
    cursor = aikeys(control_plane, gateway, "-n", NS, "connect", "cursor")
    assert cursor.returncode == 0, cursor.stderr
    assert f"{NS}:mock/chat" in cursor.stdout and "is not a public HTTPS address" in cursor.stdout
    assert key not in cursor.stdout
    # a person who may not list AIProviders: their key's own model IDs, chat ones only
    control_plane.kubectl("create", "serviceaccount", "connector", "-n", NS)
    control_plane.kubectl(
        "create",
        "role",
        "connector",
        "-n",
        NS,
        "--verb=get,list,create,delete",
        "--resource=aikeys.aikeys.dev,secrets",
    )
    control_plane.kubectl(
        "create", "rolebinding", "connector", "-n", NS, "--role=connector", f"--serviceaccount={NS}:connector"
    )
    token = control_plane.kubectl("create", "token", "connector", "-n", NS).stdout.strip()
    config_file = tmp_path / "connector"
    kube = yaml.safe_load(control_plane.kubeconfig.read_text())
    kube["users"] = [{"name": "connector", "user": {"token": token}}]
    kube["contexts"][0]["context"].update(user="connector", namespace=NS)
    config_file.write_text(yaml.safe_dump(kube))
    models = f"{NS}:mock/chat,{NS}:mock/embed"
    created_key(
        aikeys(
            control_plane,
            gateway,
            "keys",
            "create",
            "theirs",
            "-a",
            "team",
            "--models",
            models,
            kubeconfig=config_file,
        )
    )
    opencode = aikeys(control_plane, gateway, "connect", "opencode", kubeconfig=config_file)
    assert opencode.returncode == 0, opencode.stderr
    assert "You may not list AIProviders here" in opencode.stderr
    shown = json.loads(opencode.stdout.split("opencode.json:\n\n", 1)[1])
    assert list(shown["provider"]["aikeys"]["models"]) == [f"{NS}:mock/chat"]
    # --help lists the tools; a tool that is not one is refused with the list
    helped = aikeys(control_plane, gateway, "connect", "--help")
    assert all(tool.value in helped.stdout for tool in Tool)
    wrong = aikeys(control_plane, gateway, "connect", "vim")
    assert wrong.returncode == 2 and "open-webui" in wrong.stderr


def test_errors_say_what_to_do(
    control_plane: ControlPlane,
    gateway: GatewayProcess,
    world: None,
    tmp_path: Path,
    operator: OperatorProcess,
) -> None:
    nowhere = aikeys(control_plane, gateway, "keys", "list", kubeconfig=tmp_path / "missing")
    assert nowhere.returncode != 0 and "no kubeconfig at" in nowhere.stderr and "KUBECONFIG" in nowhere.stderr

    async def unknown_kind() -> ApiError:
        async with KubeClient(from_kubeconfig(control_plane.kubeconfig)) as client:
            try:
                await client.get("/apis/aikeys.dev/v9/namespaces/default/aikeys")
            except ApiError as err:
                return err
        raise AssertionError("expected a 404")

    err = asyncio.run(unknown_kind())  # exactly what the API server says when the CRDs are missing
    assert "CRDs are not installed" in explain(err)
    operator.stop()  # nobody mints: the CLI must say where to look
    try:
        slow = aikeys(
            control_plane,
            gateway,
            "-n",
            NS,
            "keys",
            "create",
            "never",
            "--allocation",
            "team",
            "--timeout",
            "2",
        )
    finally:
        operator.start()
    assert slow.returncode != 0 and "Is the aikeys operator running?" in slow.stderr
    for args in (["--help"], ["keys", "--help"], ["keys", "create", "--help"], ["usage", "--help"]):
        assert "Usage:" in aikeys(control_plane, gateway, *args).stdout


def test_usage_terminal_output_snapshot(
    control_plane: ControlPlane, gateway: GatewayProcess, redis_server: RedisServer, world: None
) -> None:
    apply(
        control_plane,
        """
        apiVersion: aikeys.dev/v1alpha1
        kind: Allocation
        metadata: {name: research}
        spec: {budget: "100.00", period: None}
    """,
        "cli-snap",
    )
    wait_for(lambda: _get_json(f"{gateway.url}/readyz", "").get("ready"), 5, "gateway ready")
    until = dt.datetime(2026, 3, 14, 12, 0, tzinfo=dt.UTC)
    plan = [  # days ago, key, model, cost, input (cached, cache writes of it), output tokens
        (0, "ana", "cli-snap:openai/gpt-4o", 1_234_500_000, (12_000, 8_000, 0), 3_400),
        (0, "ben", "cli-snap:openai/gpt-4o-mini", 45_600_000, (30_000, 0, 0), 9_000),
        (2, "ana", "cli-snap:openai/gpt-4o", 2_500_000_000, (20_000, 0, 4_096), 8_000),
        (5, "ben", "cli-snap:local/llama", 10_000_000, (50_000, 0, 0), 20_000),
    ]

    async def seed() -> None:
        for days_ago, key, model, cost, (tin, cached, writes), tout in plan:
            ledger, client = _ledger(redis_server, (until - dt.timedelta(days=days_ago)).timestamp())
            alloc = Allocation("cli-snap", "research", 100 * 10**9, Period.NONE)
            rid = f"snap-{days_ago}-{key}"
            await ledger.settle(
                alloc, rid, key, model, tin, tout, cost, cached_tokens=cached, cache_write_tokens=writes
            )
            await client.aclose()

    asyncio.run(seed())

    def output() -> str | None:
        out = aikeys(
            control_plane, gateway, "-n", "cli-snap", "usage", "--days", "7", "--until", "2026-03-14"
        )
        return out.stdout if "research" not in out.stderr and "No usage" not in out.stdout else None

    text = wait_for(output, 10, "the gateway to see the allocation")
    snapshot = SNAPSHOTS / "usage-by-model.txt"
    if os.environ.get("AIKEYS_UPDATE_SNAPSHOTS"):
        snapshot.write_text(text)
    assert text == snapshot.read_text()

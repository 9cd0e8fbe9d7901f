"""The operator against the real control plane and redis-server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from aikeys_dev.devstack.controlplane import ControlPlane
from aikeys_dev.devstack.redis import RedisServer
from aikeys_dev.devstack.services import OperatorProcess

from aikeys import keys as keyformat
from aikeys import notices
from aikeys.ledger.store import Allocation, Estimate, Ledger, PeriodState, connect
from aikeys.periods import Period
from tests.conftest import CREDENTIALS
from tests.integration.kube import (
    apply,
    apply_allocation,
    apply_provider,
    create_key,
    create_provider_secret,
    delete_key,
    events,
    get,
    install_crds,
    key_uids,
    wait_for,
)

pytestmark = pytest.mark.integration
NS = "op-tests"


@pytest.fixture(scope="module", autouse=True)
def team(control_plane: ControlPlane, operator: OperatorProcess) -> None:
    control_plane.kubectl("create", "namespace", NS)
    apply(
        control_plane,
        """
        apiVersion: aikeys.dev/v1alpha1
        kind: Allocation
        metadata: {name: team}
        spec: {budget: "10.00", period: Monthly}
    """,
        NS,
    )


def key_manifest(name: str, extra: str = "") -> str:
    return f"""
        apiVersion: aikeys.dev/v1alpha1
        kind: AIKey
        metadata: {{name: {name}}}
        spec:
          allocationRef: {{name: team}}
          {extra}
    """


def secret_key(cp: ControlPlane, name: str) -> str | None:
    secret = get(cp, "secret", f"aikey-{name}", NS)
    if secret is None:
        return None
    return base64.b64decode(secret["data"]["OPENAI_API_KEY"]).decode()


def status(cp: ControlPlane, name: str) -> dict[str, Any]:
    obj = get(cp, "aikey", name, NS)
    return (obj or {}).get("status") or {}


def active(cp: ControlPlane, name: str) -> dict[str, Any] | None:
    st = status(cp, name)
    return st if st.get("phase") == "Active" else None


def test_create_mints_a_key_into_an_owned_secret(
    control_plane: ControlPlane, operator: OperatorProcess
) -> None:
    started = time.monotonic()
    apply(control_plane, key_manifest("alice", "ttl: 720h"), NS)
    plaintext = wait_for(lambda: secret_key(control_plane, "alice"), 30, "the key Secret")
    latency = time.monotonic() - started
    st = wait_for(lambda: active(control_plane, "alice"), 30, "phase Active")
    print(f"\ncreate → Secret ready in {latency * 1000:.0f} ms")
    assert keyformat.well_formed(plaintext)
    assert st["keyHash"] == hashlib.sha256(plaintext.encode()).hexdigest()
    assert st["keyHint"] == f"aik_…{plaintext[-4:]}"
    assert st["secretName"] == "aikey-alice"
    created = dt.datetime.fromisoformat(str(st["createdAt"]))
    assert dt.datetime.fromisoformat(str(st["expiresAt"])) == created + dt.timedelta(hours=720)
    secret = get(control_plane, "secret", "aikey-alice", NS)
    assert secret is not None
    assert base64.b64decode(secret["data"]["OPENAI_BASE_URL"]).decode() == operator.gateway_url
    aikey = get(control_plane, "aikey", "alice", NS)
    assert aikey is not None
    [owner] = secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("AIKey", aikey["metadata"]["uid"], True)
    ready = [c for c in st["conditions"] if c["type"] == "Ready"]
    assert ready[0]["status"] == "True"
    reasons = [e["reason"] for e in events(control_plane, NS, "alice")]
    assert "Minted" in reasons
    # the plaintext is nowhere but the Secret
    assert plaintext not in str(aikey)
    assert plaintext not in operator.log()
    assert plaintext not in str(events(control_plane, NS, "alice"))


def test_operator_restart_keeps_the_same_key(control_plane: ControlPlane, operator: OperatorProcess) -> None:
    apply(control_plane, key_manifest("restart"), NS)
    wait_for(lambda: active(control_plane, "restart"), 30, "phase Active")
    before = (secret_key(control_plane, "restart"), status(control_plane, "restart")["keyHash"])
    operator.restart()
    time.sleep(2)  # resumed handlers run
    assert (secret_key(control_plane, "restart"), status(control_plane, "restart")["keyHash"]) == before


def plant(
    cp: ControlPlane, name: str, plaintext: str, rotation: int = 0, claimed_hash: str | None = None
) -> None:
    """A Secret `aikey-<name>` holding `plaintext`, dressed as the operator dresses its own: the
    AIKey's uid in ownerReferences, the managed-by label, rotation, hash (`claimed_hash`, by
    default the key's own) and hint annotations. Anyone who may create Secrets can write it."""
    uid = get(cp, "aikey", name, NS)["metadata"]["uid"]  # type: ignore[index]
    cp.kubectl(
        "apply",
        "-f",
        "-",
        stdin=f"""
apiVersion: v1
kind: Secret
metadata:
  name: aikey-{name}
  namespace: {NS}
  labels: {{app.kubernetes.io/managed-by: aikeys, aikeys.dev/aikey: {name}}}
  annotations:
    aikeys.dev/rotation: "{rotation}"
    aikeys.dev/key-hash: {claimed_hash or keyformat.key_hash(plaintext)}
    aikeys.dev/key-hint: "{keyformat.hint(plaintext)}"
  ownerReferences:
  - {{apiVersion: aikeys.dev/v1alpha1, kind: AIKey, name: {name}, uid: {uid}, controller: true}}
stringData: {{OPENAI_API_KEY: {plaintext}}}
""",
    )


def record_pending(cp: ControlPlane, name: str, key_hash: str) -> None:
    """What the operator writes to status before it writes a key into the Secret."""
    patch = f'{{"status":{{"pendingKeyHash":"{key_hash}"}}}}'
    cp.kubectl("patch", "aikey", name, "-n", NS, "--subresource=status", "--type=merge", "-p", patch)


def replaced(cp: ControlPlane, name: str) -> list[dict[str, Any]]:
    return [e for e in events(cp, NS, name) if e["reason"] == "SecretReplaced"]


def test_a_secret_written_before_a_crash_is_adopted(
    control_plane: ControlPlane, operator: OperatorProcess
) -> None:
    """The operator recorded the key's hash, wrote the Secret and died before recording the key:
    the next run finishes that mint with the same key (no second key)."""
    operator.stop()
    try:
        apply(control_plane, key_manifest("crashed"), NS)
        plaintext = keyformat.mint()
        record_pending(control_plane, "crashed", keyformat.key_hash(plaintext))
        plant(control_plane, "crashed", plaintext)
    finally:
        operator.start()
    st = wait_for(lambda: active(control_plane, "crashed"), 30, "phase Active")
    assert st["keyHash"] == keyformat.key_hash(plaintext)
    assert "pendingKeyHash" not in st
    assert secret_key(control_plane, "crashed") == plaintext
    assert not replaced(control_plane, "crashed")


def test_a_crash_before_the_secret_was_written_mints_afresh(
    control_plane: ControlPlane, operator: OperatorProcess
) -> None:
    """The operator recorded the hash of a key and died before writing it: that key is gone, so
    the next run mints another (the key is not left unusable)."""
    operator.stop()
    try:
        apply(control_plane, key_manifest("halfway"), NS)
        lost = keyformat.key_hash(keyformat.mint())
        record_pending(control_plane, "halfway", lost)
    finally:
        operator.start()
    st = wait_for(lambda: active(control_plane, "halfway"), 30, "phase Active")
    assert st["keyHash"] != lost
    assert "pendingKeyHash" not in st
    assert keyformat.key_hash(secret_key(control_plane, "halfway") or "") == st["keyHash"]
    assert not replaced(control_plane, "halfway")


@pytest.mark.parametrize("pending", [False, True], ids=["first-mint", "pending-hash-copied"])
def test_a_planted_secret_is_replaced_not_adopted(
    control_plane: ControlPlane, operator: OperatorProcess, pending: bool
) -> None:
    """Someone who may create Secrets (not read them) plants `aikey-<name>` before the key is
    minted, dressed as the operator's, with a key she knows; with `pending`, it even claims the
    hash status shows as pending. The operator does not adopt it: it mints a key of its own into
    the Secret, and says so."""
    name = f"planted-{int(pending)}"
    attacker = keyformat.mint()
    operator.stop()
    try:
        apply(control_plane, key_manifest(name), NS)
        claimed = None
        if pending:
            claimed = keyformat.key_hash(keyformat.mint())
            record_pending(control_plane, name, claimed)
        plant(control_plane, name, attacker, claimed_hash=claimed)
    finally:
        operator.start()
    st = wait_for(lambda: active(control_plane, name), 30, "phase Active")
    mine = secret_key(control_plane, name)
    assert mine is not None and mine != attacker
    assert st["keyHash"] == keyformat.key_hash(mine)
    assert keyformat.key_hash(attacker) not in (st["keyHash"], st.get("previousKeyHash"))
    [event] = wait_for(lambda: replaced(control_plane, name), 15, "the SecretReplaced event")
    assert event["type"] == "Warning"
    assert f"Secret aikey-{name} held a key aikeys did not mint for this AIKey" in event["message"]
    for text in (
        str(get(control_plane, "aikey", name, NS)),
        str(events(control_plane, NS, name)),
        operator.log(),
    ):
        assert mine not in text


def test_a_secret_planted_for_the_next_rotation_is_replaced(
    control_plane: ControlPlane, operator: OperatorProcess
) -> None:
    """The Secret is gone (shown once and deleted); she plants one for the victim's next rotation.
    The rotation's new key is the operator's, not hers."""
    apply(control_plane, key_manifest("victim", "rotationGracePeriod: 1h"), NS)
    before = wait_for(lambda: active(control_plane, "victim"), 30, "phase Active")
    control_plane.kubectl("delete", "secret", "aikey-victim", "-n", NS)
    attacker = keyformat.mint()
    plant(control_plane, "victim", attacker, rotation=1)
    control_plane.kubectl(
        "patch", "aikey", "victim", "-n", NS, "--type=merge", "-p", '{"spec":{"rotation":1}}'
    )
    st = wait_for(
        lambda: (s := status(control_plane, "victim")).get("observedRotation") == 1 and s, 30, "the rotation"
    )
    mine = secret_key(control_plane, "victim")
    assert mine is not None and mine != attacker
    assert st["keyHash"] == keyformat.key_hash(mine)
    assert st["previousKeyHash"] == before["keyHash"]  # the victim's own old key, for the grace period
    assert keyformat.key_hash(attacker) not in (st["keyHash"], st["previousKeyHash"])
    [event] = wait_for(lambda: replaced(control_plane, "victim"), 15, "the SecretReplaced event")
    assert event["type"] == "Warning"


@contextlib.contextmanager
def unbounded(cp: ControlPlane, *fields: str) -> Iterator[None]:
    """The AIKey CRD without the maximum of these spec fields, as a CRD from before the bounds
    (objects stored then are still there); the real CRDs are back afterwards."""
    base = "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties"
    ops = [{"op": "remove", "path": f"{base}/{f}/x-kubernetes-validations/1"} for f in fields]
    cp.kubectl("patch", "crd", "aikeys.aikeys.dev", "--type=json", "-p", json.dumps(ops))
    try:
        yield
    finally:
        install_crds(cp)


def stored(cp: ControlPlane, manifest: str) -> None:
    """Apply once the API server validates with the relaxed CRD (a moment after the patch)."""
    wait_for(
        lambda: cp.kubectl("apply", "-n", NS, "-f", "-", stdin=manifest, check=False).returncode == 0,
        15,
        "the relaxed CRD",
        interval=0.2,
    )


def ready(cp: ControlPlane, name: str) -> dict[str, Any]:
    return next((c for c in status(cp, name).get("conditions") or [] if c["type"] == "Ready"), {})


def quiet_afterwards(cp: ControlPlane, name: str) -> None:
    """The operator does not come back to the object: no write, one InvalidSpec event."""
    before = get(cp, "aikey", name, NS)["metadata"]["resourceVersion"]  # type: ignore[index]
    time.sleep(3)
    assert get(cp, "aikey", name, NS)["metadata"]["resourceVersion"] == before  # type: ignore[index]
    assert [e["reason"] for e in events(cp, NS, name)].count("InvalidSpec") == 1


def test_a_ttl_the_operator_cannot_compute_with_is_reported_once(
    control_plane: ControlPlane, operator: OperatorProcess
) -> None:
    """An AIKey with ttl 1000000000h, stored before the CRD bounded it: no key (it would not expire
    as asked), Ready=False naming spec.ttl, one Warning event, and no retry loop."""
    with unbounded(control_plane, "ttl"):
        stored(control_plane, key_manifest("eternal", "ttl: 1000000000h"))
    cond = wait_for(
        lambda: (c := ready(control_plane, "eternal")).get("reason") == "InvalidSpec" and c, 30, "InvalidSpec"
    )
    assert cond["status"] == "False"
    assert cond["message"] == (
        "spec.ttl must be at most 36500d, not '1000000000h'; "
        "nothing is minted or rotated until the spec is fixed"
    )
    [event] = [e for e in events(control_plane, NS, "eternal") if e["reason"] == "InvalidSpec"]
    assert (event["type"], event["message"]) == ("Warning", cond["message"])
    assert get(control_plane, "secret", "aikey-eternal", NS) is None
    quiet_afterwards(control_plane, "eternal")
    assert "OverflowError" not in operator.log()

    control_plane.kubectl(
        "patch", "aikey", "eternal", "-n", NS, "--type=merge", "-p", '{"spec":{"ttl":"720h"}}'
    )
    st = wait_for(lambda: active(control_plane, "eternal"), 30, "phase Active once the ttl is fixed")
    assert ready(control_plane, "eternal")["reason"] == "Active"
    assert keyformat.key_hash(secret_key(control_plane, "eternal") or "") == st["keyHash"]


def test_a_grace_period_the_operator_cannot_compute_with_is_reported_once(
    control_plane: ControlPlane, operator: OperatorProcess
) -> None:
    """A rotation asked with rotationGracePeriod 1000000000h (stored under an unbounded CRD): the
    key is not rotated, Ready=False says why, once; fixing the grace period rotates it."""
    apply(control_plane, key_manifest("patient"), NS)
    before = wait_for(lambda: active(control_plane, "patient"), 30, "phase Active")
    with unbounded(control_plane, "rotationGracePeriod"):
        patch = '{"spec":{"rotation":1,"rotationGracePeriod":"1000000000h"}}'
        wait_for(
            lambda: (
                control_plane.kubectl(
                    "patch", "aikey", "patient", "-n", NS, "--type=merge", "-p", patch, check=False
                ).returncode
                == 0
            ),
            15,
            "the relaxed CRD",
            interval=0.2,
        )
    cond = wait_for(
        lambda: (c := ready(control_plane, "patient")).get("reason") == "InvalidSpec" and c, 30, "InvalidSpec"
    )
    assert cond["message"].startswith("spec.rotationGracePeriod must be at most 365d, not '1000000000h'")
    st = status(control_plane, "patient")
    assert (st["keyHash"], st.get("observedRotation", 0)) == (before["keyHash"], 0)  # not rotated
    quiet_afterwards(control_plane, "patient")

    grace = '{"spec":{"rotationGracePeriod":"1h"}}'
    control_plane.kubectl("patch", "aikey", "patient", "-n", NS, "--type=merge", "-p", grace)
    rotated = wait_for(
        lambda: (s := status(control_plane, "patient")).get("observedRotation") == 1 and s, 30, "the rotation"
    )
    assert rotated["previousKeyHash"] == before["keyHash"]
    assert ready(control_plane, "patient")["status"] == "True"


def test_ttl_expires_on_time(control_plane: ControlPlane, operator: OperatorProcess) -> None:
    apply(control_plane, key_manifest("short", "ttl: 4s"), NS)
    st = wait_for(lambda: active(control_plane, "short"), 30, "phase Active")
    expires = dt.datetime.fromisoformat(str(st["expiresAt"]))
    wait_for(lambda: status(control_plane, "short").get("phase") == "Expired", 15, "phase Expired")
    late = dt.datetime.now(dt.UTC) - expires
    print(f"\nExpired {late.total_seconds():.2f}s after expiresAt")
    assert late < dt.timedelta(seconds=2)
    assert "Expired" in [e["reason"] for e in events(control_plane, NS, "short")]


def test_disable_and_enable(control_plane: ControlPlane, operator: OperatorProcess) -> None:
    apply(control_plane, key_manifest("toggle"), NS)
    wait_for(lambda: active(control_plane, "toggle"), 30, "phase Active")
    control_plane.kubectl(
        "patch", "aikey", "toggle", "-n", NS, "--type=merge", "-p", '{"spec":{"disabled":true}}'
    )
    wait_for(lambda: status(control_plane, "toggle").get("phase") == "Disabled", 15, "phase Disabled")
    control_plane.kubectl(
        "patch", "aikey", "toggle", "-n", NS, "--type=merge", "-p", '{"spec":{"disabled":false}}'
    )
    wait_for(lambda: active(control_plane, "toggle"), 15, "phase Active again")
    reasons = [e["reason"] for e in events(control_plane, NS, "toggle")]
    assert "Disabled" in reasons
    assert "Enabled" in reasons


def test_rotation_with_grace(control_plane: ControlPlane, operator: OperatorProcess) -> None:
    apply(control_plane, key_manifest("rot", "rotationGracePeriod: 3s"), NS)
    old = wait_for(lambda: active(control_plane, "rot"), 30, "phase Active")
    old_plain = secret_key(control_plane, "rot")
    control_plane.kubectl("patch", "aikey", "rot", "-n", NS, "--type=merge", "-p", '{"spec":{"rotation":1}}')
    new = wait_for(
        lambda: (s := status(control_plane, "rot")).get("observedRotation") == 1 and s, 30, "the rotation"
    )
    assert new["keyHash"] != old["keyHash"]
    assert new["previousKeyHash"] == old["keyHash"]
    new_plain = secret_key(control_plane, "rot")
    assert new_plain != old_plain
    assert new["keyHash"] == keyformat.key_hash(new_plain or "")
    until = dt.datetime.fromisoformat(str(new["previousKeyValidUntil"]))
    assert dt.timedelta(seconds=1) < until - dt.datetime.now(dt.UTC) <= dt.timedelta(seconds=3)
    wait_for(lambda: "previousKeyHash" not in status(control_plane, "rot"), 10, "the grace period to end")
    assert "Rotated" in [e["reason"] for e in events(control_plane, NS, "rot")]


def test_removed_secret_is_not_reminted(control_plane: ControlPlane, operator: OperatorProcess) -> None:
    """Show-once: the CLI deletes the Secret after printing the key; the key stays the same."""
    apply(control_plane, key_manifest("once"), NS)
    st = wait_for(lambda: active(control_plane, "once"), 30, "phase Active")
    control_plane.kubectl("delete", "secret", "aikey-once", "-n", NS)
    operator.restart()
    time.sleep(2)
    assert status(control_plane, "once")["keyHash"] == st["keyHash"]
    assert get(control_plane, "secret", "aikey-once", NS) is None


def test_delete_revokes_and_collects_the_secret(
    control_plane: ControlPlane, operator: OperatorProcess
) -> None:
    apply(control_plane, key_manifest("gone"), NS)
    wait_for(lambda: secret_key(control_plane, "gone"), 30, "the key Secret")
    control_plane.kubectl("delete", "aikey", "gone", "-n", NS)
    wait_for(lambda: get(control_plane, "secret", "aikey-gone", NS) is None, 60, "the Secret to be collected")


def test_allocation_status_follows_the_ledger(
    control_plane: ControlPlane, operator: OperatorProcess, redis_server: RedisServer
) -> None:
    apply(control_plane, key_manifest("spender"), NS)
    wait_for(lambda: active(control_plane, "spender"), 30, "phase Active")
    uid = key_uids(control_plane, NS)["spender"]  # the ledger counts a key by its uid

    async def spend(nano: int, rid: str) -> None:
        client = connect(redis_server.url)
        ledger = Ledger(client)
        alloc = Allocation(NS, "team", 10 * 10**9, Period.MONTHLY)
        await ledger.reserve(alloc, rid, uid, f"{NS}:p/m", Estimate(nano, 1, 1))
        await ledger.settle(alloc, rid, uid, f"{NS}:p/m", 100, 50, nano)
        await client.aclose()

    asyncio.run(spend(8_500_000_000, "seed-1"))  # 8.50 of 10.00 USD: past the 80% threshold
    alloc = wait_for(
        lambda: (
            (a := get(control_plane, "alloc", "team", NS))
            and a.get("status", {}).get("spent") == "8.50"
            and a
        ),
        15,
        "spent 8.50",
    )
    st = alloc["status"]
    assert (st["remaining"], st["tokens"], st["requests"]) == ("1.50", 150, 1)
    assert st["keys"] >= 1
    exhausted = next(c for c in st["conditions"] if c["type"] == "Exhausted")
    assert exhausted["status"] == "False"
    key = wait_for(
        lambda: status(control_plane, "spender").get("spend") == "8.50" and status(control_plane, "spender"),
        15,
        "the key's spend",
    )
    assert key["lastUsedAt"]
    threshold = [e for e in events(control_plane, NS, "team") if e["reason"] == "BudgetThreshold"]
    assert threshold
    assert "85% of the 10.00 USD Monthly budget used" in threshold[0]["message"]

    asyncio.run(spend(2_000_000_000, "seed-2"))
    alloc = wait_for(
        lambda: (
            (a := get(control_plane, "alloc", "team", NS))
            and a.get("status", {}).get("spent") == "10.50"
            and a
        ),
        15,
        "spent 10.50",
    )
    exhausted = next(c for c in alloc["status"]["conditions"] if c["type"] == "Exhausted")
    assert exhausted["status"] == "True"
    assert alloc["status"]["remaining"] == "0.00"
    reasons = [e["reason"] for e in events(control_plane, NS, "team")]
    assert "Exhausted" in reasons


def test_threshold_event_of_a_budget_without_period(
    control_plane: ControlPlane, operator: OperatorProcess, redis_server: RedisServer
) -> None:
    """A budget that never starts again (period None) is "the 5.00 USD budget", not "... None budget"."""
    apply_allocation(control_plane, NS, "forever", "5.00", period="None")
    create_key(control_plane, NS, "forever-key", "forever")

    async def spend() -> None:
        client = connect(redis_server.url)
        alloc = Allocation(NS, "forever", 5 * 10**9, Period.NONE)
        await Ledger(client).reserve(
            alloc, "forever-1", "forever-key", f"{NS}:p/m", Estimate(4_900_000_000, 1, 1)
        )
        await Ledger(client).settle(alloc, "forever-1", "forever-key", f"{NS}:p/m", 1, 1, 4_900_000_000)
        await client.aclose()

    asyncio.run(spend())
    [event] = wait_for(
        lambda: [e for e in events(control_plane, NS, "forever") if e["reason"] == "BudgetThreshold"],
        15,
        "the BudgetThreshold event",
    )
    assert event["type"] == "Warning"
    assert event["message"] == "98% of the 5.00 USD budget used (spent 4.90 USD; threshold 80%)"


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback
        return str(resp.read().decode())


JSONPATH = 'jsonpath={.status.spent}{"\\n"}'


class SpentWatch:
    """Every status.spent of an Allocation the API server hands out, from a kubectl watch."""

    def __init__(self, cp: ControlPlane, name: str):
        self.seen: list[str] = []
        self.proc = subprocess.Popen(
            [str(cp.binaries.kubectl), "get", "allocation", name, "-n", NS, "--watch", "-o", JSONPATH],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=cp.env(),
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.seen.append(line.strip())

    def stop(self) -> list[str]:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.thread.join(timeout=10)
        return self.seen


def test_a_lost_ledger_is_restored_from_the_status(
    control_plane: ControlPlane,
    operator: OperatorProcess,
    redis_server: RedisServer,
) -> None:
    """Redis loses everything (a restart without persistence, FLUSHALL): the operator notices
    that the ledger shows less than the status it wrote for the same period and writes the
    status back as floors, so the budget is not handed out twice."""
    apply_allocation(control_plane, NS, "fragile", "100.00")
    create_key(control_plane, NS, "fragile-a", "fragile")
    create_key(control_plane, NS, "fragile-b", "fragile")
    alloc = Allocation(NS, "fragile", 100 * 10**9, Period.MONTHLY)
    uids = key_uids(control_plane, NS)

    async def charge(key: str, nano: int, rid: str) -> None:
        client = connect(redis_server.url)
        ledger = Ledger(client)
        await ledger.reserve(alloc, rid, uids[key], f"{NS}:p/m", Estimate(nano, 100, 50))
        await ledger.settle(alloc, rid, uids[key], f"{NS}:p/m", 100, 50, nano)
        await client.aclose()

    async def ledger_now() -> tuple[PeriodState, dict[str, int]]:
        client = connect(redis_server.url)
        ledger = Ledger(client)
        state, keys = await ledger.period_state(alloc), await ledger.key_spend(alloc)
        await client.aclose()
        return state, keys

    async def flushall() -> None:
        client = connect(redis_server.url)
        await client.flushall()
        await client.aclose()

    def spent(name: str) -> str | None:
        return ((get(control_plane, "alloc", name, NS) or {}).get("status") or {}).get("spent")

    asyncio.run(charge("fragile-a", 4_000_000_000, "fragile-1"))
    asyncio.run(charge("fragile-b", 2_500_000_000, "fragile-2"))
    wait_for(lambda: spent("fragile") == "6.50", 15, "status.spent 6.50")
    wait_for(
        lambda: (
            status(control_plane, "fragile-a").get("spend") == "4.00"
            and status(control_plane, "fragile-b").get("spend") == "2.50"
        ),
        15,
        "the keys' spend",
    )
    time.sleep(1.5)  # the keys' status reaches the operator's index
    before = get(control_plane, "alloc", "fragile", NS)["status"]  # type: ignore[index]
    assert (before["tokens"], before["requests"]) == (300, 2)

    watch = SpentWatch(control_plane, "fragile")
    wait_for(lambda: watch.seen, 10, "the watch to start")
    lost_at = time.monotonic()
    asyncio.run(flushall())
    assert asyncio.run(ledger_now())[0].spent == 0

    def restored() -> tuple[PeriodState, dict[str, int]] | None:
        state, keys = asyncio.run(ledger_now())
        return (state, keys) if state.spent >= 6_500_000_000 else None

    state, keys = wait_for(restored, 15, "the ledger to be restored", interval=0.1)
    print(f"\nledger restored {time.monotonic() - lost_at:.2f}s after FLUSHALL")
    assert (state.spent, state.tokens, state.requests) == (6_500_000_000, 300, 2)
    assert keys == {uids["fragile-a"]: 4_000_000_000, uids["fragile-b"]: 2_500_000_000}
    [event] = wait_for(
        lambda: [e for e in events(control_plane, NS, "fragile") if e["reason"] == "LedgerRestored"],
        15,
        "the LedgerRestored event",
    )
    assert event["type"] == "Warning"
    assert "it showed 0.00 USD spent in 0 requests, the last status 6.50 USD in 2" in event["message"]
    assert "Restored spent 6.50 USD, 300 tokens, 2 requests and the spend of 2 keys" in event["message"]
    assert "(added 6.50 USD, 300 tokens, 2 requests)" in event["message"]

    # spending goes on from the restored ledger
    asyncio.run(charge("fragile-a", 1_000_000_000, "fragile-3"))
    wait_for(lambda: spent("fragile") == "7.50", 15, "status.spent 7.50")
    wait_for(lambda: status(control_plane, "fragile-a").get("spend") == "5.00", 15, "key spend 5.00")
    seen = [v for v in watch.stop() if v]
    assert seen[0] == "6.50"
    assert seen[-1] == "7.50"
    assert set(seen) <= {"6.50", "7.50"}, seen  # never the lost value
    assert [e["reason"] for e in events(control_plane, NS, "fragile")].count("LedgerRestored") == 1

    restores = [
        line
        for line in scrape(operator.metrics_url).splitlines()
        if line.startswith("aikeys_ledger_restores_total{") and 'allocation="fragile"' in line
    ]
    assert restores == [f'aikeys_ledger_restores_total{{allocation="fragile",namespace="{NS}"}} 1.0']


def test_a_new_key_named_like_a_deleted_one_starts_from_nothing(
    control_plane: ControlPlane, operator: OperatorProcess, redis_server: RedisServer
) -> None:
    """The ledger counts keys by uid: `twin` spends, is deleted and created again (another uid);
    the new one's status.spend is its own charge only, never the old one's."""
    apply_allocation(control_plane, NS, "twins", "10.00")
    alloc = Allocation(NS, "twins", 10 * 10**9, Period.MONTHLY)

    async def charge(uid: str, nano: int) -> None:
        client = connect(redis_server.url)
        ledger = Ledger(client)
        rid = f"twin-{time.monotonic_ns()}"
        await ledger.reserve(alloc, rid, uid, f"{NS}:p/m", Estimate(nano, 1, 1))
        await ledger.settle(alloc, rid, uid, f"{NS}:p/m", 1, 1, nano)
        await client.aclose()

    create_key(control_plane, NS, "twin", "twins")
    old = key_uids(control_plane, NS)["twin"]
    asyncio.run(charge(old, 2_000_000_000))
    wait_for(lambda: status(control_plane, "twin").get("spend") == "2.00", 15, "the old key's spend")
    delete_key(control_plane, NS, "twin")
    create_key(control_plane, NS, "twin", "twins")
    new = key_uids(control_plane, NS)["twin"]
    assert new != old
    time.sleep(2.5)  # status intervals: the operator compares the new key with the ledger
    assert "spend" not in status(control_plane, "twin")  # never charged: no spend
    asyncio.run(charge(new, 500_000_000))
    wait_for(lambda: status(control_plane, "twin").get("spend") == "0.50", 15, "the new key's own spend")
    wait_for(
        lambda: (get(control_plane, "alloc", "twins", NS) or {}).get("status", {}).get("spent") == "2.50",
        15,
        "2.50 spent",
    )
    assert status(control_plane, "twin").get("spend") == "0.50"


def test_idle_cluster_writes_nothing(control_plane: ControlPlane, operator: OperatorProcess) -> None:
    wait_for(lambda: get(control_plane, "alloc", "team", NS), 10, "the allocation")
    before = get(control_plane, "alloc", "team", NS)["metadata"]["resourceVersion"]  # type: ignore[index]
    time.sleep(3)  # three status intervals
    after = get(control_plane, "alloc", "team", NS)["metadata"]["resourceVersion"]  # type: ignore[index]
    assert before == after


def test_provider_status(control_plane: ControlPlane, operator: OperatorProcess) -> None:
    apply(
        control_plane,
        """
        apiVersion: aikeys.dev/v1alpha1
        kind: AIProvider
        metadata: {name: openai}
        spec:
          baseURL: https://api.openai.com/v1
          credentialsSecretRef: {name: openai-creds}
          models:
          - {name: gpt-4o, inputPricePerMillion: "2.50", outputPricePerMillion: "10.00"}
          - {name: gpt-4o-mini, inputPricePerMillion: "0.15", outputPricePerMillion: "0.60"}
    """,
        NS,
    )
    st = wait_for(
        lambda: (get(control_plane, "aip", "openai", NS) or {}).get("status"), 30, "provider status"
    )
    assert st["modelCount"] == 2
    assert st["modelIds"] == [f"{NS}:openai/gpt-4o", f"{NS}:openai/gpt-4o-mini"]
    assert [c["reason"] for c in st["conditions"] if c["type"] == "Ready"] == ["SecretNotFound"]
    create_provider_secret(control_plane, NS, "openai-creds", "sk-x")
    control_plane.kubectl("annotate", "aip", "openai", "-n", NS, "touch=1")  # an update triggers a refresh
    wait_for(
        lambda: (
            [
                c["status"]
                for c in (get(control_plane, "aip", "openai", NS) or {})
                .get("status", {})
                .get("conditions", [])
                if c["type"] == "Ready"
            ]
            == ["True"]
        ),
        30,
        "Ready=True",
    )


def provider_ready(cp: ControlPlane, name: str) -> dict[str, Any]:
    conditions = ((get(cp, "aip", name, NS) or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Ready"), {})


def projected(cp: ControlPlane, provider: str) -> str | None:
    """The provider's API key in the gateway's credentials Secret, if the operator put it there."""
    namespace, name = CREDENTIALS.split("/")
    value = ((get(cp, "secret", name, namespace) or {}).get("data") or {}).get(f"{NS}.{provider}")
    return base64.b64decode(value).decode() if value is not None else None


def test_only_secrets_marked_as_provider_credentials_are_projected(
    control_plane: ControlPlane, operator: OperatorProcess
) -> None:
    """An AIProvider cannot make the gateway send an arbitrary Secret upstream: the Secret has to
    opt in with its type, which cannot be changed afterwards."""
    create_provider_secret(control_plane, NS, "plain", "sk-plain-value", secret_type="Opaque")
    apply_provider(
        control_plane,
        NS,
        "https://api.example.com:8443/v1",
        {"m": ("1.00", "2.00")},
        name="unmarked",
        credentialsSecretRef={"name": "plain"},
    )
    ready = wait_for(
        lambda: (c := provider_ready(control_plane, "unmarked")).get("reason") == "SecretNotMarked" and c,
        30,
        "Ready=False/SecretNotMarked",
    )
    assert ready["status"] == "False"
    assert (
        f"kubectl create secret generic plain -n {NS} --type=aikeys.dev/provider-credentials "
        "--from-literal=apiKey=..." in ready["message"]
    )
    assert projected(control_plane, "unmarked") is None
    wait_for(
        lambda: [e for e in events(control_plane, NS, "unmarked") if e["reason"] == "SecretNotMarked"],
        15,
        "the SecretNotMarked event",
    )
    control_plane.kubectl("annotate", "aip", "unmarked", "-n", NS, "touch=1")  # another refresh
    time.sleep(2)
    warnings = [e for e in events(control_plane, NS, "unmarked") if e["reason"] == "SecretNotMarked"]
    assert len(warnings) == 1  # once, not on every refresh
    assert warnings[0]["type"] == "Warning"
    assert warnings[0].get("count", 1) == 1
    assert projected(control_plane, "unmarked") is None

    # a Secret's type is immutable: delete and recreate it with the type
    retype = control_plane.kubectl(
        "patch",
        "secret",
        "plain",
        "-n",
        NS,
        "--type=merge",
        "-p",
        '{"type":"aikeys.dev/provider-credentials"}',
        check=False,
    )
    assert retype.returncode != 0
    assert "field is immutable" in retype.stderr
    control_plane.kubectl("delete", "secret", "plain", "-n", NS)
    create_provider_secret(control_plane, NS, "plain", "sk-marked-value")
    control_plane.kubectl("annotate", "aip", "unmarked", "-n", NS, "touch=2", "--overwrite")
    wait_for(lambda: provider_ready(control_plane, "unmarked").get("status") == "True", 30, "Ready=True")
    assert provider_ready(control_plane, "unmarked")["reason"] == "CredentialsFound"
    assert wait_for(lambda: projected(control_plane, "unmarked"), 15, "the projection") == "sk-marked-value"

    # back to an unmarked Secret: what was projected is taken away again
    control_plane.kubectl("delete", "secret", "plain", "-n", NS)
    create_provider_secret(control_plane, NS, "plain", "sk-plain-again", secret_type="Opaque")
    control_plane.kubectl("annotate", "aip", "unmarked", "-n", NS, "touch=3", "--overwrite")
    wait_for(
        lambda: provider_ready(control_plane, "unmarked").get("reason") == "SecretNotMarked",
        30,
        "SecretNotMarked again",
    )
    wait_for(lambda: projected(control_plane, "unmarked") is None, 15, "the projection to be removed")

    # the values are nowhere but in the Secrets
    seen = str(get(control_plane, "aip", "unmarked", NS)) + str(events(control_plane, NS, "unmarked"))
    for value in ("sk-plain-value", "sk-marked-value", "sk-plain-again"):
        assert value not in seen
        assert value not in operator.log()


def test_overruns_reported_by_gateways_become_one_event(
    control_plane: ControlPlane, operator: OperatorProcess, redis_server: RedisServer
) -> None:
    apply_provider(control_plane, NS, "http://upstream.example:8000/v1", {"m": ("1", "1")}, name="loose")
    wait_for(lambda: provider_ready(control_plane, "loose").get("status") == "True", 30, "provider Ready")

    async def report() -> None:
        client = connect(redis_server.url)
        for overrun in (
            notices.Overrun(f"{NS}:loose/m", 100, 130, "req-1"),
            notices.Overrun(f"{NS}:loose/m", 50, 400, "req-2"),
            notices.Overrun(f"{NS}:loose/n", 10, 12, "req-3"),
        ):
            await notices.report(client, NS, "loose", overrun)
        await client.aclose()

    asyncio.run(report())
    control_plane.kubectl("annotate", "aip", "loose", "-n", NS, "touch=1")  # or wait for the 30 s timer
    [event] = wait_for(
        lambda: [e for e in events(control_plane, NS, "loose") if e["reason"] == "UpstreamOverReported"],
        45,
        "the UpstreamOverReported event",
    )
    assert event["type"] == "Warning"
    message = event["message"]
    assert message.startswith("3 responses reported more output tokens than the cap")
    assert f"{NS}:loose/m ×2" in message
    assert f"{NS}:loose/n ×1" in message
    assert f"worst: 400 tokens reported for a cap of 50 (model {NS}:loose/m, request req-2)" in message

    async def left() -> int:
        client = connect(redis_server.url)
        n = int(await client.llen(notices.key(NS, "loose")))
        await client.aclose()
        return n

    assert asyncio.run(left()) == 0  # taken: the next refresh posts nothing more
    control_plane.kubectl("annotate", "aip", "loose", "-n", NS, "touch=2", "--overwrite")
    time.sleep(2)
    assert len([e for e in events(control_plane, NS, "loose") if e["reason"] == "UpstreamOverReported"]) == 1


def test_kubectl_get_aik_reads_well(control_plane: ControlPlane, operator: OperatorProcess) -> None:
    wait_for(lambda: active(control_plane, "alice"), 30, "alice")
    out = control_plane.kubectl("get", "aik", "alice", "-n", NS).stdout
    header, row = out.splitlines()
    columns = ["NAME", "ALLOCATION", "OWNER", "PHASE", "KEY", "EXPIRES", "LAST", "USED", "SPEND", "AGE"]
    assert header.split() == columns
    cells = row.split()
    assert cells[:3] == ["alice", "team", "Active"]  # created by an admin without an owner: a blank
    assert cells[3].startswith("aik_…")
    assert cells[4].endswith("Z")

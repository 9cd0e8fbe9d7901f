"""The gateway's key lookup without a server: watch events applied to the informer, the catalog's
hash index they feed, and `authenticate` on top (format, checksum, revocation, expiry, rotation);
and the people behind Kubernetes tokens (`KubeAuth`): how long a token is believed, which right
reads usage."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from aikeys_gateway.cache.catalog import Catalog
from aikeys_gateway.errors import GatewayError
from aikeys_gateway.kubeauth import USAGE, KubeAuth, Person
from aikeys_gateway.pipeline.auth import authenticate, presented_key
from aikeys_gateway.usage import aggregated

from aikeys import keys
from aikeys.kube.client import KubeClient
from aikeys.kube.config import KubeConfig

NOW = dt.datetime(2026, 3, 14, 12, 0, tzinfo=dt.UTC)


def _catalog() -> Catalog:
    return Catalog(KubeClient(KubeConfig(server="http://127.0.0.1:1")), ("aikeys-system", "creds"))


def _aikey(name: str, rv: str, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "team", "name": name, "uid": f"uid-{name}", "resourceVersion": rv},
        "spec": {"allocationRef": {"name": "a"}},
        "status": status,
    }


def _refused(catalog: Catalog, key: str, now: dt.datetime = NOW) -> str:
    with pytest.raises(GatewayError) as err:
        authenticate({"authorization": f"Bearer {key}"}, catalog, now)
    assert err.value.status == 401
    return str(err.value.message)


def test_events_feed_the_index_and_authenticate_reads_it() -> None:
    catalog = _catalog()
    key, other = keys.mint(), keys.mint()
    informer = catalog.keys
    informer.apply(
        {"type": "ADDED", "object": _aikey("k", "1", keyHash=keys.key_hash(key), keyHint="aik_…x")}
    )
    assert informer.resource_version == "1" and ("team", "k") in informer.objects
    assert authenticate({"authorization": f"Bearer {key}"}, catalog, NOW).name == "k"
    assert authenticate({"api-key": key}, catalog, NOW).name == "k"
    assert "unknown or has been revoked" in _refused(catalog, other)
    assert "not an aikeys key" in _refused(catalog, "sk-123")
    assert "not an aikeys key" in _refused(catalog, key[:-1] + ("A" if key[-1] != "A" else "B"))  # checksum
    # a bookmark moves the resourceVersion and nothing else
    informer.apply({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "7"}}})
    assert informer.resource_version == "7" and len(informer.objects) == 1
    # rotation: the new hash works, the old one until the end of its grace period
    until = NOW + dt.timedelta(minutes=5)
    informer.apply(
        {
            "type": "MODIFIED",
            "object": _aikey(
                "k",
                "8",
                keyHash=keys.key_hash(other),
                previousKeyHash=keys.key_hash(key),
                previousKeyValidUntil=until.isoformat(),
            ),
        }
    )
    assert authenticate({"x-api-key": other}, catalog, NOW).name == "k"
    assert authenticate({"x-api-key": key}, catalog, NOW).name == "k"
    assert "grace period is over" in _refused(catalog, key, until + dt.timedelta(seconds=1))
    # expiry is checked on the request, to the second
    expires = NOW + dt.timedelta(hours=1)
    informer.apply(
        {
            "type": "MODIFIED",
            "object": _aikey("k", "9", keyHash=keys.key_hash(other), expiresAt=expires.isoformat()),
        }
    )
    assert "has expired" in _refused(catalog, other, expires)
    # a malformed object is dropped, not fatal; a deletion removes the key at once
    informer.apply(
        {
            "type": "MODIFIED",
            "object": {
                "metadata": {"namespace": "team", "name": "k", "uid": "uid-k", "resourceVersion": "10"},
                "spec": {"allocationRef": 5},
            },
        }
    )
    assert ("team", "k") not in informer.objects
    informer.apply({"type": "ADDED", "object": _aikey("k", "11", keyHash=keys.key_hash(other))})
    informer.apply({"type": "DELETED", "object": _aikey("k", "12", keyHash=keys.key_hash(other))})
    assert "unknown or has been revoked" in _refused(catalog, other)
    assert informer.resource_version == "12"


def test_which_header_carries_the_key() -> None:
    assert presented_key({"authorization": "Bearer  aik_x "}) == "aik_x"
    assert presented_key({"authorization": "Basic Zm9v"}) is None  # another scheme is not a key
    assert presented_key({"api-key": "aik_y"}) == "aik_y"
    assert presented_key({"x-api-key": "aik_z"}) == "aik_z"
    assert presented_key({}) is None
    with pytest.raises(GatewayError, match="didn't provide an API key"):
        authenticate({}, _catalog(), NOW)


class FakeReviews(KubeClient):
    """The API server's TokenReview and SubjectAccessReview answers, counted."""

    def __init__(self) -> None:
        super().__init__(KubeConfig(server="http://127.0.0.1:1"))
        self.valid: set[str] = {"good-token"}
        self.allowed: set[tuple[str, str, str]] = set()  # (namespace, group, resource)
        self.reviews: list[dict[str, Any]] = []

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.reviews.append(body)
        if body["kind"] == "TokenReview":
            ok = body["spec"]["token"] in self.valid
            return {"status": {"authenticated": ok, "user": {"username": "alice"} if ok else {}}}
        attrs = body["spec"]["resourceAttributes"]
        where = (attrs.get("namespace", ""), attrs["group"], attrs["resource"])
        return {"status": {"allowed": where in self.allowed}}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_token_that_stops_validating_is_refused_within_five_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    monkeypatch.setattr("aikeys_gateway.kubeauth.time.monotonic", clock)
    api = FakeReviews()
    auth = KubeAuth(api)
    assert (await auth.person("good-token")).username == "alice"
    api.valid.clear()  # its ServiceAccount is deleted
    clock.now += 4.9
    assert (await auth.person("good-token")).username == "alice"  # still the cached answer
    clock.now += 0.2
    with pytest.raises(GatewayError) as refused:
        await auth.person("good-token")
    assert refused.value.status == 401


async def test_usage_needs_the_usage_apis_own_right() -> None:
    api = FakeReviews()
    auth = KubeAuth(api)
    alice = Person("alice", "", ())
    assert USAGE == (aggregated.GROUP, aggregated.RESOURCE)  # the right `kubectl get keyusages` needs
    api.allowed.add(("team", "aikeys.dev", "aikeys"))  # managing keys is not reading usage
    with pytest.raises(GatewayError) as refused:
        await auth.require_usage(alice, "team")
    assert refused.value.status == 403
    assert refused.value.message == (
        "alice may not list keyusages.usage.aikeys.dev in namespace team, so may not read its usage."
    )
    api.allowed.add(("team", "usage.aikeys.dev", "keyusages"))
    auth = KubeAuth(api)  # no cached refusal
    await auth.require_usage(alice, "team")
    asked = api.reviews[-1]["spec"]["resourceAttributes"]
    assert asked == {
        "verb": "list",
        "group": "usage.aikeys.dev",
        "resource": "keyusages",
        "namespace": "team",
    }
    with pytest.raises(GatewayError, match="in all namespaces"):
        await auth.require_usage(alice, "")

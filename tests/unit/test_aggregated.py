"""The usage API's pure parts: front-proxy settings and identity, KeyUsage objects, the Table."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from aikeys_gateway.cache.catalog import key_entry
from aikeys_gateway.config import UsageAPISettings as Settings
from aikeys_gateway.usage.aggregated import (
    FrontProxy,
    User,
    _age,
    _window,
    key_usages,
    table,
    user_from_headers,
)
from aikeys_gateway.usage.records import Record

from aikeys.ledger.store import UsageRow
from aikeys.settings import SettingsError

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
UNTIL = dt.date(2026, 3, 14)


def test_front_proxy_from_the_configmap() -> None:
    proxy = FrontProxy.from_configmap(
        {
            "requestheader-client-ca-file": CA,
            "requestheader-allowed-names": '["front-proxy-client"]',
            "requestheader-username-headers": '["X-Remote-User"]',
            "requestheader-group-headers": '["X-Remote-Group"]',
            "requestheader-extra-headers-prefix": '["X-Remote-Extra-"]',
        }
    )
    assert proxy.allowed_names == ("front-proxy-client",)
    assert proxy.allows_peer({"subject": ((("commonName", "front-proxy-client"),),)})
    assert not proxy.allows_peer({"subject": ((("commonName", "mallory"),),)})
    assert not proxy.allows_peer(None) and not proxy.allows_peer({})
    assert FrontProxy(CA).allows_peer({"subject": ((("commonName", "anyone"),),)})  # no names: any CN
    with pytest.raises(ValueError, match="requestheader-client-ca-file"):
        FrontProxy.from_configmap({"client-ca-file": CA})


def test_identity_from_the_headers() -> None:
    proxy = FrontProxy(CA, uid_headers=("X-Remote-Uid",))
    headers = [
        ("x-remote-user", "alice"),
        ("X-Remote-Group", "devs"),
        ("X-Remote-Group", "system:authenticated"),
        ("X-Remote-Uid", "42"),
        ("X-Remote-Extra-Scopes", "a"),
        ("X-Remote-Extra-Scopes", "b"),
        ("X-Remote-Extra-Example.com%2fteam", "x"),
        ("X-Other", "ignored"),
    ]
    user = user_from_headers(headers, proxy)
    assert user == User(
        "alice",
        "42",
        ("devs", "system:authenticated"),
        (("example.com/team", ("x",)), ("scopes", ("a", "b"))),
    )
    assert user_from_headers([("X-Remote-Group", "devs")], proxy) is None
    assert user_from_headers([("X-Remote-User", "")], proxy) is None


def _key(ns: str, name: str, alloc: str = "team", **status: Any) -> Any:
    return key_entry(
        {
            "metadata": {"namespace": ns, "name": name, "uid": f"uid-{name}"},
            "spec": {"allocationRef": {"name": alloc}},
            "status": status,
        }
    )


def _record(ns: str, key: str, model: str, day: str, cost: int, alloc: str = "team") -> Record:
    return Record(ns, alloc, UsageRow(day, key, model, 1, 10, 5, cost))


def test_key_usages_cover_known_keys_and_ledger_only_keys() -> None:
    keys = [
        _key(
            "a", "alice", phase="Active", lastUsedAt="2026-03-13T10:00:00Z", createdAt="2026-03-01T00:00:00Z"
        ),
        _key("a", "bob", phase="Disabled"),
    ]
    records = [
        _record("a", "alice", "m1", "20260314", 100),
        _record("a", "alice", "m2", "20260314", 300),
        _record("a", "alice", "m1", "20260312", 50),
        _record("a", "gone", "m1", "20260313", 7, alloc="old"),
    ]
    latest = {("a", "uid-alice"): dt.datetime(2026, 3, 14, 9, 30, tzinfo=dt.UTC)}  # by uid
    objects = key_usages(keys, records, UNTIL, 3, last_used=latest)
    assert [o["metadata"]["name"] for o in objects] == ["alice", "bob", "gone"]
    alice, bob, gone = objects
    assert alice["usage"] == {
        "cost": "0.00000045",
        "inputTokens": 30,
        "outputTokens": 15,
        "requests": 3,
        "cachedTokens": 0,
        "cacheWriteTokens": 0,
    }
    assert [m["model"] for m in alice["models"]] == ["m2", "m1"]  # by spend
    assert [d["day"] for d in alice["days"]] == ["2026-03-12", "2026-03-13", "2026-03-14"]
    assert [d["requests"] for d in alice["days"]] == [1, 0, 2]
    assert alice["lastUsed"] == "2026-03-14T09:30:00Z"  # the ledger's, newer than the status
    assert alice["metadata"]["creationTimestamp"] == "2026-03-01T00:00:00Z"
    assert alice["window"] == {"since": "2026-03-12", "until": "2026-03-14", "days": 3}
    assert (bob["keyPhase"], bob["usage"]["requests"], bob["lastUsed"]) == ("Disabled", 0, None)
    assert (gone["keyPhase"], gone["allocation"], gone["usage"]["cost"]) == ("Gone", "old", "0.000000007")
    assert [o["metadata"]["name"] for o in key_usages(keys, records, UNTIL, 3, name="gone")] == ["gone"]
    assert key_usages(keys, records, UNTIL, 3, name="nobody") == []


def test_table_rows_and_objects() -> None:
    now = dt.datetime(2026, 3, 14, 12, 0, tzinfo=dt.UTC)
    objects = key_usages(
        [_key("a", "alice", phase="Active", lastUsedAt="2026-03-14T11:55:00Z")], [], UNTIL, 7
    )
    t = table(objects, "Metadata", now)
    assert [c["name"] for c in t["columnDefinitions"]][:3] == ["Name", "Allocation", "Spend"]
    assert t["rows"][0]["cells"] == ["alice", "team", "0.00", 0, 0, 0, 0, 0, "5m", "7d", "Active", "<none>"]
    assert t["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    assert t["rows"][0]["object"]["metadata"]["namespace"] == "a"
    assert table(objects, "Object", now)["rows"][0]["object"]["kind"] == "KeyUsage"
    assert "object" not in table(objects, "None", now)["rows"][0]


def test_cached_and_cache_write_tokens_are_their_own_figures() -> None:
    """Cache reads and writes, parts of the input tokens, are summed like them per key, model and
    day, and are -o wide columns of the table right after the input tokens."""
    cached = [
        Record("a", "team", UsageRow("20260314", "alice", "m1", 2, 100, 5, 9, None, 60, 30)),
        Record("a", "team", UsageRow("20260314", "alice", "m2", 1, 50, 5, 3, None, 40, 0)),
        Record("a", "team", UsageRow("20260313", "alice", "m1", 1, 20, 5, 1, None, 0, 10)),
    ]
    [alice] = key_usages([_key("a", "alice", phase="Active")], cached, UNTIL, 3)
    assert (
        alice["usage"]["inputTokens"],
        alice["usage"]["cachedTokens"],
        alice["usage"]["cacheWriteTokens"],
    ) == (
        170,
        100,
        40,
    )
    assert [(m["model"], m["cachedTokens"], m["cacheWriteTokens"]) for m in alice["models"]] == [
        ("m1", 60, 40),
        ("m2", 40, 0),
    ]
    assert [(d["day"], d["cachedTokens"], d["cacheWriteTokens"]) for d in alice["days"]] == [
        ("2026-03-12", 0, 0),
        ("2026-03-13", 0, 10),
        ("2026-03-14", 100, 30),
    ]
    t = table([alice], "None", dt.datetime(2026, 3, 14, 12, 0, tzinfo=dt.UTC))
    columns = {c["name"]: (i, c.get("priority", 0)) for i, c in enumerate(t["columnDefinitions"])}
    assert columns["Cached Tokens"] == (4, 1) and columns["Cache Write Tokens"] == (5, 1)  # -o wide
    assert columns["Input Tokens"] == (3, 0) and columns["Output Tokens"] == (6, 0)
    cells = t["rows"][0]["cells"]
    assert cells[3:7] == [170, 100, 40, 15]
    assert len(cells) == len(t["columnDefinitions"])


def test_ages_and_windows() -> None:
    now = dt.datetime(2026, 3, 14, 12, 0, tzinfo=dt.UTC)
    assert _age(None, now) == "<none>"
    assert _age("2026-03-14T11:59:15Z", now) == "45s"
    assert _age("2026-03-14T09:00:00Z", now) == "3h"
    assert _age("2026-03-14T00:00:00Z", now) == "12h"
    assert _age("2026-03-10T12:00:00Z", now) == "4d"
    today = dt.date(2026, 3, 14)
    assert _window({}, today) == (today, 30)
    assert _window({"days": "7", "until": "2026-03-01"}, today) == (dt.date(2026, 3, 1), 7)
    for bad in ({"days": "0"}, {"days": "101"}, {"days": "x"}, {"until": "2019-12-31"}, {"until": "soon"}):
        with pytest.raises(ValueError, match=r"days|until"):
            _window(bad, today)


def test_settings_name_the_variable() -> None:
    assert Settings.from_env({}).port == 0
    served = Settings.from_env(
        {"AIKEYS_USAGE_API_PORT": "8443", "AIKEYS_USAGE_API_CERT": "c", "AIKEYS_USAGE_API_KEY": "k"}
    )
    assert (served.port, served.cert_file, served.key_file) == (8443, "c", "k")
    with pytest.raises(SettingsError, match="AIKEYS_USAGE_API_PORT='x': not an integer"):
        Settings.from_env({"AIKEYS_USAGE_API_PORT": "x"})
    with pytest.raises(SettingsError, match="AIKEYS_USAGE_API_CERT"):
        Settings.from_env({"AIKEYS_USAGE_API_PORT": "8443"})

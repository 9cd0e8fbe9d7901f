"""`/api/usage`'s aggregation: totals, groups by spend with their shares, every day of the window."""

from __future__ import annotations

import dataclasses
import datetime as dt

from aikeys_gateway.cache.catalog import key_entry
from aikeys_gateway.usage.records import GroupBy, Record, day_ids, own, report, resolve

from aikeys.ledger.store import KeyLabel, UsageRow

UNTIL = dt.date(2026, 3, 14)
RECORDS = [
    Record("a", "team", UsageRow("20260314", "alice", "m1", 2, 20, 10, 3_000_000_000)),
    Record("a", "team", UsageRow("20260313", "bob", "m2", 1, 5, 5, 1_000_000_000)),
    Record("b", "lab", UsageRow("20260313", "carl", "m1", 1, 1, 1, 1)),
    Record("a", "team", UsageRow("20260301", "alice", "m1", 9, 9, 9, 9)),  # outside the window: its own day
]


def test_totals_groups_and_days() -> None:
    r = report(RECORDS[:3], GroupBy.MODEL, UNTIL, 3)
    assert (r.since, r.until) == (dt.date(2026, 3, 12), UNTIL)
    assert (r.totals.cost_usd, r.totals.requests, r.totals.input_tokens) == ("4.000000001", 4, 26)
    assert [(g.name, g.cost_usd, g.share) for g in r.groups] == [
        ("m1", "3.000000001", "0.7500"),
        ("m2", "1.00", "0.2500"),
    ]
    assert [(d.day.isoformat(), d.requests) for d in r.days] == [
        ("2026-03-12", 0),
        ("2026-03-13", 2),
        ("2026-03-14", 2),
    ]
    assert [g.name for g in report(RECORDS[:3], GroupBy.KEY, UNTIL, 3).groups] == [
        "a/alice",
        "a/bob",
        "b/carl",
    ]
    assert [g.name for g in report(RECORDS[:3], GroupBy.ALLOCATION, UNTIL, 3).groups] == ["a/team", "b/lab"]
    assert [g.name for g in report(RECORDS[:3], GroupBy.NAMESPACE, UNTIL, 3).groups] == ["a", "b"]


def test_cached_and_cache_write_tokens_sum_like_input_tokens() -> None:
    """/api/usage shows cache reads and writes (parts of input_tokens) in totals, groups and days;
    rows from before the ledger kept them count 0."""
    rows = [
        Record("a", "team", UsageRow("20260314", "alice", "m1", 2, 100, 10, 5, None, 70, 20)),
        Record("a", "team", UsageRow("20260314", "bob", "m1", 1, 30, 10, 3, None, 10, 0)),
        Record("a", "team", UsageRow("20260313", "alice", "m2", 1, 40, 10, 4, None, 0, 40)),
        Record("a", "team", UsageRow("20260313", "bob", "m2", 1, 8, 8, 8)),  # an old row
    ]
    r = report(rows, GroupBy.MODEL, UNTIL, 2)
    assert (r.totals.input_tokens, r.totals.cached_tokens, r.totals.cache_write_tokens) == (178, 80, 60)
    assert [(g.name, g.cached_tokens, g.cache_write_tokens) for g in r.groups] == [
        ("m2", 0, 40),  # by spend
        ("m1", 80, 20),
    ]
    assert [(d.day.isoformat(), d.cached_tokens, d.cache_write_tokens) for d in r.days] == [
        ("2026-03-13", 0, 40),
        ("2026-03-14", 80, 20),
    ]
    assert r.model_dump(mode="json")["totals"] == {
        "cost_usd": "0.00000002",
        "input_tokens": 178,
        "output_tokens": 38,
        "requests": 5,
        "cached_tokens": 80,
        "cache_write_tokens": 60,
    }


def test_empty_and_out_of_window() -> None:
    empty = report([], GroupBy.KEY, UNTIL, 7)
    assert empty.groups == [] and len(empty.days) == 7 and empty.totals.cost_usd == "0.00"
    odd = report([RECORDS[3]], GroupBy.KEY, UNTIL, 2)
    assert [d.day.isoformat() for d in odd.days] == ["2026-03-01", "2026-03-13", "2026-03-14"]
    assert day_ids(UNTIL, 3) == ["20260312", "20260313", "20260314"]


def test_by_owner() -> None:
    owned = [
        dataclasses.replace(RECORDS[0], owner="alice@example.com"),
        RECORDS[1],
        dataclasses.replace(RECORDS[2], owner="alice@example.com"),
    ]
    groups = report(owned, GroupBy.OWNER, UNTIL, 3).groups
    assert [(g.name, g.cost_usd, g.requests) for g in groups] == [
        ("alice@example.com", "3.000000001", 3),
        ("(none)", "1.00", 1),  # bob has no owner
    ]
    assert [g.name for g in report(RECORDS[:3], GroupBy.OWNER, UNTIL, 3).groups] == ["(none)"]


def _aikey(name: str, uid: str, owner: str) -> dict[str, object]:
    return {
        "metadata": {"namespace": "a", "name": name, "uid": uid},
        "spec": {"allocationRef": {"name": "team"}, "owner": owner},
    }


def test_keys_are_told_apart_by_uid_not_by_name() -> None:
    """Key `k` (uid-1, alice's) spent and was deleted; a new `k` (uid-2, bob's) spent too. Each
    row is its own key's: the new one's report holds only its own usage, the old one's stays
    visible as a deleted key with the owner it had."""
    new = key_entry(_aikey("k", "uid-2", "bob"))
    known = {("a", "k"): new}
    by_uid = {new.uid: new}
    rows = [
        UsageRow("20260314", "uid-1", "m1", 5, 50, 50, 5_000, KeyLabel("k", "alice")),
        UsageRow("20260314", "uid-2", "m1", 1, 10, 10, 1_000, KeyLabel("k", "bob")),
        UsageRow("20260313", "k", "m1", 2, 20, 20, 2_000),  # recorded by name, before uids
        UsageRow("20260313", "old", "m1", 3, 30, 30, 3_000),  # by name, no key of that name now
    ]
    records = [resolve("a", "team", row, known, by_uid) for row in rows]
    by_key = report(records, GroupBy.KEY, UNTIL, 3).groups
    assert [(g.name, g.requests, g.cost_usd) for g in by_key] == [
        ("a/k (deleted)", 5, "0.000005"),
        ("a/k", 3, "0.000003"),  # its own request and the name's records from before uids
        ("a/old (deleted)", 3, "0.000003"),
    ]
    by_owner = report(records, GroupBy.OWNER, UNTIL, 3).groups
    assert [(g.name, g.requests) for g in by_owner] == [("alice", 5), ("(none)", 3), ("bob", 3)]
    assert [r.row.key for r in own(records, new)] == ["uid-2", "k"]


def test_what_the_cache_saved_at_each_model_s_current_prices() -> None:
    """Cache reads × (input − cached input) per model, rounded down once; models without a cached
    price, or no longer served, saved nothing."""
    from aikeys.money import Price

    rows = [
        Record("a", "team", UsageRow("20260314", "alice", "m1", 2, 100_000, 10, 5, None, 45_000, 0)),
        Record("a", "team", UsageRow("20260314", "bob", "m1", 1, 3, 1, 1, None, 1, 0)),
        Record("a", "team", UsageRow("20260314", "bob", "m2", 1, 900, 1, 1, None, 900, 0)),
        Record("a", "team", UsageRow("20260314", "bob", "gone", 1, 900, 1, 1, None, 900, 0)),
    ]
    prices = {"m1": Price.parse("1.25", "10.00", cached_input="0.125"), "m2": Price.parse("1.00", "2.00")}
    r = report(rows, GroupBy.MODEL, UNTIL, 1, prices.get)
    # (45,000 + 1) × 1.125 USD per million = 0.050626125 USD
    assert r.cache_saved_usd == "0.050626125"
    assert report(rows, GroupBy.MODEL, UNTIL, 1).cache_saved_usd == "0.00"

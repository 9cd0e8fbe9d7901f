"""`kubectl aikeys usage`: the report computed from KeyUsage objects (what the API server returns)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from aikeys.cli.usage import as_csv, keyusages_path, render, report

UNTIL = dt.date(2026, 3, 14)


def _usage(cost: str, tin: int, tout: int, requests: int) -> dict[str, Any]:
    return {"cost": cost, "inputTokens": tin, "outputTokens": tout, "requests": requests}


def _item(
    ns: str, name: str, alloc: str, models: dict[str, dict[str, Any]], days: dict[str, dict[str, Any]]
) -> Any:
    total = {
        "cost": f"{sum(float(m['cost']) for m in models.values()):.2f}",
        "inputTokens": sum(m["inputTokens"] for m in models.values()),
        "outputTokens": sum(m["outputTokens"] for m in models.values()),
        "requests": sum(m["requests"] for m in models.values()),
    }
    return {
        "metadata": {"namespace": ns, "name": name},
        "allocation": alloc,
        "usage": total,
        "models": [{"model": m, **u} for m, u in models.items()],
        "days": [{"day": d, **u} for d, u in days.items()],
    }


ITEMS = [
    _item("a", "alice", "team", {"m1": _usage("3.00", 30, 3, 3)}, {"2026-03-14": _usage("3.00", 30, 3, 3)}),
    _item(
        "a",
        "bob",
        "lab",
        {"m1": _usage("0.50", 5, 1, 1), "m2": _usage("0.50", 5, 1, 1)},
        {"2026-03-13": _usage("1.00", 10, 2, 2)},
    ),
    _item("b", "carl", "team", {}, {}),  # a key without usage
]


def test_groups_shares_and_days() -> None:
    by_model = report(ITEMS, "model", UNTIL, 3)
    assert by_model["totals"] == {
        "cost_usd": "4.00",
        "input_tokens": 40,
        "output_tokens": 5,
        "requests": 5,
        "cached_tokens": 0,
        "cache_write_tokens": 0,
    }
    assert [(g["name"], g["cost_usd"], g["share"]) for g in by_model["groups"]] == [
        ("m1", "3.50", "0.8750"),
        ("m2", "0.50", "0.1250"),
    ]
    assert [(d["day"], d["requests"]) for d in by_model["days"]] == [
        ("2026-03-12", 0),
        ("2026-03-13", 2),
        ("2026-03-14", 3),
    ]
    assert (by_model["since"], by_model["until"]) == ("2026-03-12", "2026-03-14")
    assert [g["name"] for g in report(ITEMS, "key", UNTIL, 3)["groups"]] == [
        "a/alice",
        "a/bob",
    ]  # carl: nothing
    assert [g["name"] for g in report(ITEMS, "allocation", UNTIL, 3)["groups"]] == ["a/team", "a/lab"]
    assert [g["name"] for g in report(ITEMS, "namespace", UNTIL, 3)["groups"]] == ["a"]
    empty = report([], "model", UNTIL, 7)
    assert empty["groups"] == [] and len(empty["days"]) == 7 and empty["totals"]["cost_usd"] == "0.00"
    assert "No usage in this period." in render(empty, "namespace a")
    assert as_csv(by_model).splitlines()[1] == "model,m1,3.50,0.8750,35,4,4,0,0"


def test_cached_and_cache_write_tokens_in_every_output() -> None:
    """Cache reads and writes (parts of the input tokens) are summed per group and day and shown in
    the table, JSON and CSV; a KeyUsage from a gateway without them counts 0."""
    cached = {**_usage("2.00", 100, 10, 2), "cachedTokens": 60, "cacheWriteTokens": 25}
    dana = _item("a", "dana", "team", {"m1": cached}, {"2026-03-14": cached})
    dana["usage"] |= {"cachedTokens": 60, "cacheWriteTokens": 25}
    r = report([*ITEMS, dana], "model", UNTIL, 3)
    assert (r["totals"]["input_tokens"], r["totals"]["cached_tokens"], r["totals"]["cache_write_tokens"]) == (
        140,
        60,
        25,
    )
    m1 = next(g for g in r["groups"] if g["name"] == "m1")
    assert (m1["input_tokens"], m1["cached_tokens"], m1["cache_write_tokens"]) == (135, 60, 25)
    assert [(d["day"], d["cached_tokens"]) for d in r["days"]] == [
        ("2026-03-12", 0),
        ("2026-03-13", 0),
        ("2026-03-14", 60),
    ]
    lines = as_csv(r).splitlines()
    assert lines[0].endswith(",requests,cached_tokens,cache_write_tokens")
    assert lines[1] == "model,m1,5.50,0.9167,135,14,6,60,25"
    text = click.unstyle(render(r, "namespace a"))
    assert "    cached       60" in text and "    cache writes 25" in text
    head, m1_row = (line.split() for line in text.splitlines() if line.startswith(("MODEL", "m1 ")))
    assert head[-7:] == ["TOKENS", "CACHED", "CACHE", "WRITES", "OUTPUT", "TOKENS", "REQUESTS"]
    assert m1_row[-5:] == ["135", "60", "25", "14", "6"]


def test_paths() -> None:
    assert keyusages_path("team-a") == "/apis/usage.aikeys.dev/v1alpha1/namespaces/team-a/keyusages"
    assert keyusages_path(None) == "/apis/usage.aikeys.dev/v1alpha1/keyusages"


def test_by_owner() -> None:
    owned = [{**ITEMS[0], "owner": "alice@example.com"}, {**ITEMS[1], "owner": None}, ITEMS[2]]
    groups = report(owned, "owner", UNTIL, 3)["groups"]
    assert [(g["name"], g["cost_usd"], g["share"]) for g in groups] == [
        ("alice@example.com", "3.00", "0.7500"),
        ("(none)", "1.00", "0.2500"),
    ]

"""The AI Usage page's figures, as a reader sees them in the rendered HTML."""

from __future__ import annotations

import datetime as dt
from html.parser import HTMLParser

from aikeys_gateway.ui.pages import Viewer, usage_page
from aikeys_gateway.usage.records import GroupBy, Record, report

from aikeys.ledger.store import UsageRow
from aikeys.money import Price

UNTIL = dt.date(2026, 3, 14)


class Cells(HTMLParser):
    """Text of every element with an id, and each table's rows as lists of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, str] = {}
        self.rows: dict[str, list[list[str]]] = {}
        self._open: list[str | None] = []
        self._table: list[str] = []
        self._text: list[str] = []
        self._row: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in ("br", "input", "rect", "line", "meta", "link"):
            return
        self._open.append(a.get("id"))
        if a.get("id"):
            self._text = []
        if tag == "table":
            self._table.append(a.get("id") or a.get("aria-labelledby") or f"table-{len(self.rows)}")
            self.rows.setdefault(self._table[-1], [])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._text = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("br", "input", "rect", "line", "meta", "link"):
            return
        text = "".join(self._text).strip()
        if tag in ("td", "th") and self._row is not None:
            self._row.append(text)
        elif tag == "tr" and self._row is not None and self._table:
            self.rows[self._table[-1]].append(self._row)
            self._row = None
        elif tag == "table" and self._table:
            self._table.pop()
        ident = self._open.pop() if self._open else None
        if ident:
            self.by_id[ident] = text

    def handle_data(self, data: str) -> None:
        self._text.append(data)


def test_the_page_shows_cached_and_cache_write_tokens() -> None:
    """Cache reads and writes (parts of the input tokens) are totals of their own and columns of
    the breakdown and per-day tables, right after the input tokens."""
    records = [
        Record("a", "team", UsageRow("20260314", "alice", "m1", 2, 1_000, 50, 700, None, 600, 300)),
        Record("a", "team", UsageRow("20260313", "alice", "m2", 1, 200, 10, 100, None, 150, 0)),
    ]
    prices = {"m1": Price.parse("2.00", "8.00", cached_input="0.50")}
    page = usage_page(
        Viewer("alice", False, "csrf"),
        report(records, GroupBy.MODEL, UNTIL, 2, prices.get),
        "a",
        ["a"],
        False,
        [],
        "/ui/usage.json",
    )
    seen = Cells()
    seen.feed(page)
    assert (seen.by_id["total-input"], seen.by_id["total-cached"], seen.by_id["total-cache-writes"]) == (
        "1,200",
        "750",
        "300",
    )
    assert seen.by_id["total-output"] == "60"
    # 600 reads × 1.50 USD per million (m2 has no cache price)
    assert seen.by_id["cache-saved"] == "0.00090 USD"
    head, *groups = seen.rows["breakdown"]
    assert head[3:8] == ["Input tokens", "Cached", "Cache writes", "Output tokens", "Requests"]
    assert {g[0]: g[3:8] for g in groups} == {
        "m1": ["1,000", "600", "300", "50", "2"],
        "m2": ["200", "150", "0", "10", "1"],
    }
    day_head, *days = next(rows for name, rows in seen.rows.items() if name != "breakdown")
    assert day_head[2:5] == ["Input tokens", "Cached", "Cache writes"]
    assert [(d[0], d[2:5]) for d in days] == [
        ("2026-03-13", ["200", "150", "0"]),
        ("2026-03-14", ["1,000", "600", "300"]),
    ]
    empty = Cells()
    empty.feed(
        usage_page(
            Viewer("alice", False, "csrf"), report([], GroupBy.MODEL, UNTIL, 2), "a", ["a"], False, [], "/"
        )
    )
    [_, [message]] = empty.rows["breakdown"]
    assert message == "No usage in this period."

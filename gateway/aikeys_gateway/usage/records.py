"""Usage reports from the ledger's per-day records: totals, groups with shares, days.

Pure aggregation (`report`) plus the reads that feed it (`collect`). Amounts leave as USD
strings, tokens as integers.

The ledger counts a key by its AIKey's uid, so a new key named like a deleted one starts from
nothing. `collect` names each record's key: an existing key by its name and owner now; a deleted
one by the name and owner the ledger kept with its usage, marked deleted (by key: "ns/name
(deleted)", apart from a new key of that name). Records written before keys were counted by uid
carry the key's name instead: they are shown under that name, as the key of that name (if any).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel, Field

from aikeys.ledger.store import Allocation, PeriodState, UsageRow
from aikeys.money import TOKENS_PER_PRICE_UNIT, Price, format_usd
from aikeys_gateway.cache.catalog import KeyEntry

MAX_DAYS = 100  # usage records are kept 100 days


class UsageLedger(Protocol):
    """What the usage readers (`/api/usage`, the AI Usage page, the KeyUsage API) read from the
    ledger — reads only; `aikeys.ledger.store.Ledger` is one. They never hold or charge."""

    async def period_state(self, alloc: Allocation, at: dt.datetime | None = None) -> PeriodState: ...

    async def usage(self, alloc: Allocation, days: list[str]) -> list[UsageRow]: ...

    async def last_used(self, alloc: Allocation) -> dict[str, dt.datetime]: ...


class GroupBy(StrEnum):
    KEY = "key"
    MODEL = "model"
    ALLOCATION = "allocation"
    NAMESPACE = "namespace"
    OWNER = "owner"


NO_OWNER = "(none)"  # keys without spec.owner
DELETED = " (deleted)"  # after a deleted key's name, grouped by key
Known = Mapping[tuple[str, str], KeyEntry]  # the informer cache: (namespace, name) → key


class Amounts(BaseModel):
    cost_usd: str = Field(description="USD, decimal string")
    input_tokens: int = Field(description="Every input token: uncached, cache reads and cache writes")
    output_tokens: int
    requests: int
    cached_tokens: int = Field(0, description="Of input_tokens: read from the provider's prompt cache")
    cache_write_tokens: int = Field(
        0, description="Of input_tokens: written to the provider's prompt cache (5-minute and 1-hour)"
    )


class Group(Amounts):
    name: str = Field(
        description="The key (namespace/name; a deleted key's with ' (deleted)' after it), model ID, "
        "allocation (namespace/name), namespace or owner (a Kubernetes user name; (none) for keys "
        "without one)"
    )
    share: str = Field(description="Share of the total cost, 0..1 as a decimal string")


class Day(Amounts):
    day: dt.date


class UsageReport(BaseModel):
    since: dt.date
    until: dt.date
    group_by: GroupBy
    totals: Amounts
    groups: list[Group]
    days: list[Day]
    cache_saved_usd: str = Field(
        "0.00",
        description="What cache reads saved against the input price, at the models' current prices "
        "(USD, decimal string; models no longer served count nothing)",
    )


@dataclass(frozen=True)
class Record:
    """One ledger usage row with where it came from and the key it was charged to."""

    namespace: str
    allocation: str
    row: UsageRow
    name: str | None = None  # the key's name (None: the row's key as recorded)
    owner: str | None = None
    deleted: bool = False  # the key charged no longer exists (a new one may have its name)

    @property
    def key_name(self) -> str:
        return self.name or self.row.key


def resolve(
    namespace: str, allocation: str, row: UsageRow, known: Known, by_uid: Mapping[str, KeyEntry]
) -> Record:
    """The record of `row`, its key named (see the module's docstring)."""
    entry = by_uid.get(row.key)
    if entry is not None:
        return Record(namespace, allocation, row, entry.name, entry.spec.owner)
    if row.label is not None:
        return Record(namespace, allocation, row, row.label.name, row.label.owner, deleted=True)
    entry = known.get((namespace, row.key))  # recorded before uids: by the key's name
    if entry is not None:
        return Record(namespace, allocation, row, entry.name, entry.spec.owner)
    return Record(namespace, allocation, row, row.key, None, deleted=True)


def day_ids(until: dt.date, days: int) -> list[str]:
    return [(until - dt.timedelta(days=i)).strftime("%Y%m%d") for i in range(days - 1, -1, -1)]


async def collect(
    ledger: UsageLedger, allocations: Iterable[Allocation], until: dt.date, days: int, known: Known
) -> list[Record]:
    """The allocations' usage records of the window, each with its key named from `known` (the
    existing keys) or, for a deleted key, from the ledger."""
    ids = day_ids(until, days)
    by_uid = {e.uid: e for e in known.values()}
    records: list[Record] = []
    for alloc in allocations:
        for row in await ledger.usage(alloc, ids):
            records.append(resolve(alloc.namespace, alloc.name, row, known, by_uid))
    return records


def own(records: Iterable[Record], key: KeyEntry) -> list[Record]:
    """The records of `key` itself (not of a deleted key that had its name)."""
    return [r for r in records if not r.deleted and r.namespace == key.namespace and r.key_name == key.name]


TOKENS = ("input_tokens", "output_tokens", "requests", "cached_tokens", "cache_write_tokens")


def _amounts(records: list[Record]) -> dict[str, int]:
    """The records' cost and, under Amounts' names, their token and request counts."""
    return {"cost": sum(r.row.cost for r in records)} | {
        f: sum(getattr(r.row, f) for r in records) for f in TOKENS
    }


def _counts(a: dict[str, int]) -> dict[str, int]:
    return {f: a[f] for f in TOKENS}


def _share(part: int, total: int) -> str:
    if total <= 0:
        return "0"
    return f"{part / total:.4f}"  # a display ratio, not money


def _name(record: Record, by: GroupBy) -> str:
    if by is GroupBy.OWNER:
        return record.owner or NO_OWNER
    if by is GroupBy.KEY:
        return f"{record.namespace}/{record.key_name}{DELETED if record.deleted else ''}"
    if by is GroupBy.MODEL:
        return record.row.model
    if by is GroupBy.ALLOCATION:
        return f"{record.namespace}/{record.allocation}"
    return record.namespace


def cache_savings(records: list[Record], price_of: Callable[[str], Price | None]) -> int:
    """Nano-USD that cache reads saved against each model's input price (rounded down)."""
    scaled = 0
    for r in records:
        price = price_of(r.row.model) if r.row.cached_tokens else None
        if price is not None and price.cached_input_per_million is not None:
            scaled += r.row.cached_tokens * max(price.input_per_million - price.cached_input_per_million, 0)
    return scaled // TOKENS_PER_PRICE_UNIT


def report(
    records: list[Record],
    by: GroupBy,
    until: dt.date,
    days: int,
    price_of: Callable[[str], Price | None] | None = None,
) -> UsageReport:
    """`price_of`: a model ID's current prices, for what the cache saved."""
    total = _amounts(records)
    grouped: dict[str, list[Record]] = {}
    for r in records:
        grouped.setdefault(_name(r, by), []).append(r)
    groups = []
    for name, members in grouped.items():
        a = _amounts(members)
        groups.append(
            Group(
                name=name,
                cost_usd=format_usd(a["cost"]),
                **_counts(a),
                share=_share(a["cost"], total["cost"]),
            )
        )
    order = {g.name: _amounts(grouped[g.name])["cost"] for g in groups}
    groups.sort(key=lambda g: (-order[g.name], g.name))
    by_day: dict[str, list[Record]] = {d: [] for d in day_ids(until, days)}
    for r in records:
        by_day.setdefault(r.row.day, []).append(r)
    day_rows = []
    for day, members in sorted(by_day.items()):
        a = _amounts(members)
        day_rows.append(
            Day(
                day=dt.datetime.strptime(day, "%Y%m%d").date(),
                cost_usd=format_usd(a["cost"]),
                **_counts(a),
            )
        )
    return UsageReport(
        since=until - dt.timedelta(days=days - 1),
        until=until,
        group_by=by,
        totals=Amounts(
            cost_usd=format_usd(total["cost"]),
            **_counts(total),
        ),
        groups=groups,
        cache_saved_usd=format_usd(cache_savings(records, price_of) if price_of else 0),
        days=day_rows,
    )

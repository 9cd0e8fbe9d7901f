"""An Allocation's status (and its keys' spend and last use), from what the ledger shows.

`refresh` returns the status patch for the Allocation (from its period counters, read by the
caller for every allocation in one round trip) and events for thresholds crossed; `key_patch`
the patch of one AIKey charged since the last look. Nothing is returned for what did not change,
so an idle cluster costs no API writes.

It only reads the ledger, with one exception: a lost ledger. Within one period the ledger's
`requests` never go down, and `spent` only when a late settle corrects a reaped lease. So when
the period the status was written for is still the current one and the ledger shows fewer
requests, or less spent without any reaped lease, Redis lost data (a restart without
persistence, a failover to a lagging replica, FLUSHALL). Then the status is the better record:
its spent, tokens and requests and the keys' spend are written back into the ledger as floors
(`Ledger.restore`, which never lowers anything), a Warning event `LedgerRestored` says so, and
the status never shows the lost value. What was spent between the last status refresh and the
loss cannot be known; it is at most one status interval of traffic.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aikeys.ledger import specs
from aikeys.ledger.store import Allocation, KeyUse, Ledger, PeriodState, RestoreOutcome
from aikeys.money import MoneyError, format_usd, parse_usd
from aikeys.periods import Period, window
from aikeys.resources import AllocationSpec, AllocationStatus
from aikeys_operator.conditions import set_condition, stamp
from aikeys_operator.keys import Event

KeySpends = Iterable[tuple[str, str | None]]  # (AIKey uid, status.spend) of an allocation's keys


@dataclass
class Refresh:
    status: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    restored: bool = False  # the ledger had lost data and was restored from the last status
    restored_keys: list[str] = field(default_factory=list)  # keys (uids) whose spend the restore raised


@dataclass(frozen=True)
class Floors:
    """What the last status says the current period has used at least."""

    spent: int
    tokens: int
    requests: int
    key_spend: dict[str, int]


def floors(raw_old: dict[str, Any], keys: KeySpends, period_start: str | None) -> Floors | None:
    """The last status as floors, when it was written for the period that is current now."""
    if raw_old.get("spent") is None or raw_old.get("periodStart") != period_start:
        return None  # no status yet, or a new period (which legitimately starts at 0)
    try:
        spent = parse_usd(str(raw_old["spent"]))
        key_spend = {uid: parse_usd(spend) for uid, spend in keys if spend}
    except MoneyError:
        return None
    if sum(key_spend.values()) > spent:  # key statuses from an earlier period: do not trust them
        key_spend = {}
    return Floors(
        spent,
        int(raw_old.get("tokens") or 0),
        int(raw_old.get("requests") or 0),
        {k: v for k, v in key_spend.items() if v > 0},
    )


def lost(state: PeriodState, floor: Floors) -> bool:
    """Whether the ledger has less than the status showed for the same period."""
    if not state.exists and (floor.requests or floor.spent or floor.tokens):
        return True  # the period's hash is gone altogether
    if state.requests < floor.requests:
        return True  # requests only ever grow within a period
    # a late settle of a reaped lease charges actual minus estimate: spent may then go down
    return state.spent < floor.spent and state.reaped == 0


def restored_message(before: PeriodState, floor: Floors, added: RestoreOutcome) -> str:
    return (
        f"The ledger (Redis) had lost data of this period: it showed {format_usd(before.spent)} USD "
        f"spent in {before.requests} requests, the last status {format_usd(floor.spent)} USD in "
        f"{floor.requests}. Restored spent {format_usd(floor.spent)} USD, {floor.tokens} tokens, "
        f"{floor.requests} requests and the spend of {len(floor.key_spend)} keys as lower bounds "
        f"(added {format_usd(added.spent)} USD, {added.tokens} tokens, {added.requests} requests). "
        "Spend after the last status refresh and per-day usage records before the loss are not "
        "recoverable; enable Redis persistence (AOF) to keep them."
    )


async def restore(
    ledger: Ledger, alloc: Allocation, period_id: str, floor: Floors, now: dt.datetime
) -> tuple[RestoreOutcome, PeriodState, dict[str, int]]:
    """Raise the ledger to the floors; returns what was added, and the period state and key spend
    to show (never below the floors, even if the ledger lost data again since)."""
    added = await ledger.restore(alloc, period_id, floor.spent, floor.tokens, floor.requests, floor.key_spend)
    state = await ledger.period_state(alloc, now)
    per_key = await ledger.key_spend(alloc, now)
    state = dataclasses.replace(
        state,
        spent=max(state.spent, floor.spent),
        tokens=max(state.tokens, floor.tokens),
        requests=max(state.requests, floor.requests),
    )
    keys = per_key.keys() | floor.key_spend.keys()
    return added, state, {k: max(per_key.get(k, 0), floor.key_spend.get(k, 0)) for k in keys}


def budget_name(spec: AllocationSpec) -> str:
    """`10.00 USD Monthly budget`, or `5.00 USD budget` for a budget that never starts again."""
    period = "" if spec.period is Period.NONE else f" {spec.period.value}"
    return f"{spec.budget} USD{period} budget"


async def refresh(
    body: dict[str, Any],
    ledger: Ledger,
    key_count: int,
    now: dt.datetime,
    state: PeriodState | None = None,
    key_spends: Callable[[], KeySpends] = tuple,
) -> Refresh:
    """The allocation's status patch from the ledger's period counters (`state`, read here when
    None). `key_spends` (its keys' status spend) is only asked for when the ledger lost data."""
    meta = body["metadata"]
    spec = AllocationSpec.model_validate(body.get("spec") or {})
    old = AllocationStatus.model_validate(body.get("status") or {})
    raw_old = body.get("status") or {}
    alloc = specs.allocation(meta["namespace"], meta["name"], spec)
    w = window(spec.period, now)
    if state is None:
        state = await ledger.period_state(alloc, now)
    events: list[Event] = []
    period_start = stamp(w.start) if w.start else None
    floor = floors(raw_old, (), period_start)
    restored, restored_keys = False, []
    if floor is not None and lost(state, floor):
        floor = floors(raw_old, key_spends(), period_start) or floor
        before = state
        added, state, per_key = await restore(ledger, alloc, w.id, floor, now)
        restored = added.restored  # False: another refresh got there first
        restored_keys = sorted(per_key)
        if restored:
            events.append(Event("Warning", "LedgerRestored", restored_message(before, floor, added)))

    exhausted_budget = state.spent >= alloc.budget
    exhausted_tokens = alloc.token_limit is not None and state.tokens >= alloc.token_limit
    new: dict[str, Any] = {
        "spent": format_usd(state.spent),
        "remaining": format_usd(max(alloc.budget - state.spent, 0)),
        "reserved": format_usd(state.reserved),
        "tokens": state.tokens,
        "requests": state.requests,
        "periodStart": stamp(w.start) if w.start else None,
        "periodEnd": stamp(w.end) if w.end else None,
        "keys": key_count,
        "observedGeneration": meta.get("generation"),
    }

    percent = 100 if alloc.budget == 0 else state.spent * 100 // alloc.budget
    crossed = [t for t in sorted(spec.alert_thresholds) if percent >= t]
    already = old.alerted_threshold if old.alerted_period == w.id else None
    if crossed and (already is None or crossed[-1] > already):
        new["alertedThreshold"], new["alertedPeriod"] = crossed[-1], w.id
        events.append(
            Event(
                "Warning",
                "BudgetThreshold",
                f"{percent}% of the {budget_name(spec)} used "
                f"(spent {new['spent']} USD; threshold {crossed[-1]}%)",
            )
        )
    elif already is not None and old.alerted_period != w.id:
        new["alertedThreshold"], new["alertedPeriod"] = None, None

    if exhausted_budget or exhausted_tokens:
        what = "budget" if exhausted_budget else "token limit"
        conditions = set_condition(
            raw_old.get("conditions"),
            "Exhausted",
            True,
            "BudgetExhausted" if exhausted_budget else "TokenLimitReached",
            f"The {what} of this period is used up; requests get HTTP 402 until "
            f"{new['periodEnd'] or 'the budget is raised'}",
            now,
        )
    else:
        conditions = set_condition(
            raw_old.get("conditions"),
            "Exhausted",
            False,
            "BudgetAvailable",
            f"{new['remaining']} USD left this period",
            now,
        )
    conditions = set_condition(
        conditions, "Ready", True, "LedgerReadable", "Spend is read from the ledger", now
    )
    was_exhausted = any(c.type == "Exhausted" and c.status == "True" for c in old.conditions)
    if (exhausted_budget or exhausted_tokens) and not was_exhausted:
        events.append(
            Event("Warning", "Exhausted", f"Allocation exhausted: spent {new['spent']} of {spec.budget} USD")
        )
    new["conditions"] = conditions

    status_patch = {k: v for k, v in new.items() if raw_old.get(k) != v}
    return Refresh(status_patch, events, restored, restored_keys)


def key_patch(spend: str | None, last_used_at: str | None, use: KeyUse, granularity: float) -> dict[str, Any]:
    """The status patch of an AIKey whose status shows `spend` and `last_used_at`, from what the
    ledger shows. A key never charged keeps no spend (not "0.00": nothing to write for it), and
    lastUsedAt alone (a charge of nothing) is rewritten only when it moved `granularity` seconds."""
    patch: dict[str, Any] = {}
    now_spend = format_usd(use.spend)
    if now_spend != spend and (spend is not None or use.spend):
        patch["spend"] = now_spend
    if use.last_used is not None:
        used = stamp(use.last_used)
        if used != last_used_at:
            previous = _parse_stamp(last_used_at)
            if patch or previous is None or (use.last_used - previous).total_seconds() >= granularity:
                patch["lastUsedAt"] = used
    return patch


def _parse_stamp(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def unavailable(body: dict[str, Any], reason: str, now: dt.datetime) -> dict[str, Any]:
    """Status patch when the ledger cannot be read."""
    raw_old = body.get("status") or {}
    conditions = set_condition(raw_old.get("conditions"), "Ready", False, "LedgerUnavailable", reason, now)
    return {} if conditions == raw_old.get("conditions") else {"conditions": conditions}

"""An Allocation's status (and its keys' spend and last use), read from the ledger.

`refresh` is pure apart from the ledger reads: it returns the status patch for the Allocation,
patches for the AIKeys whose spend or last use changed, and events for thresholds crossed.
Nothing is returned for what did not change, so an idle cluster costs no API writes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from aikeys.ledger.store import Allocation, Ledger
from aikeys.money import format_usd, parse_usd
from aikeys.periods import window
from aikeys.resources import AllocationSpec, AllocationStatus
from aikeys_operator.conditions import set_condition, stamp
from aikeys_operator.keys import Event


@dataclass(frozen=True)
class KeyView:
    """What the operator's index remembers of an AIKey (no API read needed)."""

    name: str
    resource_version: str
    spend: str | None
    last_used_at: str | None


@dataclass
class Refresh:
    status: dict[str, Any]
    key_patches: dict[str, dict[str, Any]] = field(default_factory=dict)  # AIKey name → status patch
    events: list[Event] = field(default_factory=list)


def ledger_allocation(namespace: str, name: str, spec: AllocationSpec) -> Allocation:
    return Allocation(namespace, name, parse_usd(spec.budget), spec.period, spec.token_limit)


async def refresh(body: dict[str, Any], ledger: Ledger, keys: list[KeyView], now: dt.datetime) -> Refresh:
    meta = body["metadata"]
    spec = AllocationSpec.model_validate(body.get("spec") or {})
    old = AllocationStatus.model_validate(body.get("status") or {})
    raw_old = body.get("status") or {}
    alloc = ledger_allocation(meta["namespace"], meta["name"], spec)
    state = await ledger.period_state(alloc, now)
    per_key = await ledger.key_spend(alloc, now)
    last_used = await ledger.last_used(alloc)
    w = window(spec.period, now)

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
        "keys": len(keys),
        "observedGeneration": meta.get("generation"),
    }
    events: list[Event] = []

    percent = 100 if alloc.budget == 0 else state.spent * 100 // alloc.budget
    crossed = [t for t in sorted(spec.alert_thresholds) if percent >= t]
    already = old.alerted_threshold if old.alerted_period == w.id else None
    if crossed and (already is None or crossed[-1] > already):
        new["alertedThreshold"], new["alertedPeriod"] = crossed[-1], w.id
        events.append(
            Event(
                "Warning",
                "BudgetThreshold",
                f"{percent}% of the {spec.budget} USD {spec.period.value} budget used "
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

    key_patches: dict[str, dict[str, Any]] = {}
    for key in keys:
        spend = format_usd(per_key.get(key.name, 0))
        used = last_used.get(key.name)
        patch: dict[str, Any] = {}
        if key.spend != spend:
            patch["spend"] = spend
        if used is not None and key.last_used_at != stamp(used):
            patch["lastUsedAt"] = stamp(used)
        if patch:
            key_patches[key.name] = patch
    return Refresh(status_patch, key_patches, events)


def unavailable(body: dict[str, Any], reason: str, now: dt.datetime) -> dict[str, Any]:
    """Status patch when the ledger cannot be read."""
    raw_old = body.get("status") or {}
    conditions = set_condition(raw_old.get("conditions"), "Ready", False, "LedgerUnavailable", reason, now)
    return {} if conditions == raw_old.get("conditions") else {"conditions": conditions}

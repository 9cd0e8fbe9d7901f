"""Status conditions as Kubernetes API conventions define them (pure)."""

from __future__ import annotations

import datetime as dt
from typing import Any


def set_condition(
    conditions: list[dict[str, Any]] | None,
    type_: str,
    status: bool,
    reason: str,
    message: str,
    now: dt.datetime,
    generation: int | None = None,
) -> list[dict[str, Any]]:
    """Return `conditions` with `type_` set; lastTransitionTime changes only when the status does."""
    value = "True" if status else "False"
    result: list[dict[str, Any]] = []
    found = False
    for cond in conditions or []:
        if cond.get("type") != type_:
            result.append(cond)
            continue
        found = True
        changed = cond.get("status") != value
        result.append(
            {
                "type": type_,
                "status": value,
                "reason": reason,
                "message": message,
                "lastTransitionTime": stamp(now) if changed else cond.get("lastTransitionTime", stamp(now)),
                **({"observedGeneration": generation} if generation is not None else {}),
            }
        )
    if not found:
        result.append(
            {
                "type": type_,
                "status": value,
                "reason": reason,
                "message": message,
                "lastTransitionTime": stamp(now),
                **({"observedGeneration": generation} if generation is not None else {}),
            }
        )
    return result


def stamp(moment: dt.datetime) -> str:
    """RFC 3339 in UTC with a Z, second precision (what kubectl shows)."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(conditions: list[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    for cond in conditions or []:
        if cond.get("type") == type_:
            return cond
    return None

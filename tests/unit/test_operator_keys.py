"""The operator's pure decisions about an AIKey it cannot compute with (aikeys_operator.keys)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pydantic
from aikeys_operator.keys import INVALID, assess, invalid, spec_problem, unreadable

from aikeys.resources import AIKeySpec

NOW = dt.datetime(2026, 3, 14, 12, 0, tzinfo=dt.UTC)


def aikey(spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    meta = {"name": "k", "namespace": "ns", "uid": "u", "resourceVersion": "1", "generation": 2}
    return {"metadata": meta, "spec": {"allocationRef": {"name": "a"}, **spec}, "status": status or {}}


def test_spec_problems_name_the_field() -> None:
    assert spec_problem(AIKeySpec.model_validate(aikey({"ttl": "36500d"})["spec"])) is None
    huge = AIKeySpec.model_validate(aikey({"ttl": "1000000000h"})["spec"])
    assert spec_problem(huge) == "spec.ttl must be at most 36500d, not '1000000000h'"
    grace = AIKeySpec.model_validate(aikey({"rotationGracePeriod": "99999999999999999999d"})["spec"])
    assert spec_problem(grace) == "spec.rotationGracePeriod must be at most 365d, not '99999999999999999999d'"


def test_an_invalid_spec_is_reported_once_then_left_alone() -> None:
    obj = aikey({"ttl": "1000000000h"})
    assert assess(obj, NOW).work and assess(obj, NOW).deadline is None
    problem = "spec.ttl must be at most 36500d, not '1000000000h'"
    first = invalid(obj, problem, NOW)
    [cond] = first.status["conditions"]
    assert (cond["status"], cond["reason"], cond["observedGeneration"]) == ("False", INVALID, 2)
    assert [(e.type, e.reason) for e in first.events] == [("Warning", INVALID)]
    written = aikey({"ttl": "1000000000h"}, first.status)
    again = invalid(written, problem, NOW)
    assert (again.status, again.events) == ({}, [])  # nothing to write, nothing to post: no loop
    assert not assess(written, NOW).work


def test_unreadable_is_one_line_naming_fields() -> None:
    try:
        AIKeySpec.model_validate({"allocationRef": {}, "rotation": "many"})
    except pydantic.ValidationError as err:
        text = unreadable(err)
    assert text.startswith("the AIKey cannot be read (")
    assert "allocationRef.name: Field required" in text
    assert "rotation: Input should be a valid integer" in text
    assert "\n" not in text

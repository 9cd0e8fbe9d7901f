"""A request as one upstream gets it: the endpoint it goes to, the cap, the bytes and its bound.

A surface decides the request's form for a route (as is, or translated for a backend that does not
speak its endpoint) and calls `build`; the route's upstream kind rewrites the body (model name,
cap, usage on streams). `dearest` is the one reservation that covers whichever attempt answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aikeys.estimate import Endpoint, OutputCap, UnboundedInput, estimate, output_cap
from aikeys.ledger.store import Estimate
from aikeys_gateway import errors
from aikeys_gateway.pipeline.intake import serialize
from aikeys_gateway.pipeline.routing import Route


@dataclass(frozen=True)
class Plan:
    route: Route
    endpoint: Endpoint  # the upstream's endpoint (chat for a translated Responses request)
    body: dict[str, Any]  # the request in that endpoint's form, before the upstream's rewrite
    cap: OutputCap
    payload: bytes  # what is sent
    translated: bool
    estimate: Estimate  # what this attempt may cost at its model's price


def build(endpoint: Endpoint, body: dict[str, Any], route: Route, stream: bool, translated: bool) -> Plan:
    model = route.model
    cap = output_cap(endpoint, body, model.max_output_tokens)
    upstream_body = route.kind.body(endpoint, body, route.provider, model, cap, stream)
    payload = serialize(upstream_body)  # first: it refuses bodies nested too deep to walk
    try:
        bound = estimate(endpoint, body, model.price, model.encoding, cap, model.context_window)
    except UnboundedInput as err:
        raise errors.invalid_request(
            f"This request refers to input the gateway cannot see ({err.param}), and the model "
            f"{route.model_id} has no context window to bound it by: its provider's owner can set "
            "spec.models[].contextWindow on the AIProvider.",
            param=err.param,
            code="context_window_required",
        ) from err
    return Plan(route, endpoint, body, cap, payload, translated, bound)


def dearest(plans: list[Plan]) -> Estimate:
    """One reservation that covers whichever upstream answers."""
    estimates = [p.estimate for p in plans]
    return Estimate(
        max(e.cost for e in estimates),
        max(e.input_tokens for e in estimates),
        max(e.output_tokens for e in estimates),
    )

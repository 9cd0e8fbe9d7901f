"""The usage API: `GET /api/keys/self` and `GET /api/usage` (JSON, documented in the OpenAPI schema)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Awaitable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from aikeys import keys
from aikeys.ledger.store import LedgerUnavailable
from aikeys.money import format_usd
from aikeys.periods import window
from aikeys.resources import NAMESPACE_OR_STAR
from aikeys_gateway import errors
from aikeys_gateway.cache.catalog import Catalog
from aikeys_gateway.kubeauth import KubeAuth
from aikeys_gateway.pipeline.auth import authenticate, presented_key
from aikeys_gateway.usage.records import (
    MAX_DAYS,
    GroupBy,
    UsageLedger,
    UsageReport,
    collect,
    own,
    report,
)

T = TypeVar("T")
EARLIEST = dt.date(2020, 1, 1)  # no ledger record is older
NAMESPACE = re.compile(NAMESPACE_OR_STAR)
Days = Annotated[int, Query(ge=1, le=MAX_DAYS, description="How many UTC days, ending with `until`.")]
By = Annotated[GroupBy, Query(description="key, model, allocation, namespace or owner")]
Namespace = Annotated[str | None, Query(description="With a Kubernetes token: a namespace, or * for all.")]
Until = Annotated[dt.date | None, Query(description="Last day of the report (UTC); today if unset.")]


class KeySelf(BaseModel):
    """What an AI key may know about itself."""

    namespace: str
    name: str
    key_hint: str | None
    allocation: str
    models: list[str]
    expires_at: dt.datetime | None
    period: str
    period_start: dt.datetime | None
    period_end: dt.datetime | None
    budget_usd: str
    spent_usd: str
    remaining_usd: str


async def _ledger_call(call: Awaitable[T]) -> T:
    try:
        return await call
    except LedgerUnavailable as err:
        raise errors.unavailable("The ledger is unreachable; retry shortly.") from err


def router(catalog: Catalog, ledger: UsageLedger, kubeauth: KubeAuth) -> APIRouter:
    """The routes, over the gateway's caches, the ledger's usage records and Kubernetes' answer
    to who a token is and what it may read."""
    router = APIRouter(tags=["usage"])

    @router.get("/api/keys/self", tags=["usage"], response_model=KeySelf)
    async def key_self(request: Request) -> KeySelf:
        """The calling AI key: its allocation, the budget left this period, its expiry."""
        key = authenticate(request.headers, catalog, dt.datetime.now(dt.UTC))
        alloc = catalog.allocation(key.namespace, key.allocation)
        if alloc is None:
            raise errors.forbidden(
                f"Allocation {key.namespace}/{key.allocation} does not exist.", code="allocation_not_found"
            )
        now = dt.datetime.now(dt.UTC)
        spent = (await _ledger_call(ledger.period_state(alloc, now))).spent
        w = window(alloc.period, now)
        return KeySelf(
            namespace=key.namespace,
            name=key.name,
            key_hint=key.status.key_hint,
            allocation=key.allocation,
            expires_at=key.status.expires_at,
            models=list(key.spec.models),
            period=alloc.period.value,
            period_start=w.start,
            period_end=w.end,
            budget_usd=format_usd(alloc.budget),
            spent_usd=format_usd(spent),
            remaining_usd=format_usd(max(alloc.budget - spent, 0)),
        )

    @router.get("/api/usage", tags=["usage"], response_model=UsageReport)
    async def usage(
        request: Request,
        days: Days = 7,
        group_by: By = GroupBy.MODEL,
        namespace: Namespace = None,
        until: Until = None,
    ) -> UsageReport:
        """Usage over days. With an AI key: that key's own usage. With a Kubernetes bearer token:
        a namespace's (or, with namespace=*, every namespace's) usage, for whoever may list its
        KeyUsages (`list keyusages.usage.aikeys.dev`, the right `kubectl get keyusages` needs)."""
        today = dt.datetime.now(dt.UTC).date()
        end = until or today
        if not EARLIEST <= end <= today + dt.timedelta(days=1):
            raise errors.invalid_request(
                f"'until' must be a day between {EARLIEST} and tomorrow (UTC).", param="until"
            )
        if namespace is not None and not NAMESPACE.match(namespace):
            raise errors.invalid_request("'namespace' must be a namespace name or *.", param="namespace")
        token = presented_key(request.headers)
        if token and keys.well_formed(token):
            key = authenticate(request.headers, catalog, dt.datetime.now(dt.UTC))
            if namespace not in (None, key.namespace):
                raise errors.forbidden("An AI key reads only its own usage.", code="forbidden")
            alloc = catalog.allocation(key.namespace, key.allocation)
            known = catalog.keys.objects
            records = [] if alloc is None else await _ledger_call(collect(ledger, [alloc], end, days, known))
            return report(own(records, key), group_by, end, days, catalog.price)
        if not token:
            raise errors.unauthorized("Send an AI key, or a Kubernetes token with `namespace`.")
        person = await kubeauth.person(token)
        if not namespace:
            raise errors.invalid_request(
                "With a Kubernetes token, pass namespace=<name> (or * for all).", param="namespace"
            )
        await kubeauth.require_usage(person, "" if namespace == "*" else namespace)
        allocations = [a for (ns, _), a in catalog.allocations.objects.items() if namespace in ("*", ns)]
        records = await _ledger_call(collect(ledger, allocations, end, days, catalog.keys.objects))
        return report(records, group_by, end, days, catalog.price)

    return router

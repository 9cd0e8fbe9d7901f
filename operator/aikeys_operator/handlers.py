"""kopf registrations: thin adapters from events to `keys`, `allocations` and `providers`."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import logging
import os
from typing import Any

import kopf
import redis.exceptions

from aikeys import credentials, notices
from aikeys.kube import config as kubeconfig
from aikeys.kube.client import ApiError, Conflict, KubeClient, NotFound, resource_path
from aikeys.ledger.store import Ledger, LedgerUnavailable, connect
from aikeys.resources import GROUP, VERSION
from aikeys_operator import allocations, keys, metrics, providers
from aikeys_operator.config import Settings

log = logging.getLogger("aikeys.operator")
SETTINGS = Settings.from_env()
AIKEYS = (GROUP, VERSION, "aikeys")
ALLOCATIONS = (GROUP, VERSION, "allocations")
AIPROVIDERS = (GROUP, VERSION, "aiproviders")


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def plain(body: kopf.Body) -> dict[str, Any]:
    return copy.deepcopy(dict(body))


def post(body: kopf.Body, events: list[keys.Event]) -> None:
    for e in events:
        kopf.event(body, type=e.type, reason=e.reason, message=e.message)


# --- start-up -----------------------------------------------------------------------------------


@kopf.on.login()
async def login(**_: Any) -> kopf.ConnectionInfo:
    """The same credentials the rest of aikeys uses: kubeconfig (exec plugins, certificates, tokens,
    as kubectl) or the in-cluster service account. kopf logs in again when the API server says 401."""
    cfg = kubeconfig.load()
    scheme, _sep, token = (await cfg.authorization() or "").partition(" ")
    return kopf.ConnectionInfo(
        server=cfg.server,
        ca_path=str(cfg.ca_file) if cfg.ca_file else None,
        insecure=cfg.insecure,
        scheme=scheme or None,
        token=token or None,
        certificate_path=str(cfg.cert_file) if cfg.cert_file else None,
        private_key_path=str(cfg.key_file) if cfg.key_file else None,
        default_namespace=cfg.namespace,
    )


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # kopf's bookkeeping under our own prefix, not kopf.zalando.org
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.watching.server_timeout = SETTINGS.watch_server_timeout
    settings.watching.client_timeout = SETTINGS.watch_client_timeout
    settings.posting.level = logging.WARNING  # our events are explicit; routine logs stay logs
    cfg = kubeconfig.load()
    memo.kube = KubeClient(cfg, user_agent="aikeys-operator")
    memo.credentials = credentials.location(os.environ.get("POD_NAMESPACE") or cfg.namespace)
    memo.ledger = Ledger(connect(SETTINGS.redis_url)) if SETTINGS.redis_url else None
    metrics.serve(SETTINGS.metrics_port, SETTINGS.metrics_addr)
    if memo.ledger is None:
        log.warning("AIKEYS_REDIS_URL is not set: Allocation status will not be updated")


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await memo.kube.close()
    if memo.ledger is not None:
        await memo.ledger.client.aclose()


# --- AIKey --------------------------------------------------------------------------------------


@kopf.index(*AIKEYS)
def keys_by_allocation(
    namespace: str | None, name: str, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, **_: Any
) -> dict[tuple[str, str], allocations.KeyView]:
    ref = (spec.get("allocationRef") or {}).get("name", "")
    return {
        (namespace or "", ref): allocations.KeyView(
            name, meta.get("resourceVersion", ""), status.get("spend"), status.get("lastUsedAt")
        )
    }


@kopf.on.resume(*AIKEYS)
@kopf.on.create(*AIKEYS)
@kopf.on.update(*AIKEYS)
async def aikey_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    try:
        outcome = await keys.reconcile(plain(body), memo.kube, now(), SETTINGS.gateway_url)
        if outcome.status:
            await keys.write_status(memo.kube, plain(body), outcome.status)
    except keys.SecretConflict as err:
        kopf.event(body, type="Warning", reason="SecretConflict", message=str(err))
        raise kopf.TemporaryError(str(err), delay=30) from err
    except Conflict as err:  # changed under us: recompute from the new version
        raise kopf.TemporaryError("conflict, retrying", delay=0.2) from err
    post(body, outcome.events)
    _wake(memo)


def _wake(memo: kopf.Memo) -> asyncio.Event:
    """The per-object event that tells the clock daemon its deadlines may have moved."""
    event: asyncio.Event = memo.setdefault("wake", asyncio.Event())
    event.set()
    return event


@kopf.daemon(*AIKEYS, cancellation_timeout=1.0)
async def aikey_clock(body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any) -> None:
    """Time-driven changes (expiry, end of a rotation grace period), on the second.

    Sleeps until the next deadline; the change handler wakes it when deadlines may have moved.
    """
    wake = _wake(memo)
    meta = body["metadata"]
    url = resource_path("aikeys", meta["namespace"], meta["name"])
    while not stopped:
        wake.clear()
        fresh = await memo.kube.get_or_none(url)  # one read per change or deadline, never a poll
        if fresh is None:
            return
        outcome = await keys.reconcile(fresh, None, now())
        if outcome.status and (fresh.get("status") or {}).get("keyHash"):
            try:
                await keys.write_status(memo.kube, fresh, outcome.status)
                post(body, outcome.events)
            except (NotFound, Conflict):
                pass  # deleted, or changed: the next round reads it again
            except ApiError as err:
                log.warning("status update failed: %s", err)
                await asyncio.sleep(1.0)
            continue
        wait = 3600.0
        if outcome.next_deadline is not None:
            wait = max((outcome.next_deadline - now()).total_seconds(), 0.0) + 0.05
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=wait)


# --- Allocation ---------------------------------------------------------------------------------


@kopf.timer(*ALLOCATIONS, interval=SETTINGS.status_interval, initial_delay=0.0)
async def allocation_status(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    if memo.ledger is None:
        return
    meta = body["metadata"]
    index: kopf.Index[tuple[str, str], allocations.KeyView] = kwargs["keys_by_allocation"]
    views = list(index.get((meta["namespace"], meta["name"]), []))
    try:
        result = await allocations.refresh(plain(body), memo.ledger, views, now())
    except LedgerUnavailable as err:
        patch = allocations.unavailable(plain(body), f"Redis: {err}", now())
        if patch:
            await memo.kube.patch(
                resource_path("allocations", meta["namespace"], meta["name"], "status"),
                {"status": patch},
            )
        return
    if result.status:
        await memo.kube.patch(
            resource_path("allocations", meta["namespace"], meta["name"], "status"),
            {"status": result.status},
        )
    for key_name, patch in result.key_patches.items():
        with contextlib.suppress(NotFound):  # a key deleted since the index saw it
            await memo.kube.patch(
                resource_path("aikeys", meta["namespace"], key_name, "status"),
                {"status": patch},
            )
    if result.restored:
        metrics.LEDGER_RESTORES.labels(meta["namespace"], meta["name"]).inc()
        log.warning("ledger of allocation %s/%s restored from its status", meta["namespace"], meta["name"])
    post(body, result.events)


# --- AIProvider ---------------------------------------------------------------------------------


@kopf.on.resume(*AIPROVIDERS)
@kopf.on.create(*AIPROVIDERS)
@kopf.on.update(*AIPROVIDERS)
@kopf.timer(*AIPROVIDERS, interval=30.0, initial_delay=30.0)
async def aiprovider_status(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    meta = body["metadata"]
    result = await providers.refresh(plain(body), memo.kube, now(), memo.credentials)
    if result.status:
        await memo.kube.patch(
            resource_path("aiproviders", meta["namespace"], meta["name"], "status"),
            {"status": result.status},
        )
    post(body, result.events)
    if memo.ledger is None:
        return
    try:  # overruns the gateways reported (aikeys.notices), taken once: one event for all of them
        overruns = await notices.take(memo.ledger.client, meta["namespace"], meta["name"])
    except (redis.exceptions.RedisError, OSError) as err:
        log.warning("could not read overrun notices of %s/%s: %s", meta["namespace"], meta["name"], err)
        return
    event = providers.overrun_event(overruns)
    if event is not None:
        metrics.UPSTREAM_OVERRUNS.labels(meta["namespace"], meta["name"]).inc(len(overruns))
        post(body, [event])

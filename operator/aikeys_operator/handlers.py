"""kopf registrations: log in, start and stop the AIKey/Allocation controller, AIProvider handlers.

AIKeys and Allocations are not kopf handlers: at 100,000 keys kopf's per-object bookkeeping
(memory, a worker task per object on every listing, a daemon per key for its expiry) is what
cost the memory and the idle CPU. `aikeys_operator.controller` watches them itself with a few
hundred bytes per key, one timer for every deadline and status work that follows the ledger.
AIProviders (a handful) stay with kopf.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import logging
import os
import secrets
import socket
from typing import Any

import kopf
import redis.exceptions

from aikeys import credentials, notices
from aikeys.kube import config as kubeconfig
from aikeys.kube.client import KubeClient, resource_path
from aikeys.ledger.store import Ledger, connect
from aikeys.resources import GROUP, VERSION
from aikeys_operator import keys, metrics, providers
from aikeys_operator.config import Settings
from aikeys_operator.controller import Controller
from aikeys_operator.leader import LeaderElection

log = logging.getLogger("aikeys.operator")
SETTINGS = Settings.from_env()
NAMESPACES: tuple[str, ...] = ()  # set by main: the namespaces watched (empty: the whole cluster)
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
    namespace = SETTINGS.pod_namespace or cfg.namespace
    memo.credentials = credentials.location(SETTINGS.credentials_secret, namespace)
    memo.ledger = (
        Ledger(connect(SETTINGS.redis_url, password=SETTINGS.redis_password)) if SETTINGS.redis_url else None
    )
    metrics.serve(SETTINGS.metrics_port, SETTINGS.metrics_addr)
    if memo.ledger is None:
        log.warning("AIKEYS_REDIS_URL is not set: Allocation status will not be updated")
    memo.controller = None
    memo.election = None

    def lead() -> None:
        memo.controller = Controller(memo.kube, memo.ledger, SETTINGS, NAMESPACES)
        memo.controller.start()

    async def step_down() -> None:
        if memo.controller is not None:
            await memo.controller.stop()
            memo.controller = None

    if not SETTINGS.leader_election:
        lead()
        return
    identity = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    memo.election = LeaderElection(
        memo.kube,
        namespace,
        identity,
        duration=SETTINGS.lease_seconds,
        deadline=SETTINGS.lease_seconds * 2 / 3,
        retry=max(SETTINGS.lease_seconds / 7.5, 0.2),
    )
    metrics.LEADER.set_function(lambda: 1.0 if memo.election.leading else 0.0)
    memo.election_task = asyncio.create_task(memo.election.run(lead, step_down), name="aikeys-lease")


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if memo.election is not None:
        memo.election_task.cancel()  # steps down on the way out
        with contextlib.suppress(asyncio.CancelledError):
            await memo.election_task
        await memo.election.release()
    elif memo.controller is not None:
        await memo.controller.stop()
    await memo.kube.close()
    if memo.ledger is not None:
        await memo.ledger.client.aclose()


# --- AIKeys and Allocations: aikeys_operator.controller (one watch each, not a task per object) ---
# With AIKEYS_LEADER_ELECTION, only the replica holding the Lease runs it (aikeys_operator.leader).

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

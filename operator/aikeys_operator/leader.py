"""Leader election with a coordination.k8s.io/v1 Lease, the way client-go's leaderelection does it,
so two operator replicas can run and only one works on AIKeys and Allocations.

Every `retry` seconds each replica reads the Lease. The holder renews it (a PUT conditional on the
Lease's resourceVersion); the others take it over only once it has not changed for `duration`
seconds by their own clock (never by comparing timestamps written by another machine). A holder
that could not renew for `deadline` seconds (< `duration`) stops leading before anyone else can
start. A replica that stops cleanly gives the Lease up, so the other takes over at once.

What a failover costs: the new leader lists everything and sweeps every key once; a key whose
Secret the old leader wrote but whose status it did not is adopted, never minted again (the status
write is conditional on the resourceVersion the old leader may have moved).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aikeys.kube.client import Conflict, KubeClient, path

log = logging.getLogger("aikeys.operator")
LEASES = "coordination.k8s.io/v1"


def micro(moment: dt.datetime) -> str:
    """A Lease's MicroTime."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElection:
    def __init__(
        self,
        kube: KubeClient,
        namespace: str,
        identity: str,
        name: str = "aikeys-operator",
        *,
        duration: float = 15.0,
        deadline: float = 10.0,
        retry: float = 2.0,
    ):
        self.kube = kube
        self.url = path(LEASES, "leases", namespace, name)
        self.collection = path(LEASES, "leases", namespace)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.duration, self.deadline, self.retry = duration, deadline, retry
        self.leading = False
        self.renewed = 0.0  # monotonic time of our last successful acquire/renew
        self._observed: tuple[Any, ...] | None = None  # holder, renewTime, resourceVersion
        self._observed_at = 0.0
        self.transitions = 0

    def _spec(self, old: dict[str, Any] | None, now: dt.datetime) -> dict[str, Any]:
        ours = (old or {}).get("holderIdentity") == self.identity
        transitions = int((old or {}).get("leaseTransitions") or 0)
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.duration)),
            "acquireTime": (old or {}).get("acquireTime") if ours else micro(now),
            "renewTime": micro(now),
            "leaseTransitions": transitions if ours or old is None else transitions + 1,
        }

    async def try_acquire_or_renew(self) -> bool:
        now = dt.datetime.now(dt.UTC)
        lease = await self.kube.get_or_none(self.url)
        if lease is None:
            body = {
                "apiVersion": LEASES,
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(None, now),
            }
            try:
                await self.kube.create(self.collection, body)
            except Conflict:
                return False  # another replica created it first
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        record = (holder, spec.get("renewTime"), lease["metadata"].get("resourceVersion"))
        if record != self._observed:
            self._observed, self._observed_at = record, time.monotonic()
        held = bool(holder) and holder != self.identity
        if held and time.monotonic() - self._observed_at < self.duration:
            return False  # someone else leads, and renewed within the lease's duration
        lease["spec"] = self._spec(spec, now)
        try:
            await self.kube.replace(self.url, lease)
        except Conflict:
            return False  # changed under us: someone renewed or took it
        if held:
            log.info("took over the lease %s/%s from %s", self.namespace, self.name, holder)
        return True

    async def run(self, start: Callable[[], None], stop: Callable[[], Awaitable[None]]) -> None:
        """Campaign for ever: `start` when we become the leader, `stop` when we stop being it."""
        try:
            while True:
                try:
                    ok = await self.try_acquire_or_renew()
                except asyncio.CancelledError:
                    raise
                except Exception as err:  # the API server is away: we cannot know; keep what we had
                    log.warning("lease %s/%s: %s: %s", self.namespace, self.name, type(err).__name__, err)
                    ok = False
                now = time.monotonic()
                if ok:
                    self.renewed = now
                    if not self.leading:
                        self.leading = True
                        self.transitions += 1
                        log.info("leading (lease %s/%s, %s)", self.namespace, self.name, self.identity)
                        start()
                elif self.leading and now - self.renewed > self.deadline:
                    self.leading = False
                    log.warning("lost the lease %s/%s: stepping down", self.namespace, self.name)
                    await stop()
                await asyncio.sleep(self.retry)
        finally:
            if self.leading:
                self.leading = False
                await stop()

    async def release(self) -> None:
        """Give the lease up (a clean shutdown): the other replica takes over at once."""
        try:
            lease = await self.kube.get_or_none(self.url)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"].update({"holderIdentity": None, "leaseDurationSeconds": 1})
            await self.kube.replace(self.url, lease)
        except Exception as err:  # it expires by itself anyway
            log.warning("lease %s/%s not released: %s", self.namespace, self.name, err)

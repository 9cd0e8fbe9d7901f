"""AIKeys and Allocations at scale: one watch each, one timer for every deadline, status work
that follows what was charged.

The operator keeps a few hundred bytes per AIKey (`KeyRecord`: its allocation, resourceVersion,
the spend and last use its status shows), never the object. An AIKey event is assessed on the
spot (`keys.assess`, pure, ~20 µs): a key to mint or a status to correct goes into the
`WorkQueue`, its next deadline (expiry, end of a rotation grace) into `Deadlines`. Workers take
keys from the queue (urgent ones first: an expiry, a disable or a rotation never waits behind a
burst of new keys), reconcile and write (`keys.reconcile`: Secret first, then status,
conditional on the resourceVersion, so a crash or a second replica never mints twice).

`StatusLoop` looks at the ledger every `AIKEYS_STATUS_INTERVAL` seconds in one pipelined round
trip: every allocation's period counters, and the keys charged since the last look (the ledger's
`dirty` set, which the settle script writes). An allocation whose counters did not move costs
nothing more; only the keys charged are read (two HMGETs per allocation) and patched. Every
key is compared with the ledger once after start (a previous run may have taken keys from the
dirty set without writing them) and once when a period begins. Patches go through the
`StatusWriter`, coalesced and bounded to `AIKEYS_STATUS_WRITES_PER_SECOND`. The ledger knows a
key by its uid, never its name: a new key named like a deleted one shows none of its spend.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pydantic

from aikeys.kube.client import Conflict, KubeClient, NotFound, path, resource_path
from aikeys.ledger import specs
from aikeys.ledger.store import Allocation, Changes, Ledger, LedgerUnavailable
from aikeys.periods import window
from aikeys.resources import API_VERSION, AllocationSpec
from aikeys_operator import allocations, keys, metrics
from aikeys_operator.config import Settings
from aikeys_operator.events import Poster
from aikeys_operator.schedule import Deadlines, WorkQueue
from aikeys_operator.watching import Key, Watch, key_of
from aikeys_operator.writer import StatusWriter

log = logging.getLogger("aikeys.operator")
JSON = dict[str, Any]
PIPELINE = 1000  # allocations per ledger round trip


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def older(rv: str, than: str) -> bool:
    """Whether resourceVersion `rv` is older than `than` (an event from before our own write)."""
    return rv.isdigit() and than.isdigit() and int(rv) < int(than)


@dataclass(slots=True)
class KeyRecord:
    allocation: str
    resource_version: str
    spend: str | None
    last_used_at: str | None
    uid: str  # what the ledger counts the key by


@dataclass(slots=True)
class AllocationRecord:
    body: JSON  # apiVersion, kind, metadata (name, namespace, uid, resourceVersion, generation), spec, status
    spec: AllocationSpec
    ledger: Allocation


class Keys:
    """The AIKey side: the slim index, the work queue and its workers, the deadlines."""

    def __init__(self, kube: KubeClient, poster: Poster, settings: Settings):
        self.kube = kube
        self.poster = poster
        self.settings = settings
        self.records: dict[Key, KeyRecord] = {}
        self.by_allocation: dict[Key, dict[str, str]] = {}  # (namespace, allocation) → key uid → name
        self.latest: dict[Key, JSON] = {}  # the newest object of each key waiting in the queue
        self.queue: WorkQueue[Key] = WorkQueue()
        self.deadlines: Deadlines[Key] = Deadlines(lambda key: self.queue.add(key, urgent=True))
        self.failures: dict[Key, int] = {}
        self.minted = 0
        self.worked = 0
        self.on_removed: list[Any] = []  # callbacks(key) when a key goes away

    # --- the index ------------------------------------------------------------------------------

    def record(self, obj: JSON, known_only: bool = False) -> Key | None:
        """Remember what the operator needs of `obj`; None for an event older than what we have.
        `known_only`: an object our own write returned, remembered only if its key was not deleted
        meanwhile (else it would linger until the next list)."""
        meta = obj["metadata"]
        key = (sys.intern(meta.get("namespace", "")), meta["name"])
        rv = meta.get("resourceVersion", "")
        old = self.records.get(key)
        if (old is None and known_only) or (old is not None and older(rv, old.resource_version)):
            return None
        alloc = sys.intern(((obj.get("spec") or {}).get("allocationRef") or {}).get("name", ""))
        uid = meta.get("uid") or ""
        status = obj.get("status") or {}
        if old is None or old.allocation != alloc or old.uid != uid:  # moved, or deleted and created anew
            if old is not None:
                self._unindex(key, old)
            self.by_allocation.setdefault((key[0], alloc), {})[uid] = key[1]
        self.records[key] = KeyRecord(alloc, rv, status.get("spend"), status.get("lastUsedAt"), uid)
        return key

    def _unindex(self, key: Key, record: KeyRecord) -> None:
        uids = self.by_allocation.get((key[0], record.allocation))
        if uids is not None:
            uids.pop(record.uid, None)
            if not uids:
                del self.by_allocation[(key[0], record.allocation)]

    def remove(self, key: Key) -> None:
        record = self.records.pop(key, None)
        if record is not None:
            self._unindex(key, record)
        self.deadlines.discard(key)
        self.queue.forget(key)
        self.latest.pop(key, None)
        self.failures.pop(key, None)
        for callback in self.on_removed:
            callback(key)

    def on_event(self, kind: str, obj: JSON) -> None:
        if kind == "DELETED":
            self.remove(key_of(obj))
            return
        key = self.record(obj)
        if key is None:
            return
        try:
            assessment = keys.assess(obj, utcnow())
        except pydantic.ValidationError:  # the worker says why, in status and an event
            assessment = keys.Assessment(True, True, None)
        if assessment.work:
            self.latest[key] = obj
            self.queue.add(key, assessment.urgent)
        self._deadline(key, assessment.deadline)

    def listed(self, seen: set[Key], namespace: str | None) -> None:
        """After a complete list: forget the keys deleted while we were not watching."""
        for key in [k for k in self.records if namespace is None or k[0] == namespace]:
            if key not in seen:
                self.remove(key)

    def _deadline(self, key: Key, moment: dt.datetime | None) -> None:
        # a hair after the moment: the phase flips at `expires_at <= now`
        self.deadlines.set(key, None if moment is None else moment.timestamp() + 0.01)

    def _retry(self, key: Key, delay: float) -> None:
        self.deadlines.set(key, time.time() + delay)

    # --- the work ---------------------------------------------------------------------------------

    async def worker(self) -> None:
        while True:
            key = await self.queue.get()
            try:
                await self.work(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("AIKey %s/%s: unexpected error", *key)
                self._backoff(key)
            finally:
                self.queue.done(key)

    def _backoff(self, key: Key) -> None:
        n = self.failures[key] = self.failures.get(key, 0) + 1
        self._retry(key, min(0.5 * 2**n, 60.0))

    async def work(self, key: Key) -> None:
        obj = self.latest.pop(key, None)
        record = self.records.get(key)
        if obj is None:  # a deadline, or a retry: read it
            obj = await self.kube.get_or_none(resource_path("aikeys", *key))
            if obj is None:
                self.remove(key)
                return
        elif record is not None and older(obj["metadata"]["resourceVersion"], record.resource_version):
            return  # queued before our own write (a mint writes status twice): the newer one is assessed
        self.worked += 1
        await self._reconcile(key, obj)

    async def _reconcile(self, key: Key, obj: JSON) -> None:
        try:
            try:
                outcome = await keys.reconcile(obj, self.kube, utcnow(), self.settings.gateway_url)
            except pydantic.ValidationError as err:
                outcome = keys.invalid(obj, keys.unreadable(err), utcnow())
            except ArithmeticError as err:  # a value no bound foresaw: say so once, do not retry
                problem = f"the status cannot be computed from the spec ({type(err).__name__}: {err})"
                outcome = keys.invalid(obj, problem, utcnow())
            if outcome.status:
                written = await keys.write_status(self.kube, outcome.base or obj, outcome.status)
                self.record(written, known_only=True)
        except keys.SecretConflict as err:
            self.poster.post(obj, [keys.Event("Warning", "SecretConflict", str(err))])
            self._retry(key, 30.0)
            return
        except Conflict:  # changed under us: its event is on the way; look again shortly anyway
            self._retry(key, 1.0)
            return
        except NotFound:
            self.remove(key)
            return
        except Exception as err:  # the API server is away or refused: back off
            log.warning("AIKey %s/%s: %s: %s", *key, type(err).__name__, err)
            self._backoff(key)
            return
        if any(e.reason in ("Minted", "Rotated") for e in outcome.events):
            self.minted += 1
        self.failures.pop(key, None)
        self.poster.post(obj, outcome.events)
        self._deadline(key, outcome.next_deadline)

    def spends(self, alloc: Key, writer: StatusWriter) -> Iterable[tuple[str, str | None]]:
        """(uid, spend) of an allocation's keys, as their status shows or is about to."""
        for uid, name in self.by_allocation.get(alloc, {}).items():
            record = self.records.get((alloc[0], name))
            if record is not None:
                pending = writer.pending("aikeys", (alloc[0], name)) or {}
                yield uid, pending.get("spend", record.spend)


class Allocations:
    """The Allocation side: a small index of trimmed objects (there are few of them)."""

    def __init__(self) -> None:
        self.records: dict[Key, AllocationRecord] = {}
        self.on_removed: list[Any] = []

    def on_event(self, kind: str, obj: JSON) -> None:
        key = key_of(obj)
        if kind == "DELETED":
            self.remove(key)
            return
        meta = obj["metadata"]
        old = self.records.get(key)
        if old is not None and older(
            meta.get("resourceVersion", ""), old.body["metadata"]["resourceVersion"]
        ):
            return
        try:
            spec = AllocationSpec.model_validate(obj.get("spec") or {})
        except pydantic.ValidationError as err:
            log.error("Allocation %s/%s cannot be read: %s", *key, err)
            return
        body = {
            "apiVersion": obj.get("apiVersion", API_VERSION),
            "kind": obj.get("kind", "Allocation"),
            "metadata": {
                k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "generation") if k in meta
            },
            "spec": obj.get("spec") or {},
            "status": obj.get("status") or {},
        }
        self.records[key] = AllocationRecord(body, spec, specs.allocation(*key, spec))

    def remove(self, key: Key) -> None:
        if self.records.pop(key, None) is not None:
            for callback in self.on_removed:
                callback(key)

    def listed(self, seen: set[Key], namespace: str | None) -> None:
        for key in [k for k in self.records if namespace is None or k[0] == namespace]:
            if key not in seen:
                self.remove(key)


class StatusLoop:
    def __init__(
        self,
        ledger: Ledger,
        keys_: Keys,
        allocs: Allocations,
        writer: StatusWriter,
        poster: Poster,
        settings: Settings,
    ):
        self.ledger = ledger
        self.keys = keys_
        self.allocs = allocs
        self.writer = writer
        self.poster = poster
        self.settings = settings
        self.seen: dict[Key, tuple[Any, ...]] = {}  # what each allocation's status was computed from
        self.period: dict[Key, str] = {}  # the period each allocation's keys were last swept in
        self.carry: dict[Key, set[str]] = {}  # keys (uids) taken from the ledger, not yet compared
        self.rounds = 0
        self.keys_compared = 0
        allocs.on_removed.append(self._forget)

    def _forget(self, key: Key) -> None:
        self.seen.pop(key, None)
        self.period.pop(key, None)
        self.carry.pop(key, None)
        self.writer.forget("allocations", key)

    def _overlay(self, key: Key, record: AllocationRecord) -> JSON:
        """The allocation as its status will be once the queued patch is written."""
        pending = self.writer.pending("allocations", key)
        if not pending:
            return record.body
        return {**record.body, "status": {**record.body["status"], **pending}}

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.refresh(utcnow())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("status refresh failed")
            self.rounds += 1
            await asyncio.sleep(max(0.0, self.settings.status_interval - (time.monotonic() - started)))

    async def refresh(self, now: dt.datetime) -> None:
        items = list(self.allocs.records.items())
        for i in range(0, len(items), PIPELINE):
            await self._refresh(items[i : i + PIPELINE], now)

    async def _refresh(self, items: list[tuple[Key, AllocationRecord]], now: dt.datetime) -> None:
        try:
            changes = await self.ledger.changes([r.ledger for _, r in items], now)
        except LedgerUnavailable as err:
            for key, record in items:
                self.seen.pop(key, None)
                patch = allocations.unavailable(self._overlay(key, record), f"Redis: {err}", now)
                self.writer.put("allocations", key, patch)
            return
        wanted: list[tuple[Key, Allocation, list[str]]] = []
        for (key, record), change in zip(items, changes, strict=True):
            dirty = await self._allocation(key, record, change, now)
            if dirty:
                wanted.append((key, record.ledger, sorted(dirty)))
        if wanted:
            await self._keys(wanted, now)

    async def _allocation(
        self, key: Key, record: AllocationRecord, change: Changes, now: dt.datetime
    ) -> set[str]:
        """Refresh one allocation's status if what it shows moved; returns its keys (uids) to compare."""
        dirty = self.carry.pop(key, set())
        dirty.update(change.keys)
        period = window(record.spec.period, now).id
        uids = self.keys.by_allocation.get(key, {})
        if self.period.get(key) != period:  # first look since start, or a new period
            dirty.update(uids)
            self.period[key] = period
        seen = (period, change.state, len(uids), record.body["metadata"].get("resourceVersion"))
        if self.seen.get(key) == seen:
            return dirty
        try:
            result = await allocations.refresh(
                self._overlay(key, record),
                self.ledger,
                len(uids),
                now,
                change.state,
                lambda: self.keys.spends(key, self.writer),
            )
        except LedgerUnavailable:
            self.carry[key] = dirty
            return set()
        self.writer.put("allocations", key, result.status)
        self.poster.post(record.body, result.events)
        if result.restored:
            metrics.LEDGER_RESTORES.labels(*key).inc()
            log.warning("ledger of allocation %s/%s restored from its status", *key)
        dirty.update(result.restored_keys)
        self.seen[key] = seen
        return dirty

    async def _keys(self, wanted: list[tuple[Key, Allocation, list[str]]], now: dt.datetime) -> None:
        """Compare the keys charged (or due a sweep) with the ledger; queue what moved."""
        try:
            uses = await self.ledger.key_use([(a, names) for _, a, names in wanted], now)
        except LedgerUnavailable:
            for key, _, names in wanted:
                self.carry.setdefault(key, set()).update(names)
            return
        granularity = self.settings.last_used_granularity
        for (alloc_key, _, uids), found in zip(wanted, uses, strict=True):
            index = self.keys.by_allocation.get(alloc_key, {})
            for uid in uids:
                name = index.get(uid)
                if name is None:
                    continue  # deleted (another key may have its name), or moved to another allocation
                key = (alloc_key[0], name)
                record_ = self.keys.records[key]
                pending = self.writer.pending("aikeys", key) or {}
                patch = allocations.key_patch(
                    pending.get("spend", record_.spend),
                    pending.get("lastUsedAt", record_.last_used_at),
                    found[uid],
                    granularity,
                )
                self.writer.put("aikeys", key, patch)
                self.keys_compared += 1


class Controller:
    """Everything above, started and stopped together (by the kopf startup and cleanup handlers)."""

    def __init__(
        self,
        kube: KubeClient,
        ledger: Ledger | None,
        settings: Settings,
        namespaces: tuple[str, ...] = (),
    ):
        self.kube = kube
        self.ledger = ledger
        self.settings = settings
        self.poster = Poster(kube)
        self.keys = Keys(kube, self.poster, settings)
        self.allocs = Allocations()
        self.writer = StatusWriter(kube, settings.status_writes_per_second, on_written=self._written)
        self.keys.on_removed.append(lambda key: self.writer.forget("aikeys", key))
        self.status = (
            StatusLoop(ledger, self.keys, self.allocs, self.writer, self.poster, settings) if ledger else None
        )
        scopes: list[str | None] = list(namespaces) or [None]
        self.watches = [
            *(
                Watch(
                    kube,
                    "AIKey",
                    path(API_VERSION, "aikeys", ns),
                    self.keys.on_event,
                    lambda seen, ns=ns: self.keys.listed(seen, ns),  # type: ignore[misc]
                    watch_timeout=settings.watch_server_timeout,
                )
                for ns in scopes
            ),
            *(
                Watch(
                    kube,
                    "Allocation",
                    path(API_VERSION, "allocations", ns),
                    self.allocs.on_event,
                    lambda seen, ns=ns: self.allocs.listed(seen, ns),  # type: ignore[misc]
                    watch_timeout=settings.watch_server_timeout,
                )
                for ns in scopes
            ),
        ]
        self.started = time.monotonic()
        self.ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def _written(self, kind: str, key: Key, obj: JSON) -> None:
        if kind == "aikeys":
            self.keys.record(obj, known_only=True)
        elif key in self.allocs.records:
            self.allocs.on_event("MODIFIED", obj)

    async def _when_ready(self) -> None:
        """Ready: every watch has listed, and the keys that needed work have had it. The status
        loop starts once the index is complete (its first round compares every key)."""
        for watch in self.watches:
            await watch.synced.wait()
        if self.status is not None:
            self._spawn(self.status.run(), "status")
        await self.keys.queue.drained()
        seconds = time.monotonic() - self.started
        self.ready.set()
        log.info(
            "ready in %.1fs: %d AIKeys (%d reconciled), %d Allocations",
            seconds,
            len(self.keys.records),
            self.keys.worked,
            len(self.allocs.records),
        )

    def _readings(self) -> metrics.Readings:
        return metrics.Readings(
            ready=self.ready.is_set,
            aikeys=lambda: len(self.keys.records),
            allocations=lambda: len(self.allocs.records),
            work_queue=lambda: len(self.keys.queue),
            deadlines=lambda: len(self.keys.deadlines),
            backlog=self.writer.backlog,
            lag=self.writer.lag,
            minted=lambda: self.keys.minted,
            status_writes=lambda: self.writer.written,
            keys_compared=lambda: self.status.keys_compared if self.status else 0,
            rounds=lambda: self.status.rounds if self.status else 0,
        )

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=f"aikeys-{name}"))

    def start(self) -> None:
        metrics.observe(self._readings())
        self._spawn(self.poster.run(), "events")
        self._spawn(self.keys.deadlines.run(), "deadlines")
        for i in range(self.settings.key_workers):
            self._spawn(self.keys.worker(), f"key-worker-{i}")
        self._spawn(self.writer.run(), "status-writer")
        for watch in self.watches:
            self._spawn(watch.run(), f"watch-{watch.kind}")
        self._spawn(self._when_ready(), "ready")

    async def stop(self) -> None:
        self.ready.clear()
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

"""List + watch caches of Kubernetes objects, without an API call on the request path.

An `Informer` lists a collection, then watches from the list's resourceVersion with bookmarks.
When the server says 410 Gone (our resourceVersion is too old) it relists and swaps the whole
cache at once, so objects deleted during the gap disappear too. Connection errors are retried
with jittered exponential backoff. Objects are trimmed by a `convert` function before they are
stored (no managedFields, only what the gateway needs).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from aikeys.kube.client import ApiError, KubeClient

log = logging.getLogger("aikeys.gateway.informers")
T = TypeVar("T")
Key = tuple[str, str]  # (namespace, name)


class Informer(Generic[T]):
    def __init__(
        self,
        kube: KubeClient,
        kind: str,
        url_path: str,
        convert: Callable[[dict[str, Any]], T],
        on_change: Callable[[Key, T | None, T | None], None] | None = None,
        on_relist: Callable[[dict[Key, T]], None] | None = None,
        *,
        field_selector: str | None = None,
        watch_timeout: int = 300,
        page: int = 500,
    ):
        self.kube = kube
        self.kind = kind
        self.url_path = url_path
        self.convert = convert
        self.on_change = on_change
        self.on_relist = on_relist
        self.params = {"fieldSelector": field_selector} if field_selector else {}
        self.watch_timeout = watch_timeout
        self.page = page
        self.objects: dict[Key, T] = {}
        self.synced = asyncio.Event()
        self.relists = 0
        self.errors = 0
        self.resource_version = ""

    @staticmethod
    def key_of(obj: dict[str, Any]) -> Key:
        meta = obj["metadata"]
        return meta.get("namespace", ""), meta["name"]

    def _convert(self, obj: dict[str, Any]) -> T | None:
        try:
            return self.convert(obj)
        except Exception:  # an object we cannot use must not stop the cache
            log.warning("ignoring malformed %s %s", self.kind, self.key_of(obj), exc_info=True)
            return None

    async def relist(self) -> None:
        """List in pages (`limit`/`continue`: one page of full objects in memory at a time, not
        100,000), converting each object as it comes."""
        fresh: dict[Key, T] = {}
        cont = ""
        while True:
            params = {**self.params, "limit": str(self.page), **({"continue": cont} if cont else {})}
            listing = await self.kube.get(self.url_path, params=params)
            for obj in listing.get("items", []):
                value = self._convert(obj)
                if value is not None:
                    fresh[self.key_of(obj)] = value
            cont = listing["metadata"].get("continue") or ""
            if not cont:
                break
        self.objects = fresh  # one assignment: readers see the old or the new cache, never a mix
        self.resource_version = listing["metadata"]["resourceVersion"]
        self.relists += 1
        if self.on_relist is not None:
            self.on_relist(fresh)
        self.synced.set()

    def apply(self, event: dict[str, Any]) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if rv:
            self.resource_version = rv
        if kind == "BOOKMARK":
            return
        key = self.key_of(obj)
        old = self.objects.get(key)
        if kind == "DELETED":
            new = None
            self.objects.pop(key, None)
        else:
            new = self._convert(obj)
            if new is None:
                self.objects.pop(key, None)
            else:
                self.objects[key] = new
        if self.on_change is not None:
            self.on_change(key, old, new)

    async def run(self) -> None:
        """List, then watch for ever; relist on 410 Gone; back off on errors."""
        backoff = 0.1
        need_list = not (self.synced.is_set() and self.resource_version)  # resume a cache we already have
        while True:
            try:
                if need_list:
                    await self.relist()
                    need_list = False
                async for event in self.kube.watch(
                    self.url_path,
                    self.resource_version,
                    timeout_seconds=self.watch_timeout,
                    params=self.params,
                ):
                    if event.get("type") == "ERROR":
                        status = event.get("object") or {}
                        if status.get("code") == 410:
                            log.info("%s watch expired (410 Gone): relisting", self.kind)
                            need_list = True
                            break
                        raise ApiError(
                            int(status.get("code") or 500),
                            status.get("reason", ""),
                            status.get("message", ""),
                            status,
                        )
                    self.apply(event)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except ApiError as err:
                self.errors += 1
                if err.status == 410:
                    need_list = True
                    continue
                log.warning("%s informer: %s; retrying in %.1fs", self.kind, err, backoff)
                await asyncio.sleep(backoff * random.uniform(0.5, 1.5))  # noqa: S311 - jitter
                backoff = min(backoff * 2, 10.0)
            except Exception as err:  # connection refused, reset, timeouts: the apiserver is away
                self.errors += 1
                log.warning(
                    "%s informer: %s: %s; retrying in %.1fs", self.kind, type(err).__name__, err, backoff
                )
                await asyncio.sleep(backoff * random.uniform(0.5, 1.5))  # noqa: S311 - jitter
                backoff = min(backoff * 2, 10.0)

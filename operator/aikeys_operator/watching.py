"""List + watch one collection for ever, handing each object to a callback (the caller keeps what
it needs of it: the operator never holds 100,000 full objects).

The list is paged (`limit`/`continue`), so a big collection costs one page of memory at a time,
then a watch from the list's resourceVersion with bookmarks. 410 Gone (too old a
resourceVersion, or an expired continue token) lists again; after every complete list
`on_listed` gets the keys seen, so the caller can drop objects deleted while it was not looking.
Connection errors are retried with jittered exponential backoff.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from aikeys.kube.client import ApiError, KubeClient

log = logging.getLogger("aikeys.operator")
Key = tuple[str, str]  # (namespace, name)
JSON = dict[str, Any]


def key_of(obj: JSON) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace", ""), meta["name"]


class Watch:
    def __init__(
        self,
        kube: KubeClient,
        kind: str,
        url_path: str,
        on_event: Callable[[str, JSON], None],
        on_listed: Callable[[set[Key]], Awaitable[None] | None] | None = None,
        *,
        page: int = 500,
        watch_timeout: int = 300,
    ):
        self.kube = kube
        self.kind = kind
        self.url_path = url_path
        self.on_event = on_event
        self.on_listed = on_listed
        self.page = page
        self.watch_timeout = watch_timeout
        self.resource_version = ""
        self.synced = asyncio.Event()
        self.lists = 0
        self.errors = 0

    def _deliver(self, kind: str, obj: JSON) -> None:
        try:
            self.on_event(kind, obj)
        except Exception:  # one object we cannot handle must not stop the others
            log.exception("%s %s: handling a %s event failed", self.kind, key_of(obj), kind)

    async def list(self) -> None:
        seen: set[Key] = set()
        cont = ""
        while True:
            params = {"limit": str(self.page), **({"continue": cont} if cont else {})}
            listing = await self.kube.get(self.url_path, params=params)
            for obj in listing.get("items") or []:
                seen.add(key_of(obj))
                self._deliver("ADDED", obj)
            cont = listing["metadata"].get("continue") or ""
            if not cont:
                self.resource_version = listing["metadata"]["resourceVersion"]
                break
            await asyncio.sleep(0)  # let the rest of the operator run between pages
        self.lists += 1
        if self.on_listed is not None:
            result = self.on_listed(seen)
            if result is not None:
                await result
        self.synced.set()

    async def run(self) -> None:
        backoff = 0.1
        need_list = True
        while True:
            try:
                if need_list:
                    await self.list()
                    need_list = False
                async for event in self.kube.watch(
                    self.url_path, self.resource_version, timeout_seconds=self.watch_timeout
                ):
                    kind, obj = event.get("type", ""), event.get("object") or {}
                    if kind == "ERROR":
                        code = int(obj.get("code") or 500)
                        if code == 410:
                            log.info("%s watch expired (410 Gone): listing again", self.kind)
                            need_list = True
                            break
                        raise ApiError(code, obj.get("reason", ""), obj.get("message", ""), obj)
                    rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if rv:
                        self.resource_version = rv
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        self._deliver(kind, obj)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except ApiError as err:
                self.errors += 1
                if err.status == 410:
                    need_list = True
                    continue
                log.warning("%s watch: %s; retrying in %.1fs", self.kind, err, backoff)
                await asyncio.sleep(backoff * random.uniform(0.5, 1.5))  # noqa: S311 - jitter
                backoff = min(backoff * 2, 10.0)
            except Exception as err:  # connection refused or reset, timeouts: the API server is away
                self.errors += 1
                log.warning(
                    "%s watch: %s: %s; retrying in %.1fs", self.kind, type(err).__name__, err, backoff
                )
                await asyncio.sleep(backoff * random.uniform(0.5, 1.5))  # noqa: S311 - jitter
                backoff = min(backoff * 2, 10.0)

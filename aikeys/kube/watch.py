"""List + watch one collection for ever: the engine under the gateway's informers and the
operator's watches, so paging, resuming and recovering are written once.

A list is paged (`limit`/`continue`: one page of full objects in memory at a time, not 100,000),
then a watch runs from the list's resourceVersion with bookmarks, so a quiet collection does not
fall behind the server's history. 410 Gone (too old a resourceVersion, or an expired continue
token) lists again; any other failure (the API server away, a 5xx) is retried with jittered
exponential backoff, from where the watch was. The API server's own requests to wait
(`Retry-After`) are honoured below, in the client.

What to keep of the objects is the subclass's business: it is told when a list begins
(`_list_began`), each object listed (`_listed`), when the list is complete (`_list_ended`, where it
can drop what the list no longer showed) and each change the watch reports (`_changed`).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from typing import Any

from aikeys.kube.client import ApiError, KubeClient

JSON = dict[str, Any]
Key = tuple[str, str]  # (namespace, name); "" for cluster-scoped objects
CHANGES = ("ADDED", "MODIFIED", "DELETED")  # what a watch reports besides BOOKMARK and ERROR


def key_of(obj: JSON) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace", ""), meta["name"]


def page_params(params: Mapping[str, str], page: int, cont: str) -> dict[str, str]:
    """The query of one page of a list: the caller's own (a field selector), the page size, and
    where the previous page ended."""
    return {**params, "limit": str(page), **({"continue": cont} if cont else {})}


def status_error(status: JSON) -> ApiError:
    """The Status object of a watch's ERROR event as the error a request would have raised."""
    return ApiError(
        int(status.get("code") or 500), status.get("reason", ""), status.get("message", ""), status
    )


class Backoff:
    """Waits between failed attempts: doubling from `first` up to `most`, each jittered ±50 % so
    that many watchers cut off together do not come back together."""

    def __init__(self, first: float = 0.1, most: float = 10.0, rng: random.Random | None = None):
        self.first = first
        self.most = most
        self.current = first
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrecy

    def next(self) -> tuple[float, float]:
        """(the nominal wait, the jittered one to sleep), and doubles the next one."""
        nominal = self.current
        self.current = min(self.current * 2, self.most)
        return nominal, nominal * self._rng.uniform(0.5, 1.5)

    def reset(self) -> None:
        self.current = self.first


class ListWatch:
    """One collection listed and watched; `run()` until cancelled.

    `synced` is set after the first complete list, `lists` counts complete lists, `errors` the
    failures retried, `resource_version` is where a watch resumes (a list already held is resumed,
    not listed again, when `run()` starts)."""

    def __init__(
        self,
        kube: KubeClient,
        kind: str,
        url_path: str,
        *,
        params: Mapping[str, str] | None = None,
        page: int = 500,
        watch_timeout: int = 300,
        log: logging.Logger | None = None,
        what: str = "watch",
    ):
        self.kube = kube
        self.kind = kind
        self.url_path = url_path
        self.params = dict(params or {})
        self.page = page
        self.watch_timeout = watch_timeout
        self.log = log or logging.getLogger("aikeys.kube.watch")
        self.what = what  # how log lines name this watcher: "AIKey informer", "AIKey watch"
        self.resource_version = ""
        self.synced = asyncio.Event()
        self.lists = 0
        self.errors = 0

    # --- what a subclass keeps ------------------------------------------------------------------

    def _list_began(self) -> None:
        """A list starts: begin collecting afresh."""

    def _listed(self, obj: JSON) -> None:
        """One object of the list."""

    async def _list_ended(self) -> None:
        """The list is complete (`resource_version` is its own)."""

    def _changed(self, kind: str, obj: JSON) -> None:
        """One change the watch reported: ADDED, MODIFIED or DELETED."""

    # --- the engine -----------------------------------------------------------------------------

    async def list(self) -> None:
        """List the whole collection, page by page, yielding to the event loop between pages."""
        self._list_began()
        cont = ""
        while True:
            listing = await self.kube.get(self.url_path, params=page_params(self.params, self.page, cont))
            for obj in listing.get("items") or []:
                self._listed(obj)
            cont = listing["metadata"].get("continue") or ""
            if not cont:
                break
            await asyncio.sleep(0)
        self.resource_version = listing["metadata"]["resourceVersion"]
        self.lists += 1
        await self._list_ended()
        self.synced.set()

    def apply(self, event: JSON) -> None:
        """One watch event (not an ERROR): note where it leaves us, hand a change on."""
        kind, obj = event.get("type", ""), event.get("object") or {}
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if rv:
            self.resource_version = rv
        if kind in CHANGES:
            self._changed(kind, obj)

    async def watch(self) -> bool:
        """Watch from `resource_version` until the server ends the watch; True when it said 410
        Gone (list again)."""
        async for event in self.kube.watch(
            self.url_path, self.resource_version, timeout_seconds=self.watch_timeout, params=self.params
        ):
            if event.get("type") == "ERROR":
                err = status_error(event.get("object") or {})
                if err.status == 410:
                    self.log.info("%s %s expired (410 Gone): listing again", self.kind, self.what)
                    return True
                raise err
            self.apply(event)
        return False

    async def run(self) -> None:
        """List (unless a list is held already), then watch for ever; list again on 410 Gone;
        back off on errors."""
        backoff = Backoff()
        need_list = not (self.synced.is_set() and self.resource_version)
        while True:
            try:
                if need_list:
                    await self.list()
                    need_list = False
                need_list = await self.watch()
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except ApiError as err:
                self.errors += 1
                if err.status == 410:
                    need_list = True
                    continue
                await self._pause(backoff, str(err))
            except Exception as err:  # connection refused or reset, timeouts: the API server is away
                self.errors += 1
                await self._pause(backoff, f"{type(err).__name__}: {err}")

    async def _pause(self, backoff: Backoff, why: str) -> None:
        nominal, wait = backoff.next()
        self.log.warning("%s %s: %s; retrying in %.1fs", self.kind, self.what, why, nominal)
        await asyncio.sleep(wait)

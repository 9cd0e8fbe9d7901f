"""List + watch caches of Kubernetes objects, without an API call on the request path.

An `Informer` is the core's list + watch (`aikeys.kube.watch`) keeping a dict of converted
objects. A relist (at start, and after 410 Gone) builds a fresh cache and swaps it in at once, so
objects deleted during the gap disappear too. Objects are trimmed by a `convert` function before
they are stored (no managedFields, only what the gateway needs).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from aikeys.kube.client import KubeClient
from aikeys.kube.watch import Key, ListWatch, key_of

__all__ = ["Informer", "Key"]

log = logging.getLogger("aikeys.gateway.informers")
T = TypeVar("T")


class Informer(ListWatch, Generic[T]):
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
        super().__init__(
            kube,
            kind,
            url_path,
            params={"fieldSelector": field_selector} if field_selector else None,
            page=page,
            watch_timeout=watch_timeout,
            log=log,
            what="informer",
        )
        self.convert = convert
        self.on_change = on_change
        self.on_relist = on_relist
        self.objects: dict[Key, T] = {}
        self._fresh: dict[Key, T] = {}

    @property
    def relists(self) -> int:
        """Complete lists so far (the first one included): `aikeys_informer_relists`."""
        return self.lists

    async def relist(self) -> None:
        await self.list()

    def _convert(self, obj: dict[str, Any]) -> T | None:
        try:
            return self.convert(obj)
        except Exception:  # an object we cannot use must not stop the cache
            log.warning("ignoring malformed %s %s", self.kind, key_of(obj), exc_info=True)
            return None

    def _list_began(self) -> None:
        self._fresh = {}

    def _listed(self, obj: dict[str, Any]) -> None:
        value = self._convert(obj)  # each object converted as it comes, the page then dropped
        if value is not None:
            self._fresh[key_of(obj)] = value

    async def _list_ended(self) -> None:
        fresh, self._fresh = self._fresh, {}
        self.objects = fresh  # one assignment: readers see the old or the new cache, never a mix
        if self.on_relist is not None:
            self.on_relist(fresh)

    def _changed(self, kind: str, obj: dict[str, Any]) -> None:
        key = key_of(obj)
        old = self.objects.get(key)
        new = None if kind == "DELETED" else self._convert(obj)
        if new is None:
            self.objects.pop(key, None)
        else:
            self.objects[key] = new
        if self.on_change is not None:
            self.on_change(key, old, new)

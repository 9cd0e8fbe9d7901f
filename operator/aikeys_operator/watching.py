"""List + watch one collection for ever, handing each object to a callback (the caller keeps what
it needs of it: the operator never holds 100,000 full objects).

The core's list + watch (`aikeys.kube.watch`) does the paging, the resuming and the recovering;
a list hands every object on as ADDED, and after every complete list `on_listed` gets the keys
seen, so the caller can drop objects deleted while it was not looking.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aikeys.kube.client import KubeClient
from aikeys.kube.watch import Key, ListWatch, key_of

__all__ = ["Key", "Watch", "key_of"]

log = logging.getLogger("aikeys.operator")
JSON = dict[str, Any]


class Watch(ListWatch):
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
        super().__init__(kube, kind, url_path, page=page, watch_timeout=watch_timeout, log=log, what="watch")
        self.on_event = on_event
        self.on_listed = on_listed
        self._seen: set[Key] = set()

    def _deliver(self, kind: str, obj: JSON) -> None:
        try:
            self.on_event(kind, obj)
        except Exception:  # one object we cannot handle must not stop the others
            log.exception("%s %s: handling a %s event failed", self.kind, key_of(obj), kind)

    def _list_began(self) -> None:
        self._seen = set()

    def _listed(self, obj: JSON) -> None:
        self._seen.add(key_of(obj))
        self._deliver("ADDED", obj)

    async def _list_ended(self) -> None:
        seen, self._seen = self._seen, set()
        if self.on_listed is not None:
            result = self.on_listed(seen)
            if result is not None:
                await result

    def _changed(self, kind: str, obj: JSON) -> None:
        self._deliver(kind, obj)

"""Kubernetes Events about our objects, posted in the background (a post never holds up the work
that caused it; a failed post is logged, not retried: events are best-effort, as kubectl's are)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
from typing import Any

from aikeys.kube.client import KubeClient, path
from aikeys_operator.keys import Event

log = logging.getLogger("aikeys.operator")
COMPONENT = "aikeys-operator"
MAX_MESSAGE = 1024  # what kubectl describe shows in full


def event_body(obj: dict[str, Any], event: Event, now: dt.datetime) -> dict[str, Any]:
    meta = obj["metadata"]
    stamp = now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    message = event.message if len(event.message) <= MAX_MESSAGE else event.message[: MAX_MESSAGE - 1] + "…"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
        },
        "type": event.type,
        "reason": event.reason,
        "message": message,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": socket.gethostname(),
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


class Poster:
    def __init__(self, kube: KubeClient, concurrency: int = 4, backlog: int = 10_000):
        self.kube = kube
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(backlog)
        self.concurrency = concurrency
        self.posted = 0
        self.dropped = 0

    def post(self, obj: dict[str, Any], events: list[Event]) -> None:
        now = dt.datetime.now(dt.UTC)
        for event in events:
            try:
                self.queue.put_nowait(event_body(obj, event, now))
            except asyncio.QueueFull:
                self.dropped += 1
                log.warning("event dropped (backlog full): %s %s", event.reason, event.message)

    async def _worker(self) -> None:
        while True:
            body = await self.queue.get()
            try:
                await self.kube.create(path("v1", "events", body["metadata"]["namespace"]), body)
                self.posted += 1
            except Exception as err:  # the API server is away or refused it: best-effort
                log.warning("event %s not posted: %s", body["reason"], err)
            finally:
                self.queue.task_done()

    async def run(self) -> None:
        await asyncio.gather(*(self._worker() for _ in range(self.concurrency)))

"""The Kubernetes client against the real API server when it answers "come back later": a list
at a resourceVersion its watch cache has not reached yet waits 3 s there, then gets `504 Too large
resource version` with `Retry-After: 1` (what ended `make bench-scale`'s restart step after keys
were written straight into etcd). The client waits and asks again, so the caller gets the list."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aikeys_dev.devstack.controlplane import ControlPlane

from aikeys.kube.client import KubeClient, path
from aikeys.kube.config import from_kubeconfig

pytestmark = pytest.mark.integration
NS = "retry-after"
AHEAD = 100  # resourceVersions the list asks for beyond the present (background writes do fewer in 3 s)


class _Asked(logging.Handler):
    """Sets `event` when the client logs that the API server asked it to retry."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.event = asyncio.Event()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self.event.set()


async def test_a_list_ahead_of_the_watch_cache_is_retried_until_the_cache_has_caught_up(
    control_plane: ControlPlane,
) -> None:
    control_plane.kubectl("create", "namespace", NS, check=False)
    url = path("v1", "configmaps", NS)
    asked = _Asked()
    logger = logging.getLogger("aikeys.kube")
    logger.addHandler(asked)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        async with KubeClient(from_kubeconfig(control_plane.kubeconfig)) as kube:
            now = int((await kube.get(url))["metadata"]["resourceVersion"])
            wanted = now + AHEAD
            listing = asyncio.create_task(kube.get(url, params={"resourceVersion": str(wanted)}))
            waiting = asyncio.create_task(asked.event.wait())  # the server said 504, Retry-After
            await asyncio.wait({listing, waiting}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            if listing.done():
                listing.result()  # what the caller saw: the API server's 504, not retried
            assert asked.lines and "504" in asked.lines[0]
            for i in range(AHEAD):  # the writes that take the cache past the list's resourceVersion
                await kube.create(url, {"metadata": {"name": f"tick-{i}"}, "data": {}})
            result = await asyncio.wait_for(listing, 60)
        assert int(result["metadata"]["resourceVersion"]) >= wanted
        assert "tick-0" in {o["metadata"]["name"] for o in result["items"]}
    finally:
        logger.removeHandler(asked)
        logger.setLevel(level)
        control_plane.kubectl("delete", "namespace", NS, "--wait=false", check=False)

"""A key handed to a person: create (or rotate) an AIKey, wait until the operator has minted it,
and read the key from its Secret once.

The operator writes the plaintext only into the AIKey's Secret; whoever asked for the key reads
it from there and (unless it is kept for a workload to `envFrom`) deletes the Secret, so that
only the key's SHA-256 stays in the cluster. The CLI (`aikeys keys create|rotate`) and the web
pages do this alike, each with its own credentials: the person's, so RBAC decides.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aikeys.kube.client import KubeClient, path, resource_path
from aikeys.resources import API_VERSION

JSON = dict[str, Any]
POLL_SECONDS = 0.1  # how often the AIKey is read while waiting (a person is waiting too)


class NotReady(Exception):
    """The operator did not mint the key in time; `phase` is what the AIKey last showed."""

    def __init__(self, namespace: str, name: str, seconds: float, phase: str | None):
        super().__init__(
            f"AIKey {namespace}/{name} has no key after {seconds:.0f}s: is the aikeys operator running?"
        )
        self.namespace = namespace
        self.name = name
        self.seconds = seconds
        self.phase = phase


@dataclass(frozen=True)
class Issued:
    """The plaintext key (never logged), where to send it, and the Secret it came from."""

    key: str
    base_url: str | None
    secret: str
    previous_valid_until: str | None = None  # after a rotation: until when the old key works


def _status(obj: JSON) -> JSON:
    status: JSON = obj.get("status") or {}
    return status


def minted(obj: JSON) -> bool:
    """Whether a new AIKey has its key: Active, with the Secret that holds it."""
    return _status(obj).get("phase") == "Active" and bool(_status(obj).get("secretName"))


async def wait(
    client: KubeClient, namespace: str, name: str, ready: Callable[[JSON], bool], seconds: float
) -> JSON:
    """The AIKey once `ready` says so; NotReady after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        obj = await client.get(resource_path("aikeys", namespace, name))
        if ready(obj):
            return obj
        if time.monotonic() > deadline:
            raise NotReady(namespace, name, seconds, _status(obj).get("phase"))
        await asyncio.sleep(POLL_SECONDS)


async def take(client: KubeClient, namespace: str, obj: JSON, keep_secret: bool = False) -> Issued:
    """The key (and base URL) from the AIKey's Secret, which is then deleted unless `keep_secret`."""
    secret = _status(obj)["secretName"]
    secret_path = path("v1", "secrets", namespace, secret)
    data = (await client.get(secret_path)).get("data") or {}
    key = base64.b64decode(data["OPENAI_API_KEY"]).decode()
    base = base64.b64decode(data["OPENAI_BASE_URL"]).decode() if "OPENAI_BASE_URL" in data else None
    if not keep_secret:
        await client.delete(secret_path)
    return Issued(key, base, secret, _status(obj).get("previousKeyValidUntil"))


async def create(
    client: KubeClient,
    namespace: str,
    name: str,
    spec: JSON,
    *,
    wait_seconds: float,
    keep_secret: bool = False,
) -> Issued:
    """Create the AIKey `name` with `spec` and return its key once minted."""
    await client.create(
        resource_path("aikeys", namespace),
        {
            "apiVersion": API_VERSION,
            "kind": "AIKey",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        },
    )
    obj = await wait(client, namespace, name, minted, wait_seconds)
    return await take(client, namespace, obj, keep_secret)


async def rotate(
    client: KubeClient,
    namespace: str,
    name: str,
    grace: str | None,
    *,
    wait_seconds: float,
    keep_secret: bool = False,
) -> Issued:
    """Ask for the AIKey's next key (the old one works for `grace`, default the key's own) and
    return it once minted."""
    current = await client.get(resource_path("aikeys", namespace, name))
    target = int(current["spec"].get("rotation", 0)) + 1
    spec: JSON = {"rotation": target}
    if grace:
        spec["rotationGracePeriod"] = grace
    await client.patch(resource_path("aikeys", namespace, name), {"spec": spec})
    obj = await wait(
        client, namespace, name, lambda o: _status(o).get("observedRotation") == target, wait_seconds
    )
    return await take(client, namespace, obj, keep_secret)

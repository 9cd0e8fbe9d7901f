"""The API server as the signed-in person: their own bearer token, so RBAC (and the key-owner
admission policy) decide exactly as for `kubectl` with that token. The gateway's own identity is
never used for a person's action."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import ssl
import time
from typing import Any

import aiohttp

from aikeys.kube.client import JSON, KubeClient, NotFound, path, resource_path
from aikeys.kube.config import KubeConfig
from aikeys.resources import API_VERSION


class Connections:
    """One connection pool to the API server for every person's requests (no client certificate:
    a person's request carries only their token)."""

    def __init__(self, base: KubeConfig):
        self.base = dataclasses.replace(
            base, token=None, token_file=None, cert_file=None, key_file=None, renewer=None, source="web pages"
        )
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            tls: ssl.SSLContext | bool = self.base.ssl_context()
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls, limit=64))
        return self._session

    def client(self, token: str) -> PersonClient:
        return PersonClient(dataclasses.replace(self.base, token=token), self.session())

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class PersonClient(KubeClient):
    def __init__(self, config: KubeConfig, session: aiohttp.ClientSession):
        super().__init__(config, timeout=15.0, user_agent="aikeys-web")
        self._session = session

    async def close(self) -> None:  # the pool is shared
        return None


def aikeys_path(namespace: str, name: str | None = None) -> str:
    return resource_path("aikeys", namespace, name)


class NotReady(Exception):
    """The operator did not mint the key in time."""


async def list_keys(client: KubeClient, namespace: str) -> list[JSON]:
    items: list[JSON] = (await client.get(aikeys_path(namespace))).get("items", [])
    return sorted(items, key=lambda o: o["metadata"]["name"])


async def list_allocations(client: KubeClient, namespace: str) -> list[str]:
    items = (await client.get(resource_path("allocations", namespace))).get("items", [])
    return sorted(o["metadata"]["name"] for o in items)


async def _wait(client: KubeClient, namespace: str, name: str, ready: Any, seconds: float) -> JSON:
    deadline = time.monotonic() + seconds
    while True:
        obj = await client.get(aikeys_path(namespace, name))
        if ready(obj):
            return obj
        if time.monotonic() > deadline:
            raise NotReady(
                f"AIKey {namespace}/{name} has no key after {seconds:.0f}s: is the aikeys operator running?"
            )
        await asyncio.sleep(0.1)


async def take_key(client: KubeClient, namespace: str, obj: JSON) -> tuple[str, str | None]:
    """The key (and base URL) from the AIKey's Secret, which is then deleted: only its hash remains."""
    secret_path = path("v1", "secrets", namespace, obj["status"]["secretName"])
    data = (await client.get(secret_path)).get("data") or {}
    key = base64.b64decode(data["OPENAI_API_KEY"]).decode()
    base = base64.b64decode(data["OPENAI_BASE_URL"]).decode() if "OPENAI_BASE_URL" in data else None
    await client.delete(secret_path)
    return key, base


async def create_key(
    client: KubeClient, namespace: str, name: str, spec: JSON, wait_seconds: float = 30.0
) -> tuple[str, str | None]:
    await client.create(
        aikeys_path(namespace),
        {
            "apiVersion": API_VERSION,
            "kind": "AIKey",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        },
    )
    obj = await _wait(
        client,
        namespace,
        name,
        lambda o: (
            (o.get("status") or {}).get("phase") == "Active" and (o.get("status") or {}).get("secretName")
        ),
        wait_seconds,
    )
    return await take_key(client, namespace, obj)


async def rotate_key(
    client: KubeClient, namespace: str, name: str, grace: str | None, wait_seconds: float = 30.0
) -> tuple[str, str | None, str | None]:
    current = await client.get(aikeys_path(namespace, name))
    target = int(current["spec"].get("rotation", 0)) + 1
    spec: JSON = {"rotation": target}
    if grace:
        spec["rotationGracePeriod"] = grace
    await client.patch(aikeys_path(namespace, name), {"spec": spec})
    obj = await _wait(
        client,
        namespace,
        name,
        lambda o: (o.get("status") or {}).get("observedRotation") == target,
        wait_seconds,
    )
    key, base = await take_key(client, namespace, obj)
    return key, base, (obj.get("status") or {}).get("previousKeyValidUntil")


async def set_disabled(client: KubeClient, namespace: str, name: str, disabled: bool) -> None:
    await client.patch(aikeys_path(namespace, name), {"spec": {"disabled": disabled}})


async def revoke(client: KubeClient, namespace: str, name: str) -> bool:
    """Delete the AIKey; False when it was already gone."""
    try:
        return await client.delete(aikeys_path(namespace, name)) is not None
    except NotFound:
        return False

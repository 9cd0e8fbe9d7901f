"""The API server as the signed-in person: their own bearer token, so RBAC (and the key-owner
admission policy) decide exactly as for `kubectl` with that token. The gateway's own identity is
never used for a person's action."""

from __future__ import annotations

import dataclasses
import ssl

import aiohttp

from aikeys import issuing
from aikeys.kube.client import JSON, KubeClient, NotFound, resource_path
from aikeys.kube.config import KubeConfig

WAIT_SECONDS = 30.0  # how long a page waits for the operator to mint a key


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


async def list_keys(client: KubeClient, namespace: str) -> list[JSON]:
    items: list[JSON] = (await client.get(aikeys_path(namespace))).get("items", [])
    return sorted(items, key=lambda o: o["metadata"]["name"])


async def list_allocations(client: KubeClient, namespace: str) -> list[str]:
    items = (await client.get(resource_path("allocations", namespace))).get("items", [])
    return sorted(o["metadata"]["name"] for o in items)


async def create_key(client: KubeClient, namespace: str, name: str, spec: JSON) -> issuing.Issued:
    """Create the AIKey and take its key from its Secret, which is then deleted."""
    return await issuing.create(client, namespace, name, spec, wait_seconds=WAIT_SECONDS)


async def rotate_key(client: KubeClient, namespace: str, name: str, grace: str | None) -> issuing.Issued:
    """The AIKey's next key, taken from its Secret, which is then deleted."""
    return await issuing.rotate(client, namespace, name, grace, wait_seconds=WAIT_SECONDS)


async def set_disabled(client: KubeClient, namespace: str, name: str, disabled: bool) -> None:
    await client.patch(aikeys_path(namespace, name), {"spec": {"disabled": disabled}})


async def revoke(client: KubeClient, namespace: str, name: str) -> bool:
    """Delete the AIKey; False when it was already gone."""
    try:
        return await client.delete(aikeys_path(namespace, name)) is not None
    except NotFound:
        return False

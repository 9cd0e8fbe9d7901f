"""Requests, lists and watches against the Kubernetes API (aiohttp, one session per client).

When the API server asks a client to come back later (`Retry-After` on a 429 from API Priority
and Fairness, on a 504 "Too large resource version" while its watch cache catches up with etcd,
on a 503 while it starts), the request is sent again after that long, as client-go does: at most
`MAX_RETRIES` times, each wait capped at `MAX_WAIT` seconds. Reads (GET: gets, lists, the start
of a watch) are retried on any of these; writes only on 429, which the server answers before it
processes anything, so a write is never applied twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from aikeys.kube.config import KubeConfig
from aikeys.resources import API_VERSION

JSON = dict[str, Any]
MERGE = "application/merge-patch+json"
MAX_RETRIES = 10  # as client-go
MAX_WAIT = 10.0  # seconds, however long the server asks for
SAFE = frozenset({"GET", "HEAD"})  # what the server may have processed, and is still safe to resend

log = logging.getLogger("aikeys.kube")


def retry_after(method: str, status: int, header: str | None) -> float | None:
    """Seconds to wait before sending the request again, or None: the answer stands.

    Only a 429 or a 5xx that carries `Retry-After` in whole seconds (client-go reads no HTTP
    dates either) is retried; a write only on 429."""
    if not (status == 429 or (500 <= status < 600 and method in SAFE)) or header is None:
        return None
    try:
        seconds = int(header.strip())
    except ValueError:
        return None
    return None if seconds < 0 else min(float(seconds), MAX_WAIT)


class ApiError(Exception):
    """A non-2xx answer; `status` is the HTTP code, `reason` Kubernetes' reason (NotFound, …)."""

    def __init__(self, status: int, reason: str, message: str, body: JSON | None = None):
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body or {}


class Unauthorized(ApiError):
    """401: the credential was not accepted."""


class Forbidden(ApiError):
    """403: RBAC (or an admission rule) said no."""


class NotFound(ApiError):
    """404: no such object (or, without a Status body, no such resource type)."""


class Conflict(ApiError):
    """409: it exists already, or the resourceVersion moved on."""


_BY_STATUS: dict[int, type[ApiError]] = {401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict}


def api_error(status: int, reason: str, message: str, body: JSON | None = None) -> ApiError:
    """The ApiError subclass for `status` (ApiError itself for the others)."""
    return _BY_STATUS.get(status, ApiError)(status, reason, message, body)


def path(
    group_version: str,
    plural: str,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """`("aikeys.dev/v1alpha1", "aikeys", "ns", "k")` → `/apis/aikeys.dev/v1alpha1/namespaces/ns/aikeys/k`."""
    base = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    parts = [base]
    if namespace:
        parts.append(f"namespaces/{namespace}")
    parts.append(plural)
    if name:
        parts.append(name)
    if subresource:
        parts.append(subresource)
    return "/".join(parts)


def resource_path(
    plural: str, namespace: str | None = None, name: str | None = None, subresource: str | None = None
) -> str:
    """A path to one of aikeys' own resources (aikeys.dev/v1alpha1): aikeys, allocations, aiproviders."""
    return path(API_VERSION, plural, namespace, name, subresource)


class KubeClient:
    def __init__(self, config: KubeConfig, *, timeout: float = 30.0, user_agent: str = "aikeys"):
        self.config = config
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    async def _headers(self, content_type: str | None = None, renew: bool = False) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": self.user_agent}
        authorization = await self.config.authorization(renew=renew)
        if authorization:
            headers["Authorization"] = authorization
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def _options(self) -> dict[str, Any]:
        """What every request carries besides headers: the kubeconfig's proxy-url and tls-server-name."""
        options: dict[str, Any] = {}
        if self.config.proxy:
            options["proxy"] = self.config.proxy
        if self.config.tls_server_name:
            options["server_hostname"] = self.config.tls_server_name
        return options

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self.config.ssl_context(), limit=32)
            # watch events are one JSON line each; objects can be large
            self._session = aiohttp.ClientSession(connector=connector, read_bufsize=4 * 1024 * 1024)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @staticmethod
    async def _raise_for(resp: aiohttp.ClientResponse) -> None:
        if resp.status < 300:
            return
        text = await resp.text()
        try:
            body = json.loads(text)
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        raise api_error(
            resp.status, body.get("reason") or resp.reason or "", body.get("message") or text, body
        )

    @contextlib.asynccontextmanager
    async def _send(
        self,
        method: str,
        url_path: str,
        *,
        data: str | bytes | None = None,
        params: Mapping[str, str] | None = None,
        content_type: str | None = None,
        client_timeout: aiohttp.ClientTimeout | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The response to one request, once the API server has answered it for good: a 401
        renews the credential (exec plugin, token file) once; a 429 or 5xx that says
        `Retry-After` is sent again after that long, as `retry_after` allows. Raises ApiError
        for a non-2xx answer."""
        renew, renewed, retries = False, False, 0
        while True:
            headers = await self._headers(content_type, renew=renew)
            renew = False
            async with self.session.request(
                method,
                self.config.server + url_path,
                data=data,
                params=params,
                headers=headers,
                timeout=client_timeout or self.timeout,
                **self._options(),
            ) as resp:
                if resp.status == 401 and not renewed and self.config.renewable:
                    renew = renewed = True
                    continue
                wait = retry_after(method, resp.status, resp.headers.get("Retry-After"))
                if wait is None or retries >= MAX_RETRIES:
                    await self._raise_for(resp)
                    yield resp
                    return
                await resp.read()  # the connection goes back to the pool
                retries += 1
                log.info(
                    "%s %s: %d from the API server, which asks to retry; retry %d in %.0fs",
                    method,
                    url_path,
                    resp.status,
                    retries,
                    wait,
                )
            await asyncio.sleep(wait)

    async def request(
        self,
        method: str,
        url_path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> JSON:
        data = None if body is None else (body if isinstance(body, str | bytes) else json.dumps(body))
        async with self._send(
            method,
            url_path,
            data=data,
            params=params,
            content_type=content_type if body is not None else None,
        ) as resp:
            result: JSON = await resp.json(content_type=None)
            return result

    async def get(self, url_path: str, params: Mapping[str, str] | None = None) -> JSON:
        return await self.request("GET", url_path, params=params)

    async def get_or_none(self, url_path: str) -> JSON | None:
        try:
            return await self.get(url_path)
        except NotFound:
            return None

    async def create(self, url_path: str, obj: JSON) -> JSON:
        return await self.request("POST", url_path, body=obj)

    async def replace(self, url_path: str, obj: JSON) -> JSON:
        return await self.request("PUT", url_path, body=obj)

    async def patch(
        self, url_path: str, patch: Any, content_type: str = MERGE, params: Mapping[str, str] | None = None
    ) -> JSON:
        return await self.request("PATCH", url_path, body=patch, content_type=content_type, params=params)

    async def delete(self, url_path: str) -> JSON | None:
        try:
            return await self.request("DELETE", url_path)
        except NotFound:
            return None

    async def watch(
        self,
        url_path: str,
        resource_version: str,
        *,
        timeout_seconds: int = 300,
        bookmarks: bool = True,
        params: Mapping[str, str] | None = None,
    ) -> AsyncIterator[JSON]:
        """Stream watch events ({"type", "object"}) from `resource_version` until the server ends it.

        A 410 Gone (resourceVersion too old) arrives as an ERROR event whose object is a Status
        with code 410; callers relist then.
        """
        query = {
            "watch": "true",
            "resourceVersion": resource_version,
            "timeoutSeconds": str(timeout_seconds),
            "allowWatchBookmarks": "true" if bookmarks else "false",
            **(params or {}),
        }
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout_seconds + 30)
        async with self._send("GET", url_path, params=query, client_timeout=timeout) as resp:
            async for line in resp.content:
                if line.strip():
                    event: JSON = json.loads(line)
                    yield event

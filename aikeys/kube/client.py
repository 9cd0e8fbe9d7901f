"""Requests, lists and watches against the Kubernetes API (aiohttp, one session per client)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from aikeys.kube.config import KubeConfig
from aikeys.resources import API_VERSION

JSON = dict[str, Any]
MERGE = "application/merge-patch+json"


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
        for attempt in (1, 2):  # a 401 renews the credential (exec plugin, token file) once
            headers = await self._headers(content_type if body is not None else None, renew=attempt == 2)
            async with self.session.request(
                method,
                self.config.server + url_path,
                data=data,
                params=params,
                headers=headers,
                timeout=self.timeout,
                **self._options(),
            ) as resp:
                if resp.status == 401 and attempt == 1 and self.config.renewable:
                    continue
                await self._raise_for(resp)
                result: JSON = await resp.json(content_type=None)
                return result
        raise AssertionError("unreachable")

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
        headers = await self._headers()
        async with self.session.get(
            self.config.server + url_path, params=query, headers=headers, timeout=timeout, **self._options()
        ) as resp:
            await self._raise_for(resp)
            async for line in resp.content:
                if line.strip():
                    event: JSON = json.loads(line)
                    yield event

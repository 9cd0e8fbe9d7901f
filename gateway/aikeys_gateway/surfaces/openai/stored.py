"""Stored responses: `GET/DELETE /responses/{id}`, `POST /responses/{id}/cancel`,
`GET /responses/{id}/input_items`, and `previous_response_id`, each sent to the provider that
created the response and only for the key that created it.

When a natively served response is stored (`store` not false), the gateway remembers in Redis
which key (its AIKey's uid, so not a later key of the same name), model and AIProvider it belongs
to, for `AIKEYS_RESPONSES_TTL` (30 days, as long as OpenAI keeps them). Any other id — unknown,
expired, another key's (also of the same namespace), or of a model the key may no longer use —
answers exactly like an id that does not exist. So does an id an earlier version remembered by
namespace only (without the key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from aikeys_gateway import errors
from aikeys_gateway.cache.catalog import Catalog, KeyEntry, ProviderEntry
from aikeys_gateway.upstreams.client import Client, UpstreamError
from aikeys_gateway.upstreams.kinds import kind_of

TTL_SECONDS = 30 * 86_400


def _key(response_id: str) -> str:
    return f"aikeys:response:{response_id}"


@dataclass(frozen=True)
class Owner:
    namespace: str  # of the key that created it
    provider_namespace: str
    provider: str
    key: str  # the uid of the AIKey that created it
    model: str  # the model ID it asked for (the key must still be allowed it)


def not_found(response_id: str) -> errors.GatewayError:
    return errors.not_found(
        f"Response with id '{response_id[:80]}' not found.", code="response_not_found", param=None
    )


class StoredResponses:
    def __init__(self, redis: Any, ttl: int = TTL_SECONDS, max_answer_bytes: int = 64 * 1024 * 1024):
        self.redis = redis
        self.ttl = ttl
        self.max_answer_bytes = max_answer_bytes  # a stored response is bounded like any answer

    async def remember(self, response_id: str, owner: Owner) -> None:
        value = f"{owner.namespace}|{owner.provider_namespace}|{owner.provider}|{owner.key}|{owner.model}"
        await self.redis.set(_key(response_id), value, ex=self.ttl)

    async def owner(self, response_id: str) -> Owner | None:
        """Who created `response_id`; None when unknown (or remembered without its key)."""
        raw = await self.redis.get(_key(response_id))
        parts = str(raw or "").split("|", 4)
        if len(parts) != 5:
            return None
        return Owner(*parts)

    async def forget(self, response_id: str) -> None:
        await self.redis.delete(_key(response_id))

    async def provider_for(self, response_id: str, key: KeyEntry, catalog: Catalog) -> ProviderEntry:
        """The provider that holds `response_id`, if this key created it (and may still use its
        model); else 404."""
        if not response_id.startswith("resp_") or len(response_id) > 200:
            raise not_found(response_id)
        owner = await self.owner(response_id)
        if (
            owner is None
            or (owner.namespace, owner.key) != (key.namespace, key.uid)
            or not key.allows(owner.model)
        ):
            raise not_found(response_id)
        provider = catalog.provider(owner.provider_namespace, owner.provider)
        if provider is None:
            raise not_found(response_id)
        return provider

    async def forward(
        self,
        request: Request,
        http: Client,
        catalog: Catalog,
        key: KeyEntry,
        response_id: str,
        suffix: str = "",
    ) -> Response:
        """Send this request on to the provider that holds the response, and its answer back."""
        provider = await self.provider_for(response_id, key, catalog)
        kind = kind_of(provider)
        url = kind.url(provider, f"responses/{response_id}{suffix}")
        if request.url.query:
            url += ("&" if "?" in url else "?") + request.url.query
        headers = kind.auth_headers(catalog.credential(provider))
        try:
            resp = await http.request(request.method, url, headers=headers, total=provider.timeout_seconds)
            try:
                body = await resp.read(self.max_answer_bytes)
            finally:
                resp.release()  # read to its end: kept alive; cancelled midway: closed
            status = resp.status
            media_type = resp.headers.get("content-type", "application/json")
        except (TimeoutError, UpstreamError) as err:
            raise errors.bad_gateway(
                f"The upstream {provider.namespace}:{provider.name} could not be reached."
            ) from err
        if status in (401, 403):
            raise errors.GatewayError(
                502,
                f"The upstream {provider.namespace}:{provider.name} refused the gateway's credentials.",
                "upstream_error",
                "upstream_auth_failed",
            )
        if status == 404:
            raise not_found(response_id)
        if request.method == "DELETE" and status < 300:
            await self.forget(response_id)
        return Response(body, status_code=status, media_type=media_type)

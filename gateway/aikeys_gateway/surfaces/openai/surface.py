"""The OpenAI surface (`/api/openai/v1/…`): chat completions, completions, embeddings and the
Responses API, native or — on a chat-only backend — translated (translate.py).

What it adds to the shared pipeline: the request schemas (schemas.py), `previous_response_id`
continued only where the response is stored (stored.py), stored responses remembered for their
key, OpenAI's error shape, and an upstream's own OpenAI-shaped error passed on unchanged.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.responses import Response

from aikeys.estimate import Endpoint
from aikeys_gateway import errors
from aikeys_gateway.cache.catalog import Catalog, KeyEntry
from aikeys_gateway.pipeline import plan as plans
from aikeys_gateway.pipeline.intake import validate
from aikeys_gateway.pipeline.plan import Plan
from aikeys_gateway.pipeline.routing import Route
from aikeys_gateway.surfaces.openai import translate
from aikeys_gateway.surfaces.openai.stored import Owner, StoredResponses
from aikeys_gateway.upstreams.sse import Reader

log = logging.getLogger("aikeys.gateway.access")


class OpenAISurface:
    name = "openai"

    def __init__(self, catalog: Catalog, stored: StoredResponses):
        self.catalog = catalog
        self.stored = stored

    def validate(self, endpoint: Endpoint, body: dict[str, Any]) -> None:
        validate(endpoint, body)

    async def routes(
        self, endpoint: Endpoint, body: dict[str, Any], key: KeyEntry, route: Route, routes: list[Route]
    ) -> list[Route]:
        """previous_response_id must be a response of this key; only the upstream that holds it
        can continue it."""
        response_id = body.get("previous_response_id")
        if endpoint is not Endpoint.RESPONSES or not response_id or not route.model.responses_native:
            return routes
        provider = await self.stored.provider_for(str(response_id), key, self.catalog)
        holders = [r for r in routes if r.provider is provider and r.model.responses_native]
        if not holders:
            raise errors.invalid_request(
                f"Previous response with id '{str(response_id)[:80]}' was created through another "
                "provider; continue it with a model of that provider.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        return holders

    def plan(self, endpoint: Endpoint, body: dict[str, Any], route: Route, stream: bool) -> Plan:
        translated = endpoint is Endpoint.RESPONSES and not route.model.responses_native
        if translated:  # a chat-only backend: the request goes as a chat completion
            body, endpoint = translate.chat_request(body), Endpoint.CHAT
        return plans.build(endpoint, body, route, stream, translated)

    def answer(
        self, plan: Plan, request: dict[str, Any], parsed: Any, raw: bytes, media_type: str
    ) -> tuple[bytes, str]:
        if plan.translated:  # as a Responses object
            return orjson.dumps(
                translate.response_from_chat(parsed, request, plan.route.model_id)
            ), "application/json"
        return raw, media_type

    def reader(self, plan: Plan, request: dict[str, Any]) -> Reader:
        if plan.translated:
            return translate.ChatToResponses(request, plan.route.model_id)
        return plan.route.kind.reader(plan.endpoint, request)

    async def answered(
        self, plan: Plan, request: dict[str, Any], key: KeyEntry, model_id: str, answer_id: str | None
    ) -> None:
        """A response stored at its provider: remember that it is this key's (for GET and
        previous_response_id)."""
        if plan.endpoint is not Endpoint.RESPONSES or plan.translated or request.get("store") is False:
            return
        if not answer_id:
            return
        p = plan.route.provider
        try:
            await self.stored.remember(
                answer_id, Owner(key.namespace, p.namespace, p.name, key.uid, model_id)
            )
        except Exception:  # the answer stands; only a later GET of it will not find it
            log.warning("stored response not remembered", extra={"access": {"response_id": answer_id}})

    def upstream_error(self, status: int, parsed: Any, raw: bytes, rid: str) -> Response | None:
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            return Response(
                raw, status_code=status, media_type="application/json", headers={"x-request-id": rid}
            )
        return None

    def error(self, err: errors.GatewayError, rid: str) -> Response:
        return err.response(rid)

    def error_event(self, err: errors.GatewayError) -> bytes:
        return err.event()

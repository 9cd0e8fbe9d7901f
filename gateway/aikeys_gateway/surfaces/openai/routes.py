"""The OpenAI routes that are not metered: the model list and one model, and stored responses
(sent on to the provider that holds them, see `stored`)."""

from __future__ import annotations

import datetime as dt

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from aikeys.limits import truncate
from aikeys_gateway import errors
from aikeys_gateway.cache.catalog import Catalog
from aikeys_gateway.pipeline.auth import authenticate
from aikeys_gateway.pipeline.intake import request_id
from aikeys_gateway.surfaces.openai.stored import StoredResponses
from aikeys_gateway.upstreams.client import Client

PREFIX = "/api/openai/v1"


def router(catalog: Catalog, stored_responses: StoredResponses, http: Client) -> APIRouter:
    """The routes, over the gateway's caches; stored responses go to their provider over `http`."""
    router = APIRouter(tags=["openai"])

    @router.get(PREFIX + "/models", tags=["openai"])
    async def models(request: Request) -> Response:
        """The models this key may use, in OpenAI's list format."""
        rid = request_id(request)
        key = authenticate(request.headers, catalog, dt.datetime.now(dt.UTC))
        data = [
            {"id": mid, "object": "model", "created": 0, "owned_by": f"{p.namespace}:{p.name}"}
            for mid, p in catalog.models_for(key)
        ]
        return Response(
            orjson.dumps({"object": "list", "data": data}),
            media_type="application/json",
            headers={"x-request-id": rid},
        )

    @router.get(PREFIX + "/models/{model_id:path}", tags=["openai"])
    async def model(request: Request, model_id: str) -> Response:
        """One model this key may use (404 for any other, as for one that does not exist)."""
        key = authenticate(request.headers, catalog, dt.datetime.now(dt.UTC))
        for mid, p in catalog.models_for(key):
            if mid == model_id:
                found = {"id": mid, "object": "model", "created": 0, "owned_by": f"{p.namespace}:{p.name}"}
                return Response(
                    orjson.dumps(found),
                    media_type="application/json",
                    headers={"x-request-id": request_id(request)},
                )
        raise errors.not_found(
            f"The model `{truncate(model_id)}` does not exist or you do not have access to it."
        )

    async def stored(request: Request, response_id: str, suffix: str = "") -> Response:
        key = authenticate(request.headers, catalog, dt.datetime.now(dt.UTC))
        response = await stored_responses.forward(request, http, catalog, key, response_id, suffix)
        response.headers["x-request-id"] = request_id(request)
        return response

    @router.get(PREFIX + "/responses/{response_id}", tags=["openai"])
    async def get_response(request: Request, response_id: str) -> Response:
        """A stored response, from the provider that holds it (only for its namespace's keys)."""
        return await stored(request, response_id)

    @router.delete(PREFIX + "/responses/{response_id}", tags=["openai"])
    async def delete_response(request: Request, response_id: str) -> Response:
        """Delete a stored response at its provider."""
        return await stored(request, response_id)

    @router.post(PREFIX + "/responses/{response_id}/cancel", tags=["openai"])
    async def cancel_response(request: Request, response_id: str) -> Response:
        """Cancel a response at its provider."""
        return await stored(request, response_id, "/cancel")

    @router.get(PREFIX + "/responses/{response_id}/input_items", tags=["openai"])
    async def response_input_items(request: Request, response_id: str) -> Response:
        """The input items of a stored response."""
        return await stored(request, response_id, "/input_items")

    return router

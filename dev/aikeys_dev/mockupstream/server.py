"""The mock upstream's HTTP server (aiohttp): its routes and middlewares put together, and `serve`."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from aikeys_dev.mockupstream.behaviour import Behaviour
from aikeys_dev.mockupstream.chat import ChatRoutes
from aikeys_dev.mockupstream.control import ControlRoutes
from aikeys_dev.mockupstream.core import Core, log_status
from aikeys_dev.mockupstream.responses_api import ResponsesRoutes


class MockUpstream:
    """One mock server: the shared core and the route sets over it."""

    def __init__(self, behaviour: Behaviour | None = None, log_size: int = 10_000):
        self.core = Core(behaviour, log_size)
        self.chat = ChatRoutes(self.core)
        self.responses = ResponsesRoutes(self.core)
        self.control = ControlRoutes(self.core)

    def app(self) -> web.Application:
        core, chat, responses, control = self.core, self.chat, self.responses, self.control

        @web.middleware
        async def faults(request: web.Request, handler: Any) -> web.StreamResponse:
            return await core.faults(request, handler)

        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[log_status, faults])
        app.router.add_post("/v1/chat/completions", chat.chat)
        app.router.add_post("/v1/completions", chat.completions)
        app.router.add_post("/v1/embeddings", chat.embeddings)
        app.router.add_get("/v1/models", chat.models)
        app.router.add_get("/v1/models/{model}", chat.model)
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", chat.chat)
        app.router.add_post("/openai/deployments/{deployment}/completions", chat.completions)
        app.router.add_post("/openai/deployments/{deployment}/embeddings", chat.embeddings)
        app.router.add_post("/openai/deployments/{deployment}/responses", responses.create_response)
        for base in ("/v1/responses", "/openai/v1/responses", "/openai/responses"):
            app.router.add_post(base, responses.create_response)
            app.router.add_get(base + "/{id}", responses.get_response)
            app.router.add_delete(base + "/{id}", responses.delete_response)
            app.router.add_post(base + "/{id}/cancel", responses.cancel_response)
            app.router.add_get(base + "/{id}/input_items", responses.list_input_items)
        app.router.add_get("/_mock/config", control.get_config)
        app.router.add_put("/_mock/config", control.put_config)
        app.router.add_get("/_mock/requests", control.get_requests)
        app.router.add_delete("/_mock/requests", control.clear_requests)
        app.router.add_get("/healthz", control.healthz)
        return app


def serve(host: str, port: int, behaviour: Behaviour) -> None:
    """Run the mock until interrupted (uvloop when available)."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(
        MockUpstream(behaviour).app(), host=host, port=port, access_log=None, print=None, handle_signals=True
    )

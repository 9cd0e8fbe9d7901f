"""The mock's own routes, beside the API it imitates: its behaviour read and changed
(`/_mock/config`), the requests it received read and cleared (`/_mock/requests`), `/healthz`."""

from __future__ import annotations

from dataclasses import asdict

from aiohttp import web

from aikeys_dev.mockupstream.core import Core


class ControlRoutes:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def get_config(self, request: web.Request) -> web.Response:
        return web.json_response(asdict(self.core.behaviour))

    async def put_config(self, request: web.Request) -> web.Response:
        try:
            self.core.behaviour.update(await request.json())
        except (ValueError, TypeError) as err:
            return web.json_response({"error": str(err)}, status=400)
        return web.json_response(asdict(self.core.behaviour))

    async def get_requests(self, request: web.Request) -> web.Response:
        return web.json_response(list(self.core.requests))

    async def clear_requests(self, request: web.Request) -> web.Response:
        self.core.requests.clear()
        return web.Response(status=204)

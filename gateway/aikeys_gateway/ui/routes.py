"""The web pages' routes under /ui (mounted only when AIKEYS_UI=true: cryptography and the pages
load only then)."""

from __future__ import annotations

from fastapi import APIRouter

from aikeys_gateway.ui.web import UI


def router(ui: UI) -> APIRouter:
    r = APIRouter(prefix="/ui", include_in_schema=False)
    r.add_api_route("", ui.home, methods=["GET"])
    r.add_api_route("/", ui.home, methods=["GET"])
    r.add_api_route("/static/{name}", ui.static, methods=["GET"])
    r.add_api_route("/login", ui.login_form, methods=["GET"])
    r.add_api_route("/login", ui.login, methods=["POST"])
    r.add_api_route("/logout", ui.logout, methods=["POST"])
    r.add_api_route("/keys", ui.keys, methods=["GET"])
    r.add_api_route("/keys/create", ui.create, methods=["POST"])
    r.add_api_route("/keys/{verb}", ui.act, methods=["POST"])
    r.add_api_route("/connect", ui.connect, methods=["GET"])
    r.add_api_route("/usage", ui.usage, methods=["GET"])
    r.add_api_route("/usage.json", ui.usage_json, methods=["GET"])
    return r

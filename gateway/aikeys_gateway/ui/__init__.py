"""The web pages, under /ui: sign-in, AI Keys and AI Usage (off unless AIKEYS_UI=true).

Every action runs as the signed-in person: their Kubernetes bearer token goes to the API server
with each request (`person.py`), so RBAC — and the key-owner admission policy — decide as they
would for `kubectl`. Who may read which namespace's usage is the same SubjectAccessReview as for
`/api/usage`, and the numbers come from the same report (`usage.report`) over the gateway's caches
and the ledger. Someone signed in with an AI key sees that key, its budget and its usage only.

Sessions (`session.py`): the credential sealed into an HttpOnly, SameSite=Strict cookie (Secure
over TLS) — nothing stored server-side; every POST carries the session's CSRF token and must come
from this origin; credentials travel only in POST bodies and cookies, never in URLs, and are never
logged. Pages carry a strict Content-Security-Policy (scripts and styles from /ui/static only).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI

from aikeys.settings import SettingsError, env_bool, env_float, env_str

if TYPE_CHECKING:
    from aikeys_gateway.app import State


@dataclass(frozen=True)
class Settings:
    """AIKEYS_UI (default false: no pages), AIKEYS_UI_SESSION_KEY (32+ characters, the same on every
    replica; unset: a random key per process), AIKEYS_UI_SECURE_COOKIES (auto: Secure when the
    request came over https, directly or per X-Forwarded-Proto; always; never),
    AIKEYS_UI_SESSION_HOURS (8: how long a sign-in lasts, never longer than a token's own expiry)."""

    enabled: bool = False
    session_secret: str | None = None
    secure_cookies: str = "auto"
    session_hours: float = 8.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        secret = env_str(env, "AIKEYS_UI_SESSION_KEY")
        if secret is not None and len(secret) < 32:
            raise SettingsError("AIKEYS_UI_SESSION_KEY: use at least 32 random characters")
        secure = (env_str(env, "AIKEYS_UI_SECURE_COOKIES", "auto") or "auto").lower()
        if secure not in ("auto", "always", "never"):
            raise SettingsError(f"AIKEYS_UI_SECURE_COOKIES={secure!r}: auto, always or never")
        return cls(
            enabled=env_bool(env, "AIKEYS_UI", False),
            session_secret=secret,
            secure_cookies=secure,
            session_hours=env_float(env, "AIKEYS_UI_SESSION_HOURS", 8.0, minimum=0.01),
        )


def router(state: State, settings: Settings) -> APIRouter:
    """The pages' routes; the shared connection pool to the API server closes with the app."""
    from aikeys_gateway.ui.web import UI  # cryptography and the pages load only when they are on

    ui = UI(state, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await ui.close()

    r = APIRouter(prefix="/ui", include_in_schema=False, lifespan=lifespan)
    r.add_api_route("", ui.home, methods=["GET"])
    r.add_api_route("/", ui.home, methods=["GET"])
    r.add_api_route("/static/{name}", ui.static, methods=["GET"])
    r.add_api_route("/login", ui.login_form, methods=["GET"])
    r.add_api_route("/login", ui.login, methods=["POST"])
    r.add_api_route("/logout", ui.logout, methods=["POST"])
    r.add_api_route("/keys", ui.keys, methods=["GET"])
    r.add_api_route("/keys/create", ui.create, methods=["POST"])
    r.add_api_route("/keys/{verb}", ui.act, methods=["POST"])
    r.add_api_route("/usage", ui.usage, methods=["GET"])
    r.add_api_route("/usage.json", ui.usage_json, methods=["GET"])
    return r

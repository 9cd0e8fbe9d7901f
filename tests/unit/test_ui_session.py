"""The web pages' sealed session cookies, CSRF tokens and settings; the pages' number formats."""

from __future__ import annotations

import base64
import json
import time
from decimal import Decimal

import pytest
from aikeys_gateway.config import UISettings as Settings
from aikeys_gateway.ui.pages import ago, short_usd
from aikeys_gateway.ui.session import (
    Kind,
    Sealer,
    Session,
    clear_cookie,
    derive_key,
    jwt_expiry,
    same,
    set_cookie,
)
from starlette.responses import Response

from aikeys.settings import SettingsError

SECRET = "a-session-key-of-at-least-32-characters!"


def _session(expires: float | None = None) -> Session:
    return Session(Kind.TOKEN, "eyJ.secret-token.sig", "alice", "csrf-1", expires or time.time() + 60)


def test_sealed_sessions_open_only_with_the_key_and_unaltered() -> None:
    sealer = Sealer(derive_key(SECRET))
    sealed = sealer.seal(_session())
    assert "secret-token" not in sealed and "secret-token" not in base64.urlsafe_b64decode(
        sealed + "=="
    ).decode("latin-1")
    opened = sealer.unseal(sealed)
    assert opened is not None and (opened.kind, opened.credential, opened.user, opened.csrf) == (
        Kind.TOKEN,
        "eyJ.secret-token.sig",
        "alice",
        "csrf-1",
    )
    assert Sealer(derive_key(SECRET)).unseal(sealed) is not None  # another replica, the same key
    assert Sealer(derive_key(SECRET + "x")).unseal(sealed) is None  # another key
    flipped = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    assert sealer.unseal(flipped) is None and sealer.unseal("garbage") is None and sealer.unseal("") is None
    assert sealer.seal(_session()) != sealed  # a fresh nonce every time
    assert sealer.unseal(sealer.seal(_session(time.time() - 1))) is None  # expired


def test_proxy_sessions_derive_a_stable_csrf_token() -> None:
    sealer = Sealer(derive_key(SECRET))
    one = sealer.proxy_session(Kind.TOKEN, "tok", "", time.time() + 60)
    assert one.csrf == sealer.proxy_session(Kind.TOKEN, "tok", "", 0).csrf
    assert one.csrf != sealer.proxy_session(Kind.TOKEN, "other", "", 0).csrf
    assert one.csrf != Sealer(derive_key(SECRET + "x")).proxy_session(Kind.TOKEN, "tok", "", 0).csrf
    assert same("a", "a") and not same("a", "b") and not same(None, None) and not same("", "")


def _set_cookie_header(response: Response) -> str:
    return response.headers["set-cookie"].lower()


@pytest.mark.parametrize("secure", [False, True])
def test_a_cookie_is_cleared_with_the_attributes_it_was_set_with(secure: bool) -> None:
    def attributes(header: str) -> set[str]:
        return {a.strip() for a in header.split(";")[1:] if not a.strip().startswith(("max-age", "expires"))}

    set_, cleared = Response(), Response()
    set_cookie(set_, "aikeys_login", "csrf", secure=secure, max_age=3600)
    clear_cookie(cleared, "aikeys_login", secure=secure)
    header = _set_cookie_header(cleared)
    assert header.startswith('aikeys_login="";') and "max-age=0" in header
    assert "samesite=strict" in header and "httponly" in header and "path=/ui" in header
    assert attributes(header) == attributes(_set_cookie_header(set_))  # secure included, or not


def test_jwt_expiry_and_random_keys() -> None:
    claims = base64.urlsafe_b64encode(json.dumps({"exp": 1_900_000_000}).encode()).rstrip(b"=").decode()
    assert jwt_expiry(f"e30.{claims}.sig") == 1_900_000_000
    assert jwt_expiry("not-a-jwt") is None and jwt_expiry("a.!!!.c") is None
    assert derive_key(None) != derive_key(None) and len(derive_key(None)) == 32


def test_settings() -> None:
    assert Settings.from_env({}) == Settings()
    on = Settings.from_env(
        {"AIKEYS_UI": "true", "AIKEYS_UI_SESSION_KEY": SECRET, "AIKEYS_UI_SESSION_HOURS": "2"}
    )
    assert (on.enabled, on.session_secret, on.session_hours) == (True, SECRET, 2.0)
    with pytest.raises(SettingsError, match="AIKEYS_UI_SESSION_KEY"):
        Settings.from_env({"AIKEYS_UI_SESSION_KEY": "short"})
    with pytest.raises(SettingsError, match="AIKEYS_UI_SECURE_COOKIES"):
        Settings.from_env({"AIKEYS_UI_SECURE_COOKIES": "sometimes"})


def test_amounts_and_ages_read_well() -> None:
    assert [short_usd(Decimal(v)) for v in ("0", "12.5", "1234.5", "0.0425", "0.000063", "0.000000001")] == [
        "0.00",
        "12.50",
        "1,234.50",
        "0.0425",
        "0.000063",
        "0.0000000010",
    ]
    assert "never" in ago(None) and "ago" in ago("2020-01-01T00:00:00Z")

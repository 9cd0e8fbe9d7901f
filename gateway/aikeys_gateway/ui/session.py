"""Sessions of the web pages: sealed cookies, CSRF tokens, the cookie's flags.

A session is the person's own credential — a Kubernetes bearer token or an AI key — sealed into the
cookie with AES-256-GCM under the gateway's session key (`AIKEYS_UI_SESSION_KEY`, shared by every
replica), with its expiry and a random CSRF secret. The server stores nothing: the credential lives
in the browser's cookie jar (HttpOnly, SameSite=Strict, Path=/ui, Secure over TLS) and only this
gateway can read it; it never appears in a URL, a page or a log line. A leaked cookie is useless
after `exp` and cannot be replayed against the API server directly.

Behind an authenticating proxy (oauth2-proxy and the like, forwarding `Authorization: Bearer
<id-token>`), there is no cookie at all: the header is the session, and its CSRF token is derived
from the credential with an HMAC under the same key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from starlette.responses import Response

COOKIE = "aikeys_session"
LOGIN_COOKIE = "aikeys_login"  # the sign-in form's CSRF secret, before there is a session
PATH = "/ui"
_AAD = b"aikeys-ui-session-v1"
_NONCE = 12
MAX_COOKIE_BYTES = 4000  # browsers keep cookies up to 4096 bytes, name and attributes included


class Kind(StrEnum):
    TOKEN = "token"  # noqa: S105 - a kind: a Kubernetes bearer token (service account, OIDC id-token, ...)
    KEY = "key"  # an AI key: its own usage and budget only


@dataclass(frozen=True)
class Session:
    kind: Kind
    credential: str
    user: str  # what the pages show: the Kubernetes user name, or the key's namespace/name
    csrf: str
    expires: float  # epoch seconds
    from_proxy: bool = False  # the credential came in an Authorization header, not a cookie


def derive_key(secret: str | None) -> bytes:
    """The AES-256 key from the configured secret (any string of 32+ characters); without one a
    random key for this process (sessions then end with it, and other replicas cannot read them)."""
    if not secret:
        return os.urandom(32)
    return hashlib.sha256(b"aikeys-ui-session-key\x00" + secret.encode()).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sealer:
    def __init__(self, key: bytes):
        self._aead = AESGCM(key)
        self._mac_key = hashlib.sha256(b"aikeys-ui-csrf\x00" + key).digest()

    def seal(self, session: Session) -> str:
        payload = json.dumps(
            {
                "k": session.kind.value,
                "c": session.credential,
                "u": session.user,
                "x": session.csrf,
                "e": int(session.expires),
            },
            separators=(",", ":"),
        ).encode()
        nonce = os.urandom(_NONCE)
        return _b64(nonce + self._aead.encrypt(nonce, payload, _AAD))

    def unseal(self, value: str, now: float | None = None) -> Session | None:
        """The session in a cookie, or None when it is not ours, was altered or has expired."""
        try:
            raw = _unb64(value)
            payload = json.loads(self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], _AAD))
            session = Session(
                Kind(payload["k"]), payload["c"], payload["u"], payload["x"], float(payload["e"])
            )
        except (InvalidTag, ValueError, KeyError, TypeError, binascii.Error):
            return None
        if session.expires <= (time.time() if now is None else now):
            return None
        return session

    def proxy_session(self, kind: Kind, credential: str, user: str, expires: float) -> Session:
        """A session for a credential an authenticating proxy forwards with every request."""
        digest = hashlib.sha256(credential.encode()).digest()
        csrf = _b64(hmac.new(self._mac_key, digest, hashlib.sha256).digest())
        return Session(kind, credential, user, csrf, expires, from_proxy=True)


def new_csrf() -> str:
    return secrets.token_urlsafe(24)


def same(a: str | None, b: str | None) -> bool:
    """Constant-time comparison of two CSRF tokens (False when either is missing)."""
    return bool(a) and bool(b) and hmac.compare_digest(str(a).encode(), str(b).encode())


def jwt_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT (service-account and OIDC tokens), read without verifying it: the
    API server verifies the token; this only keeps a session from outliving it."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(_unb64(parts[1]))
    except (ValueError, binascii.Error):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) else None


def set_cookie(response: Response, name: str, value: str, *, secure: bool, max_age: int) -> None:
    """HttpOnly, SameSite=Strict, only for /ui; Secure when served over TLS."""
    response.set_cookie(
        name, value, max_age=max_age, path=PATH, secure=secure, httponly=True, samesite="strict"
    )


def clear_cookie(response: Response, name: str, *, secure: bool) -> None:
    """Ends a cookie with the attributes `set_cookie` gave it (a browser matches them)."""
    response.delete_cookie(name, path=PATH, secure=secure, httponly=True, samesite="strict")

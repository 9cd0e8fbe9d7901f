"""Who is calling: the AI key from the request headers, checked and looked up.

Accepted headers: `Authorization: Bearer <key>`, `api-key` and `x-api-key`. The format and
checksum are checked before any lookup (malformed keys never touch the index); the lookup is by
SHA-256, so the plaintext is never compared, stored or logged.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from aikeys import keys
from aikeys.lifecycle import accepts
from aikeys_gateway.cache.catalog import Catalog, KeyEntry
from aikeys_gateway.errors import unauthorized

MISSING = (
    "You didn't provide an API key. Send it as 'Authorization: Bearer <key>' "
    "(or in an 'api-key' header). Keys come from an AIKey's Secret or `kubectl aikeys keys create`."
)


def presented_key(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    return headers.get("api-key") or headers.get("x-api-key")


def authenticate(headers: Mapping[str, str], catalog: Catalog, now: dt.datetime) -> KeyEntry:
    key = presented_key(headers)
    if not key:
        raise unauthorized(MISSING)
    if not keys.well_formed(key):
        raise unauthorized("Incorrect API key provided: it is not an aikeys key (aik_…) or is mistyped.")
    key_hash = keys.key_hash(key)
    entry = catalog.key(key_hash)
    if entry is None:
        raise unauthorized("Incorrect API key provided: the key is unknown or has been revoked.")
    if not accepts(entry.spec, entry.status, key_hash, now):
        if entry.spec.disabled:
            raise unauthorized(f"The API key {entry.status.key_hint} is disabled.")
        if entry.status.expires_at is not None and entry.status.expires_at <= now:
            raise unauthorized(f"The API key {entry.status.key_hint} has expired.")
        raise unauthorized("The API key was rotated and its grace period is over; use the new key.")
    return entry

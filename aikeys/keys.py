"""The AI key format: recognisable, checksummed, 256 bits of entropy.

    aik_<43 base62 chars: 32 random bytes><6 base62 chars: CRC32 of the body>

The fixed prefix lets secret scanners spot leaked keys; the checksum lets the gateway reject
mistyped or made-up keys without a lookup. Only the SHA-256 of the whole key is stored
(`keyHash`); `hint` is the safe part to show (prefix and last 4 characters).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import zlib

PREFIX = "aik_"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}
BODY_LEN = 43  # 62**43 > 2**256
CHECK_LEN = 6  # 62**6 > 2**32
KEY_LEN = len(PREFIX) + BODY_LEN + CHECK_LEN


def _base62(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 62)
        out.append(_ALPHABET[r])
    if n:
        raise ValueError("number does not fit the width")
    return "".join(reversed(out))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), CHECK_LEN)


def mint() -> str:
    """A new key from the OS's CSPRNG."""
    body = _base62(int.from_bytes(secrets.token_bytes(32), "big"), BODY_LEN)
    return PREFIX + body + _checksum(body)


def well_formed(key: str) -> bool:
    """Prefix, length, alphabet and checksum are right (says nothing about validity)."""
    if len(key) != KEY_LEN or not key.startswith(PREFIX):
        return False
    rest = key[len(PREFIX) :]
    if any(c not in _INDEX for c in rest):
        return False
    body, check = rest[:BODY_LEN], rest[BODY_LEN:]
    return hmac.compare_digest(_checksum(body), check)


def key_hash(key: str) -> str:
    """Hex SHA-256 of the key: what status and the gateway's index hold."""
    return hashlib.sha256(key.encode()).hexdigest()


def hint(key: str) -> str:
    """`aik_…WXYZ`: enough to recognise a key, useless to an attacker."""
    return f"{PREFIX}…{key[-4:]}"

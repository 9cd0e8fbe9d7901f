"""The Secret that holds an AIKey's plaintext: built, and what an existing one holds.

The Secret is owned by its AIKey (deleting the key deletes it) and carries annotations for people
and tools: `aikeys.dev/rotation` (which spec.rotation the key is for), `aikeys.dev/key-hash` (its
SHA-256) and `aikeys.dev/key-hint`. The operator trusts none of them, nor the labels or the owner
reference: anyone allowed to create Secrets in the namespace can write those. What a Secret holds
is judged by the SHA-256 of the key in its data (`held`), against what the operator recorded in
the AIKey's status before writing it (see `aikeys_operator.keys`).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from aikeys import keys as keyformat
from aikeys.resources import API_VERSION

ROTATION = "aikeys.dev/rotation"
KEY_HASH = "aikeys.dev/key-hash"
KEY_HINT = "aikeys.dev/key-hint"
MANAGED_BY = "app.kubernetes.io/managed-by"
API_KEY_FIELD = "OPENAI_API_KEY"
BASE_URL_FIELD = "OPENAI_BASE_URL"


def secret_name(aikey_name: str) -> str:
    return f"aikey-{aikey_name}"


def held(secret: dict[str, Any]) -> tuple[str, str] | None:
    """(hash, hint) of the key a Secret's data holds; None when it holds no well-formed key."""
    value = (secret.get("data") or {}).get(API_KEY_FIELD)
    try:
        plaintext = base64.b64decode(str(value), validate=True).decode() if value else ""
    except (binascii.Error, UnicodeDecodeError):
        return None
    if not keyformat.well_formed(plaintext):
        return None
    return keyformat.key_hash(plaintext), keyformat.hint(plaintext)


def not_replaceable(secret: dict[str, Any]) -> str | None:
    """Why the operator must not overwrite this Secret (None: it may)."""
    name = secret["metadata"]["name"]
    if (secret["metadata"].get("labels") or {}).get(MANAGED_BY) != "aikeys":
        return f"Secret {name} exists and is not managed by aikeys; rename or delete it"
    if secret.get("type", "Opaque") != "Opaque" or secret.get("immutable"):
        return f"Secret {name} is immutable or not of type Opaque, so aikeys cannot write the key; delete it"
    return None


def build(
    aikey: dict[str, Any],
    plaintext: str,
    rotation: int,
    gateway_url: str | None,
    resource_version: str | None = None,
) -> dict[str, Any]:
    meta = aikey["metadata"]
    data = {API_KEY_FIELD: plaintext}
    if gateway_url:
        data[BASE_URL_FIELD] = gateway_url
    metadata: dict[str, Any] = {
        "name": secret_name(meta["name"]),
        "namespace": meta["namespace"],
        "labels": {MANAGED_BY: "aikeys", "aikeys.dev/aikey": meta["name"]},
        "annotations": {
            ROTATION: str(rotation),
            KEY_HASH: keyformat.key_hash(plaintext),
            KEY_HINT: keyformat.hint(plaintext),
        },
        "ownerReferences": [
            {
                "apiVersion": API_VERSION,
                "kind": "AIKey",
                "name": meta["name"],
                "uid": meta["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    if resource_version:
        metadata["resourceVersion"] = resource_version
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": metadata,
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }

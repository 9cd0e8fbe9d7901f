"""The Secret that holds an AIKey's plaintext: built, written and read back (for adoption).

The Secret is owned by its AIKey (deleting the key deletes it) and carries annotations that
make minting idempotent: `aikeys.dev/rotation` (which spec.rotation the key is for) and
`aikeys.dev/key-hash` (its SHA-256). If the operator stops after writing the Secret but before
recording the hash in status, the next run finds the Secret and adopts its key instead of
minting another.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from aikeys.resources import API_VERSION

ROTATION = "aikeys.dev/rotation"
KEY_HASH = "aikeys.dev/key-hash"
API_KEY_FIELD = "OPENAI_API_KEY"
BASE_URL_FIELD = "OPENAI_BASE_URL"


def secret_name(aikey_name: str) -> str:
    return f"aikey-{aikey_name}"


@dataclass(frozen=True)
class Stored:
    """What an existing key Secret says (never the plaintext: only what adoption needs)."""

    rotation: int | None
    key_hash: str | None
    resource_version: str


def read(secret: dict[str, Any]) -> Stored:
    annotations = secret.get("metadata", {}).get("annotations") or {}
    rotation = annotations.get(ROTATION)
    return Stored(
        rotation=int(rotation) if rotation is not None and str(rotation).isdigit() else None,
        key_hash=annotations.get(KEY_HASH),
        resource_version=secret["metadata"]["resourceVersion"],
    )


def build(
    aikey: dict[str, Any],
    plaintext: str,
    key_hash: str,
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
        "labels": {"app.kubernetes.io/managed-by": "aikeys", "aikeys.dev/aikey": meta["name"]},
        "annotations": {ROTATION: str(rotation), KEY_HASH: key_hash},
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

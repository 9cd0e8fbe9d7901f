"""An AIProvider's status, and the projection of its credentials for the gateway."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aikeys import credentials
from aikeys.kube.client import KubeClient, path
from aikeys.resources import AIProviderSpec, model_id
from aikeys_operator.conditions import set_condition


async def project(kube: KubeClient, target: tuple[str, str], key: str, value_b64: str | None) -> None:
    """Set (or with None remove) one provider's API key in the gateway's projected Secret."""
    namespace, name = target
    url = path("v1", "secrets", namespace, name)
    current = await kube.get_or_none(url)
    if current is None:
        if value_b64 is None:
            return
        await kube.create(
            path("v1", "secrets", namespace),
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": {"app.kubernetes.io/managed-by": "aikeys"},
                },
                "data": {key: value_b64},
            },
        )
        return
    if (current.get("data") or {}).get(key) != value_b64:
        await kube.patch(url, {"data": {key: value_b64}})


async def refresh(
    body: dict[str, Any], kube: KubeClient, now: dt.datetime, target: tuple[str, str]
) -> dict[str, Any]:
    """Status patch for the provider (only what changed); projects its credentials on the way."""
    meta = body["metadata"]
    spec = AIProviderSpec.model_validate(body.get("spec") or {})
    old = body.get("status") or {}
    ref = spec.credentials_secret_ref
    value: str | None = None
    if ref is None:
        ready, reason, message = True, "NoCredentialsNeeded", "Keyless upstream: no credentials are sent"
    else:
        secret = await kube.get_or_none(path("v1", "secrets", meta["namespace"], ref.name))
        value = ((secret or {}).get("data") or {}).get(ref.key)
        if secret is None:
            ready, reason, message = (
                False,
                "SecretNotFound",
                f"Secret {ref.name} not found in {meta['namespace']}",
            )
        elif value is None:
            ready, reason, message = False, "SecretKeyMissing", f"Secret {ref.name} has no key {ref.key!r}"
        else:
            ready, reason, message = True, "CredentialsFound", f"Credentials from Secret {ref.name}/{ref.key}"
    await project(kube, target, credentials.data_key(meta["namespace"], meta["name"]), value)
    new = {
        "modelCount": len(spec.models),
        "modelIds": [model_id(meta["namespace"], meta["name"], m.name) for m in spec.models],
        "observedGeneration": meta.get("generation"),
        "conditions": set_condition(
            old.get("conditions"), "Ready", ready, reason, message, now, meta.get("generation")
        ),
    }
    return {k: v for k, v in new.items() if old.get(k) != v}

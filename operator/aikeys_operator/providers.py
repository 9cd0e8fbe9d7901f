"""An AIProvider's status: its model IDs and whether its credentials are in place."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aikeys.kube.client import KubeClient, path
from aikeys.resources import AIProviderSpec, model_id
from aikeys_operator.conditions import set_condition


async def refresh(body: dict[str, Any], kube: KubeClient, now: dt.datetime) -> dict[str, Any]:
    meta = body["metadata"]
    spec = AIProviderSpec.model_validate(body.get("spec") or {})
    old = body.get("status") or {}
    ref = spec.credentials_secret_ref
    if ref is None:
        ready, reason, message = True, "NoCredentialsNeeded", "Keyless upstream: no credentials are sent"
    else:
        secret = await kube.get_or_none(path("v1", "secrets", meta["namespace"], ref.name))
        if secret is None:
            ready, reason, message = (
                False,
                "SecretNotFound",
                f"Secret {ref.name} not found in {meta['namespace']}",
            )
        elif ref.key not in (secret.get("data") or {}):
            ready, reason, message = False, "SecretKeyMissing", f"Secret {ref.name} has no key {ref.key!r}"
        else:
            ready, reason, message = True, "CredentialsFound", f"Credentials from Secret {ref.name}/{ref.key}"
    new = {
        "modelCount": len(spec.models),
        "modelIds": [model_id(meta["namespace"], meta["name"], m.name) for m in spec.models],
        "observedGeneration": meta.get("generation"),
        "conditions": set_condition(
            old.get("conditions"), "Ready", ready, reason, message, now, meta.get("generation")
        ),
    }
    return {k: v for k, v in new.items() if old.get(k) != v}

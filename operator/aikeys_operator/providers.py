"""An AIProvider's status, the projection of its credentials for the gateway, and the overruns
gateways reported for it.

Only a Secret of type `aikeys.dev/provider-credentials` is projected (see `aikeys.credentials`).
The credential's value goes from one Secret to the other and nowhere else: status, events,
logs and exception messages name the Secret, never its contents.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aikeys import credentials
from aikeys.kube.client import KubeClient, path
from aikeys.notices import Overrun
from aikeys.resources import AIProviderSpec, model_id
from aikeys_operator.conditions import condition, set_condition
from aikeys_operator.keys import Event

NOT_MARKED = "SecretNotMarked"


@dataclass
class ProviderRefresh:
    status: dict[str, Any]  # merge patch for .status (only what changed)
    events: list[Event] = field(default_factory=list)


def not_marked_message(namespace: str, name: str, key: str, secret_type: str) -> str:
    return (
        f"Secret {name} has type {secret_type or 'Opaque'}, not {credentials.SECRET_TYPE}: its "
        "contents are never sent upstream. A Secret's type cannot be changed, so recreate it: "
        f"kubectl delete secret {name} -n {namespace} && kubectl create secret generic {name} "
        f"-n {namespace} --type={credentials.SECRET_TYPE} --from-literal={key}=..."
    )


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
) -> ProviderRefresh:
    """Status patch for the provider (only what changed); projects its credentials on the way."""
    meta = body["metadata"]
    namespace = meta["namespace"]
    spec = AIProviderSpec.model_validate(body.get("spec") or {})
    old = body.get("status") or {}
    ref = spec.credentials_secret_ref
    value: str | None = None
    events: list[Event] = []
    if ref is None:
        ready, reason, message = True, "NoCredentialsNeeded", "Keyless upstream: no credentials are sent"
    else:
        secret = await kube.get_or_none(path("v1", "secrets", namespace, ref.name))
        secret_type = str((secret or {}).get("type") or "")
        if secret is None:
            ready, reason, message = False, "SecretNotFound", f"Secret {ref.name} not found in {namespace}"
        elif secret_type != credentials.SECRET_TYPE:  # opt-in: the value is not even read
            ready, reason = False, NOT_MARKED
            message = not_marked_message(namespace, ref.name, ref.key, secret_type)
            if (condition(old.get("conditions"), "Ready") or {}).get("reason") != NOT_MARKED:
                events.append(Event("Warning", NOT_MARKED, message))
        else:
            value = (secret.get("data") or {}).get(ref.key)
            if value is None:
                ready, reason = False, "SecretKeyMissing"
                message = f"Secret {ref.name} has no key {ref.key!r}"
            else:
                ready, reason = True, "CredentialsFound"
                message = f"Credentials from Secret {ref.name}/{ref.key}"
    await project(kube, target, credentials.data_key(namespace, meta["name"]), value)
    new = {
        "modelCount": len(spec.models),
        "modelIds": [model_id(namespace, meta["name"], m.name) for m in spec.models],
        "observedGeneration": meta.get("generation"),
        "conditions": set_condition(
            old.get("conditions"), "Ready", ready, reason, message, now, meta.get("generation")
        ),
    }
    return ProviderRefresh({k: v for k, v in new.items() if old.get(k) != v}, events)


def overrun_event(overruns: list[Overrun]) -> Event | None:
    """One Warning event summarising the overruns gateways reported since the last refresh."""
    if not overruns:
        return None
    worst = max(overruns, key=lambda o: (o.reported - o.cap, o.reported))
    by_model = Counter(o.model for o in overruns)
    models = ", ".join(f"{model} ×{n}" for model, n in by_model.most_common(5))
    if len(by_model) > 5:
        models += f", and {len(by_model) - 5} more"
    n = len(overruns)
    return Event(
        "Warning",
        "UpstreamOverReported",
        f"{n} response{'s' if n != 1 else ''} reported more output tokens than the cap "
        f"the gateway sent ({models}); worst: {worst.reported} tokens reported for a cap of "
        f"{worst.cap} (model {worst.model}, request {worst.request_id}). What the upstream reports "
        "is charged, so an allocation can go past its budget by the difference.",
    )

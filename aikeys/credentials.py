"""Where provider credentials meet the gateway: one projected Secret.

The gateway serves untrusted traffic, so it may not read Secrets at large. The operator copies
each AIProvider's API key from the Secret its `credentialsSecretRef` names into one Secret in
the gateway's namespace (default `aikeys-provider-credentials`), under the data key
`<provider namespace>.<provider name>`. The gateway's RBAC allows `get`/`list`/`watch` of that
one Secret by name, nothing else.

Projection is opt-in: only a Secret of type `aikeys.dev/provider-credentials` (`SECRET_TYPE`) is
ever copied, so an AIProvider cannot make the gateway send some other Secret of its namespace
(a database password, a TLS key) to an upstream of its choosing. Create one with

    kubectl create secret generic openai -n team-a \
        --type=aikeys.dev/provider-credentials --from-literal=apiKey=sk-...

The type of an existing Secret cannot be changed: delete and recreate it. For any other type the
operator projects nothing (and removes what it projected before) and sets the AIProvider's
Ready condition to False with reason `SecretNotMarked`.
"""

from __future__ import annotations

DEFAULT_NAME = "aikeys-provider-credentials"
SECRET_TYPE = "aikeys.dev/provider-credentials"  # noqa: S105 - a Secret type, not a secret
ENV = "AIKEYS_CREDENTIALS_SECRET"  # "<namespace>/<name>"


def data_key(namespace: str, provider: str) -> str:
    """Secret data keys allow [-._a-zA-Z0-9]; namespaces have no dots, so this never collides."""
    return f"{namespace}.{provider}"


def location(value: str | None, default_namespace: str) -> tuple[str, str]:
    """(namespace, name) of the projected Secret from the value of AIKEYS_CREDENTIALS_SECRET
    ("namespace/name", or a name in `default_namespace`; unset: the default name there).
    Each component's settings read the variable; a part left empty is a ValueError."""
    value = value or DEFAULT_NAME
    namespace, _, name = value.rpartition("/") if "/" in value else (default_namespace, "", value)
    if not namespace or not name or "/" in namespace:
        raise ValueError(f"{value!r}: not a Secret's namespace/name")
    return namespace, name

"""Where provider credentials meet the gateway: one projected Secret.

The gateway serves untrusted traffic, so it may not read Secrets at large. The operator copies
each AIProvider's API key from the Secret its `credentialsSecretRef` names into one Secret in
the gateway's namespace (default `aikeys-provider-credentials`), under the data key
`<provider namespace>.<provider name>`. The gateway's RBAC allows `get`/`list`/`watch` of that
one Secret by name, nothing else.
"""

from __future__ import annotations

import os

DEFAULT_NAME = "aikeys-provider-credentials"
ENV = "AIKEYS_CREDENTIALS_SECRET"  # "<namespace>/<name>"


def data_key(namespace: str, provider: str) -> str:
    """Secret data keys allow [-._a-zA-Z0-9]; namespaces have no dots, so this never collides."""
    return f"{namespace}.{provider}"


def location(default_namespace: str) -> tuple[str, str]:
    """(namespace, name) of the projected Secret, from $AIKEYS_CREDENTIALS_SECRET or defaults."""
    value = os.environ.get(ENV, "")
    if "/" in value:
        namespace, name = value.split("/", 1)
        return namespace, name
    return default_namespace, value or DEFAULT_NAME

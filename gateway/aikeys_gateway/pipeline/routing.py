"""From a model ID (`owner:provider/model`) to the upstream that serves it, for a given key."""

from __future__ import annotations

from dataclasses import dataclass

from aikeys.limits import truncate
from aikeys.resources import parse_model_id
from aikeys_gateway.cache.catalog import Catalog, KeyEntry, ModelEntry, ProviderEntry
from aikeys_gateway.errors import forbidden, invalid_request, not_found
from aikeys_gateway.upstreams.kinds import UpstreamKind, kind_of


@dataclass(frozen=True)
class Route:
    model_id: str
    provider: ProviderEntry
    model: ModelEntry
    credential: str | None
    weight: int = 1
    backends: tuple[Route, ...] = ()  # other upstreams that serve the same model

    @property
    def kind(self) -> UpstreamKind:
        return kind_of(self.provider)

    def url(self, endpoint: str) -> str:
        return self.kind.url(self.provider, endpoint, self.model.upstream_name)

    def auth_headers(self) -> dict[str, str]:
        return self.kind.auth_headers(self.credential)


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """Exact host names, or `*.suffix` for any host under suffix. Empty: every host."""
    if not allowed:
        return True
    return any(host == a or (a.startswith("*.") and host.endswith(a[1:])) for a in allowed)


def resolve(model_id: object, key: KeyEntry, catalog: Catalog, allowed_hosts: tuple[str, ...] = ()) -> Route:
    if not isinstance(model_id, str) or not model_id:
        raise invalid_request("you must provide a model parameter", param="model")
    parsed = parse_model_id(model_id)
    if parsed is None:
        raise not_found(
            f"The model `{truncate(model_id)}` does not exist: model IDs look like "
            "'namespace:provider/model' (list them with GET /models)."
        )
    owner, provider_name, model_name = parsed
    provider = catalog.provider(owner, provider_name)
    model = provider.models.get(model_name) if provider else None
    # a model this key may not use answers exactly like one that does not exist
    if provider is None or model is None or not provider.shared_to(key.namespace) or not key.allows(model_id):
        raise not_found(f"The model `{truncate(model_id)}` does not exist or you do not have access to it.")
    if not host_allowed(provider.host, allowed_hosts):
        raise forbidden(
            f"The provider {owner}:{provider_name} points at a host this gateway may not call; "
            "ask the platform team to allow it (gateway.upstreamHosts).",
            code="upstream_not_allowed",
        )
    credential = catalog.credential(provider)
    if provider.has_credentials and credential is None:
        raise forbidden(
            f"The provider {owner}:{provider_name} has no credentials yet.", code="provider_not_ready"
        )
    backends = tuple(_backends(model, provider, key.namespace, catalog, allowed_hosts))
    return Route(model_id, provider, model, credential, model.weight, backends)


def _backends(
    model: ModelEntry,
    provider: ProviderEntry,
    caller: str,
    catalog: Catalog,
    allowed_hosts: tuple[str, ...],
) -> list[Route]:
    """The usable backends of a model: existing, shared with its provider's namespace *and* with the
    caller's (sharing is not transitive: a model published to everyone cannot lend out a provider
    shared only with its publisher), on an allowed host, with credentials. Others are left out (the
    AIProvider's status says why)."""
    found = []
    for backend_id, weight in model.backends:
        parsed = parse_model_id(backend_id)
        other = catalog.provider(parsed[0], parsed[1]) if parsed else None
        served = other.models.get(parsed[2]) if other and parsed else None
        if other is None or served is None:
            continue
        if not (other.shared_to(provider.namespace) and other.shared_to(caller)):
            continue
        credential = catalog.credential(other)
        if not host_allowed(other.host, allowed_hosts) or (other.has_credentials and credential is None):
            continue
        found.append(Route(backend_id, other, served, credential, weight))
    return found

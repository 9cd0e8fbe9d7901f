"""What the gateway knows, indexed for the request path: keys by hash, allocations, providers,
credentials. Built from informers; every lookup is a dict access."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import functools
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aikeys import credentials, tokenizers
from aikeys.durations import parse_duration
from aikeys.kube.client import KubeClient, path
from aikeys.ledger.specs import allocation, rate_limit
from aikeys.ledger.store import Allocation, KeyLabel, RateLimit
from aikeys.money import Price
from aikeys.resources import (
    GROUP,
    VERSION,
    AIKeySpec,
    AIKeyStatus,
    AIProviderSpec,
    AllocationSpec,
    KeyPhase,
    MaxTokensParameter,
    ModelUse,
    ProviderType,
    ResponsesAPI,
    model_use,
    parse_model_id,
)
from aikeys_gateway.cache.informers import Informer, Key

API = f"{GROUP}/{VERSION}"
OPENAI_HOST = "api.openai.com"  # a provider there is OpenAI itself (its vocabularies, its parameters)


def _glob(pattern: str) -> re.Pattern[str]:
    """`*` matches any run of characters; everything else is literal."""
    return re.compile("^" + ".*".join(re.escape(part) for part in pattern.split("*")) + "$")


@dataclass(frozen=True, slots=True)
class KeySpec:
    """What the gateway reads of an AIKey's spec. The parsed AIKeySpec and AIKeyStatus models are
    not kept: with their conditions they cost ~5 KB a key, this ~1 KB (measured: bench.scale)."""

    disabled: bool = False
    models: tuple[str, ...] = ()
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class KeyStatus:
    """What the gateway reads of an AIKey's status (see KeySpec)."""

    key_hash: str | None = None
    key_hint: str | None = None
    phase: KeyPhase | None = None
    created_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None
    last_used_at: dt.datetime | None = None
    previous_key_hash: str | None = None
    previous_key_valid_until: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class KeyEntry:
    namespace: str
    name: str
    allocation: str
    spec: KeySpec
    status: KeyStatus
    patterns: tuple[re.Pattern[str], ...]
    limits: RateLimit | None = None
    uid: str = ""  # metadata.uid: what the ledger and stored responses know the key by, never its name

    def allows(self, model_id: str) -> bool:
        return not self.patterns or any(p.match(model_id) for p in self.patterns)

    @property
    def label(self) -> KeyLabel:
        """How usage reports show this key (also once it is deleted)."""
        return KeyLabel(self.name, self.spec.owner)


@functools.lru_cache(maxsize=16384)
def _pattern(model: str) -> re.Pattern[str]:
    """One compiled pattern shared by every key that names it (re's own cache holds 512)."""
    return _glob(model)


def key_entry(obj: dict[str, Any]) -> KeyEntry:
    spec = AIKeySpec.model_validate(obj.get("spec") or {})
    status = AIKeyStatus.model_validate(obj.get("status") or {})
    models = tuple(sys.intern(m) for m in spec.models)
    return KeyEntry(
        namespace=sys.intern(obj["metadata"]["namespace"]),
        name=obj["metadata"]["name"],
        allocation=sys.intern(spec.allocation_ref.name),
        spec=KeySpec(spec.disabled, models, spec.owner),
        status=KeyStatus(
            status.key_hash,
            status.key_hint,
            status.phase,
            status.created_at,
            status.expires_at,
            status.last_used_at,
            status.previous_key_hash,
            status.previous_key_valid_until,
        ),
        patterns=tuple(_pattern(m) for m in models),
        limits=rate_limit(spec.limits),
        uid=obj["metadata"]["uid"],
    )


def allocation_entry(obj: dict[str, Any]) -> Allocation:
    meta = obj["metadata"]
    return allocation(meta["namespace"], meta["name"], AllocationSpec.model_validate(obj.get("spec") or {}))


@dataclass(frozen=True)
class ModelEntry:
    name: str
    upstream_name: str
    price: Price
    max_output_tokens: int | None
    encoding: str | None  # the OpenAI vocabulary that bounds its input, None: the byte bound
    responses_native: bool  # serves POST /responses itself (else: translated to chat completions)
    context_window: int | None = None  # bounds input stored upstream (previous_response_id, file ids)
    limits: RateLimit | None = None  # across every key and allocation
    rate_scope: str = ""  # its rate window's Redis key
    weight: int = 1  # share of first attempts among its backends
    backends: tuple[tuple[str, int], ...] = ()  # (model ID, weight) of other upstreams serving it
    use: ModelUse = ModelUse.CHAT  # what it is for: the Connect page names chat models to chat tools


@dataclass(frozen=True)
class ProviderEntry:
    namespace: str
    name: str
    type: ProviderType
    base_url: str
    azure_api_version: str | None
    has_credentials: bool
    shared_with: frozenset[str]
    stream_usage: bool
    timeout_seconds: float
    host: str
    max_tokens_parameter: str  # where a chat request's output cap goes
    models: dict[str, ModelEntry] = field(default_factory=dict)

    def shared_to(self, namespace: str) -> bool:
        return namespace == self.namespace or "*" in self.shared_with or namespace in self.shared_with


def provider_entry(obj: dict[str, Any]) -> ProviderEntry:
    spec = AIProviderSpec.model_validate(obj.get("spec") or {})
    meta = obj["metadata"]
    host = (urlsplit(spec.base_url).hostname or "").lower()
    native = spec.type is ProviderType.AZURE_OPENAI or host == OPENAI_HOST
    parameter = spec.max_tokens_parameter or (
        MaxTokensParameter.MAX_COMPLETION_TOKENS if native else MaxTokensParameter.MAX_TOKENS
    )
    return ProviderEntry(
        namespace=meta["namespace"],
        name=meta["name"],
        type=spec.type,
        base_url=spec.base_url.rstrip("/"),
        azure_api_version=spec.azure.api_version if spec.azure else None,
        has_credentials=spec.credentials_secret_ref is not None,
        shared_with=frozenset(spec.shared_with),
        stream_usage=spec.stream_usage,
        timeout_seconds=parse_duration(spec.timeout).total_seconds(),
        host=host,
        max_tokens_parameter=parameter.value,
        models={
            m.name: ModelEntry(
                m.name,
                m.upstream_name or m.name,
                Price.parse(
                    m.input_price_per_million,
                    m.output_price_per_million,
                    m.cached_input_price_per_million,
                    m.cache_write_price_per_million,
                    m.cache_write1h_price_per_million,
                ),
                m.max_output_tokens,
                tokenizers.resolve(m.tokenizer.value, m.upstream_name or m.name, native),
                (m.responses_api or (ResponsesAPI.NATIVE if host == OPENAI_HOST else ResponsesAPI.CHAT))
                is ResponsesAPI.NATIVE,
                m.context_window,
                rate_limit(m.limits),
                f"aikeys:{{model/{meta['namespace']}/{meta['name']}/{m.name}}}:rl",
                m.weight,
                tuple((b.model, b.weight) for b in m.backends),
                model_use(m),
            )
            for m in spec.models
        },
    )


def credentials_entry(obj: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}


class Catalog:
    """The informers and the indexes derived from them."""

    def __init__(self, kube: KubeClient, credentials_secret: tuple[str, str], watch_timeout: int = 300):
        self.by_hash: dict[str, KeyEntry] = {}
        self.keys: Informer[KeyEntry] = Informer(
            kube,
            "AIKey",
            path(API, "aikeys"),
            key_entry,
            self._key_changed,
            self._keys_relisted,
            watch_timeout=watch_timeout,
        )
        self.allocations: Informer[Allocation] = Informer(
            kube, "Allocation", path(API, "allocations"), allocation_entry, watch_timeout=watch_timeout
        )
        self.providers: Informer[ProviderEntry] = Informer(
            kube, "AIProvider", path(API, "aiproviders"), provider_entry, watch_timeout=watch_timeout
        )
        ns, name = credentials_secret
        self.secrets: Informer[dict[str, str]] = Informer(
            kube,
            "Secret",
            path("v1", "secrets", ns),
            credentials_entry,
            field_selector=f"metadata.name={name}",
            watch_timeout=watch_timeout,
        )
        self.credentials_secret = credentials_secret
        self.informers: tuple[Informer[Any], ...] = (
            self.keys,
            self.allocations,
            self.providers,
            self.secrets,
        )
        self._tasks: list[asyncio.Task[None]] = []

    # --- index maintenance ------------------------------------------------------------------------

    @staticmethod
    def _hashes(entry: KeyEntry) -> Iterable[str]:
        if entry.status.key_hash:
            yield entry.status.key_hash
        if entry.status.previous_key_hash:
            yield entry.status.previous_key_hash

    def _key_changed(self, key: Key, old: KeyEntry | None, new: KeyEntry | None) -> None:
        if old is not None:
            for h in self._hashes(old):
                if self.by_hash.get(h) is old:
                    del self.by_hash[h]
        if new is not None:
            for h in self._hashes(new):
                self.by_hash[h] = new

    def _keys_relisted(self, objects: dict[Key, KeyEntry]) -> None:
        self.by_hash = {h: e for e in objects.values() for h in self._hashes(e)}

    # --- lookups ----------------------------------------------------------------------------------

    def key(self, key_hash: str) -> KeyEntry | None:
        return self.by_hash.get(key_hash)

    def allocation(self, namespace: str, name: str) -> Allocation | None:
        return self.allocations.objects.get((namespace, name))

    def provider(self, namespace: str, name: str) -> ProviderEntry | None:
        return self.providers.objects.get((namespace, name))

    def price(self, model_id: str) -> Price | None:
        """A model's current prices, by its ID (`owner:provider/model`); None if not served."""
        parsed = parse_model_id(model_id)
        provider = self.provider(parsed[0], parsed[1]) if parsed else None
        model = provider.models.get(parsed[2]) if provider and parsed else None
        return model.price if model else None

    def credential(self, provider: ProviderEntry) -> str | None:
        data = self.secrets.objects.get(self.credentials_secret)
        return None if data is None else data.get(credentials.data_key(provider.namespace, provider.name))

    def models_for(self, entry: KeyEntry) -> list[tuple[str, ProviderEntry]]:
        """Every model ID this key may use, with its provider."""
        found = []
        for provider in self.providers.objects.values():
            if not provider.shared_to(entry.namespace):
                continue
            for model in provider.models:
                mid = f"{provider.namespace}:{provider.name}/{model}"
                if entry.allows(mid):
                    found.append((mid, provider))
        return sorted(found, key=lambda pair: pair[0])

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [asyncio.create_task(i.run(), name=f"informer-{i.kind}") for i in self.informers]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def synced(self) -> bool:
        return all(i.synced.is_set() for i in self.informers)

    def sizes(self) -> dict[str, int]:
        return {i.kind: len(i.objects) for i in self.informers} | {"KeyHash": len(self.by_hash)}

"""Upstream kinds: one module per kind of backend an `AIProvider` can be, behind one interface.

An upstream kind says where a request goes, how the gateway authenticates there, how the body is
rewritten for it (model name, output cap, usage on streams) and how usage is read back, from a
whole answer and from events. The pipeline knows only this interface; a new backend kind is a new
module here and a line in `KINDS`.
"""

from __future__ import annotations

from typing import Any, Protocol

from aikeys.estimate import Endpoint, OutputCap
from aikeys.resources import ProviderType
from aikeys.usage import Output, Usage
from aikeys_gateway.cache.catalog import ModelEntry, ProviderEntry
from aikeys_gateway.upstreams.azure import AzureOpenAI
from aikeys_gateway.upstreams.openai import OpenAI
from aikeys_gateway.upstreams.sse import Reader


class UpstreamKind(Protocol):
    name: str

    def url(self, provider: ProviderEntry, path: str, deployment: str = "") -> str: ...

    def auth_headers(self, credential: str | None) -> dict[str, str]: ...

    def body(
        self,
        endpoint: Endpoint,
        body: dict[str, Any],
        provider: ProviderEntry,
        model: ModelEntry,
        cap: OutputCap,
        stream: bool,
    ) -> dict[str, Any]: ...

    def reader(self, endpoint: Endpoint, request: dict[str, Any]) -> Reader: ...

    def usage(self, endpoint: Endpoint, parsed: Any) -> tuple[Usage | None, Output]: ...


KINDS: dict[ProviderType, UpstreamKind] = {
    ProviderType.OPENAI: OpenAI(),
    ProviderType.AZURE_OPENAI: AzureOpenAI(),
}


def kind_of(provider: ProviderEntry) -> UpstreamKind:
    return KINDS[provider.type]

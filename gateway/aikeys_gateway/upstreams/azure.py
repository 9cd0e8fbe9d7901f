"""The Azure OpenAI upstream kind (`AIProvider` type `azure-openai`): OpenAI's wire format behind
Azure's URLs (a deployment per model, an `api-version`) and its `api-key` header."""

from __future__ import annotations

from aikeys_gateway.cache.catalog import ProviderEntry
from aikeys_gateway.upstreams.openai import OpenAI


class AzureOpenAI(OpenAI):
    name = "azure-openai"

    def url(self, provider: ProviderEntry, path: str, deployment: str = "") -> str:
        if path.startswith("responses"):  # Azure's v1 API: no deployment in the path
            return f"{provider.base_url}/openai/v1/{path}"
        base = f"{provider.base_url}/openai/deployments/{deployment}"
        return f"{base}/{path}?api-version={provider.azure_api_version}"

    def auth_headers(self, credential: str | None) -> dict[str, str]:
        return {} if credential is None else {"api-key": credential}

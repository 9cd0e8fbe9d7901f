"""The OpenAI-compatible upstream kind (`AIProvider` type `openai`, and what Azure shares with it).

Where a request goes (`base_url` + the endpoint), how the gateway authenticates (`Authorization:
Bearer`), how the body is rewritten (the upstream's model name, the output cap in the provider's
max-tokens parameter, usage asked for on streams), and how usage is read: from a JSON answer
(`json_output`) and from events (`ChatReader` for chat and text completions, `ResponsesReader` for
the Responses API).

* `ChatReader`: usage from the usage chunk — hidden from a client that did not ask for it (we may
  have asked the upstream on our own) —, generated parts from the choices, `[DONE]` as the end.
* `ResponsesReader`: generated parts from the `*.delta` events, usage and the end from
  `response.completed` / `response.incomplete` / `response.failed`.
"""

from __future__ import annotations

from typing import Any

from aikeys.estimate import Endpoint, OutputCap, apply_cap
from aikeys.usage import Output, Usage, reported_usage
from aikeys_gateway.cache.catalog import ModelEntry, ProviderEntry
from aikeys_gateway.upstreams.sse import DONE, Reader

_ENDS = ("response.completed", "response.incomplete", "response.failed")


class OpenAI:
    """The upstream kind: the request's way there and the usage's way back."""

    name = "openai"

    def url(self, provider: ProviderEntry, path: str, deployment: str = "") -> str:
        """Upstream URL of `path` ("chat/completions", "embeddings", "responses/<id>", …)."""
        return f"{provider.base_url}/{path}"

    def auth_headers(self, credential: str | None) -> dict[str, str]:
        return {} if credential is None else {"Authorization": f"Bearer {credential}"}

    def body(
        self,
        endpoint: Endpoint,
        body: dict[str, Any],
        provider: ProviderEntry,
        model: ModelEntry,
        cap: OutputCap,
        stream: bool,
    ) -> dict[str, Any]:
        """The request as this upstream gets it: its model name, the cap, usage on streams."""
        upstream = dict(body)
        upstream["model"] = model.upstream_name
        apply_cap(endpoint, upstream, cap, provider.max_tokens_parameter)
        if stream and endpoint is not Endpoint.RESPONSES and provider.stream_usage:
            upstream["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        return upstream

    def reader(self, endpoint: Endpoint, request: dict[str, Any]) -> Reader:
        """How a stream of this endpoint is read."""
        if endpoint is Endpoint.RESPONSES:
            return ResponsesReader()
        return ChatReader(bool((request.get("stream_options") or {}).get("include_usage")))

    def usage(self, endpoint: Endpoint, parsed: Any) -> tuple[Usage | None, Output]:
        """Usage and generated parts of a whole answer (embeddings report no output)."""
        return json_output(parsed, with_output=endpoint is not Endpoint.EMBEDDINGS)


class ChatReader:
    def __init__(self, client_wants_usage: bool):
        self.client_wants_usage = client_wants_usage
        self.usage: Usage | None = None
        self.output = Output()
        self.done = False
        self.finished = False  # a choice carried a finish_reason

    def read(self, raw: bytes, data: Any) -> bytes:
        if data is DONE:
            self.done = True
            return raw
        if not isinstance(data, dict):
            return raw
        self.output.add_choices(data)
        choices = data.get("choices")
        if isinstance(choices, list) and any(isinstance(c, dict) and c.get("finish_reason") for c in choices):
            self.finished = True
        usage = data.get("usage")
        if usage is not None:
            found = reported_usage(usage)
            if found is not None:
                self.usage = found
            if not choices and not self.client_wants_usage:
                return b""  # the extra usage chunk we asked for: the client never sees it
        return raw

    def close(self) -> bytes:
        return b""


class ResponsesReader:
    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.output = Output()
        self.done = False
        self.response_id: str | None = None

    def read(self, raw: bytes, data: Any) -> bytes:
        if not isinstance(data, dict):
            return raw
        self.output.add_event(data)
        kind = data.get("type")
        if kind == "response.created":
            response = data.get("response")
            if isinstance(response, dict) and isinstance(response.get("id"), str):
                self.response_id = response["id"]
        elif kind in _ENDS:
            self.done = True
            response = data.get("response")
            if isinstance(response, dict):
                self.usage = reported_usage(response.get("usage"))
        return raw

    def close(self) -> bytes:
        return b""


def json_output(body: Any, with_output: bool = True) -> tuple[Usage | None, Output]:
    """Usage and generated parts of a non-streamed response (embeddings report no output)."""
    output = Output()
    output.add_choices(body)
    output.add_response(body)
    usage = body.get("usage") if isinstance(body, dict) else None
    return reported_usage(usage, with_output), output

"""The Vercel AI SDK (`ai`) through the gateway: @ai-sdk/openai's default `openai(model)` — the
Responses API — on a Responses-native and on a chat-only model, and @ai-sdk/openai-compatible
(chat completions); `generateText`, `streamText`, a tool loop (`stopWhen`), `generateObject` with a
zod schema. Each run is charged exactly what the mock counted, and each step's usage as the SDK
reported it is that count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aikeys_dev.devstack.redis import RedisServer
from aikeys_dev.devstack.upstream import MockUpstreamProcess

from tests.clients.harness import (
    CHAT_ONLY,
    NATIVE,
    Tenant,
    assert_charged_as_counted,
    base_env,
    ledger,
    run,
)

pytestmark = pytest.mark.integration
REPLY = "Hello from the aikeys mock upstream model server"

PROVIDERS = [
    pytest.param("responses", NATIVE, "/v1/responses", id="openai-responses-native"),
    pytest.param("responses", CHAT_ONLY, "/v1/chat/completions", id="openai-responses-chat-only"),
    pytest.param("chat", CHAT_ONLY, "/v1/chat/completions", id="openai-compatible"),
]


@pytest.mark.parametrize("scenario", ["generate-text", "stream-text", "tools", "generate-object"])
@pytest.mark.parametrize(("provider", "model", "upstream_path"), PROVIDERS)
def test_vercel_ai_sdk(
    provider: str,
    model: str,
    upstream_path: str,
    scenario: str,
    node_dir: Path,
    tenant: Tenant,
    mock_upstream: MockUpstreamProcess,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    env = base_env(tmp_path / "home") | {
        "AIKEYS_BASE_URL": tenant.base_url,
        "AIKEYS_API_KEY": tenant.key,
        "AIKEYS_MODEL": model,
    }
    before = ledger(redis_server)
    out = json.loads(run(["node", "vercel_ai.mjs", provider, scenario], env, node_dir).stdout)
    if scenario == "generate-text":
        assert out["text"].startswith(REPLY) and out["finish"] == "stop"
    elif scenario == "stream-text":
        assert out["text"].startswith(REPLY) and out["parts"] > 3 and out["finish"] == "stop"
    elif scenario == "tools":
        assert out["calls"] == ["mock"] and out["steps"] == 2
        assert out["text"] == "The tool returned: sunny, 21 °C in mock"
    else:
        assert out["object"] == {"city": "mock", "celsius": 1, "sunny": True}
    metered = assert_charged_as_counted(mock_upstream, redis_server, before)
    assert [tuple(u) for u in out["usage"]] == metered.counts
    requests = metered.requests
    assert {r["path"] for r in requests} == {upstream_path}
    if scenario == "stream-text":
        assert all(r["body"].get("stream") is True for r in requests)
    if scenario == "generate-object":  # a JSON schema, in either API's field
        [body] = [r["body"] for r in requests]
        fmt = body.get("response_format") or (body.get("text") or {}).get("format") or {}
        assert fmt.get("type") == "json_schema"

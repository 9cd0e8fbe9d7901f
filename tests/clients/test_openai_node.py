"""The OpenAI Node SDK (`openai` on npm) through the gateway: chat (JSON, streamed, the SDK's
`runTools` loop, `parse` with a zod schema), embeddings, and the Responses API (JSON, streamed, a
tool loop, `responses.parse`) on a Responses-native and on a chat-only model. Each run is charged
exactly what the mock counted, and the SDK received that same usage. The Connect page's Node
snippet runs as it is shown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aikeys_dev.devstack.redis import RedisServer
from aikeys_dev.devstack.upstream import MockUpstreamProcess

from aikeys import connect
from tests.clients.harness import (
    CHAT_ONLY,
    NATIVE,
    Tenant,
    assert_charged_as_counted,
    base_env,
    exports,
    ledger,
    run,
    target,
)

pytestmark = pytest.mark.integration
REPLY = "Hello from the aikeys mock upstream model server"
TOOL_ANSWER = "The tool returned: sunny, 21 °C in mock"  # the mock's city is the schema's "mock"
WEATHER = {"city": "mock", "celsius": 1, "sunny": True}


def check(scenario: str, out: dict[str, Any]) -> None:
    if scenario in ("chat", "responses"):
        assert out["text"].startswith(REPLY)
        assert out.get("finish", "stop") == "stop" and out.get("status", "completed") == "completed"
    elif scenario == "chat-stream":
        assert out["text"].startswith(REPLY) and out["chunks"] > 3
    elif scenario == "embeddings":
        assert out["count"] == 2 and out["dimensions"] > 0
    elif scenario in ("chat-tools", "responses-tools"):
        assert out["calls"] == ["mock"] and out["text"] == TOOL_ANSWER
    elif scenario in ("chat-parse", "responses-parse"):
        assert out["parsed"] == WEATHER
    elif scenario == "responses-stream":
        kinds = out["kinds"]
        assert kinds[:2] == ["response.created", "response.in_progress"]
        assert kinds[-1] == "response.completed" and "response.output_text.delta" in kinds
        assert out["text"].startswith(REPLY) and out["final"] == out["text"]
    else:
        raise AssertionError(f"no check for {scenario}")


CASES = [
    pytest.param(scenario, model, id=f"{scenario}-{label}")
    for scenario, models in {
        "chat": [CHAT_ONLY],
        "chat-stream": [CHAT_ONLY],
        "embeddings": [CHAT_ONLY],
        "chat-tools": [CHAT_ONLY],
        "chat-parse": [CHAT_ONLY],
        "responses": [NATIVE, CHAT_ONLY],
        "responses-stream": [NATIVE, CHAT_ONLY],
        "responses-tools": [NATIVE, CHAT_ONLY],
        "responses-parse": [NATIVE, CHAT_ONLY],
    }.items()
    for model in models
    for label in ["native" if model == NATIVE else "chat-only"]
]


@pytest.mark.parametrize(("scenario", "model"), CASES)
def test_openai_node_sdk(
    scenario: str,
    model: str,
    node_dir: Path,
    tenant: Tenant,
    mock_upstream: MockUpstreamProcess,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    env = base_env(tmp_path / "home") | {
        "OPENAI_BASE_URL": tenant.base_url,
        "OPENAI_API_KEY": tenant.key,
        "AIKEYS_MODEL": model,
    }
    before = ledger(redis_server)
    out = json.loads(run(["node", "openai_node.mjs", scenario], env, node_dir).stdout)
    check(scenario, out)
    metered = assert_charged_as_counted(mock_upstream, redis_server, before)
    assert [tuple(u) for u in out["usage"]] == metered.counts  # what the SDK got is what the mock counted
    paths = {r["path"] for r in metered.requests}
    if scenario.startswith("responses"):
        assert paths == {"/v1/responses" if model == NATIVE else "/v1/chat/completions"}


def test_the_connect_snippet_runs(
    node_dir: Path,
    tenant: Tenant,
    mock_upstream: MockUpstreamProcess,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    """The Connect page's hello.mjs (aikeys.connect), run with `node` after pasting the key snippet."""
    shown = target(tenant, CHAT_ONLY)
    guide = connect.guide(connect.Tool.OPENAI_NODE, shown)
    (node_dir / "hello.mjs").write_text(connect.snippet(guide, "hello.mjs"))
    env = base_env(tmp_path / "home") | exports(connect.key_snippet(shown))
    before = ledger(redis_server)
    out = run(["node", "hello.mjs"], env, node_dir).stdout
    assert out.startswith(REPLY)
    metered = assert_charged_as_counted(mock_upstream, redis_server, before)
    assert [r["path"] for r in metered.requests] == ["/v1/chat/completions"]

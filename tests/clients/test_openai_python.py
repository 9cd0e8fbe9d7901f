"""The OpenAI Python SDK: one smoke test through this suite's tenant and charge check (the SDK's
full coverage — chat, streams, embeddings, the Responses API, tool loops, `parse` — is in
tests/integration/test_gateway.py and test_responses.py), and the Connect page's Python snippet run
as it is shown."""

from __future__ import annotations

import sys
from pathlib import Path

import openai
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
LIST_MODELS = "from openai import OpenAI\nfor m in OpenAI(max_retries=0).models.list(): print(m.id)"


def test_openai_python_sdk(
    tenant: Tenant, mock_upstream: MockUpstreamProcess, redis_server: RedisServer
) -> None:
    client = openai.OpenAI(base_url=tenant.base_url, api_key=tenant.key, max_retries=0)
    before = ledger(redis_server)
    stream = client.chat.completions.create(
        model=CHAT_ONLY,
        messages=[{"role": "user", "content": "Hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    response = client.responses.create(model=NATIVE, input="Hello")
    metered = assert_charged_as_counted(mock_upstream, redis_server, before)
    usage = chunks[-1].usage
    assert usage is not None and response.usage is not None
    assert metered.counts == [
        (usage.prompt_tokens, usage.completion_tokens),
        (response.usage.input_tokens, response.usage.output_tokens),
    ]


def test_the_connect_snippet_runs(
    tenant: Tenant, mock_upstream: MockUpstreamProcess, redis_server: RedisServer, tmp_path: Path
) -> None:
    """The Connect page's hello.py (aikeys.connect), run as a person would after pasting the key
    snippet; and the SDK's own variables as the page gives them."""
    shown = target(tenant, CHAT_ONLY)
    guide = connect.guide(connect.Tool.OPENAI_PYTHON, shown)
    (tmp_path / "hello.py").write_text(connect.snippet(guide, "hello.py"))
    env = base_env(tmp_path / "home") | exports(connect.key_snippet(shown))
    before = ledger(redis_server)
    out = run([sys.executable, "hello.py"], env, tmp_path).stdout
    assert out.startswith(REPLY)
    metered = assert_charged_as_counted(mock_upstream, redis_server, before)
    assert [r["body"]["model"] for r in metered.requests] == ["m"]  # the chat-only provider's model
    # the SDK reads OPENAI_BASE_URL and OPENAI_API_KEY when given nothing
    variables = env | exports(guide.snippets[1], env)
    listed = run([sys.executable, "-c", LIST_MODELS], variables, tmp_path).stdout.split()
    assert CHAT_ONLY in listed and NATIVE in listed

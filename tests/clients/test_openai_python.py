"""The OpenAI Python SDK: one smoke test through this suite's tenant and charge check (the SDK's
full coverage — chat, streams, embeddings, the Responses API, tool loops, `parse` — is in
tests/integration/test_gateway.py and test_responses.py)."""

from __future__ import annotations

import openai
import pytest
from aikeys_dev.devstack.redis import RedisServer
from aikeys_dev.devstack.upstream import MockUpstreamProcess

from tests.clients.harness import CHAT_ONLY, NATIVE, Tenant, assert_charged_as_counted, ledger

pytestmark = pytest.mark.integration


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

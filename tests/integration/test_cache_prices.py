"""Charged what the provider bills (issue 22): a prompt prefix the provider has cached is charged
at the model's cached-input price, the rest of the input at the input price, the output at the
output price — each kind's tokens × its price, summed and rounded up once to the nano-USD. Real
control plane, gateway and redis-server; two mock upstreams that cache prompts as OpenAI does
(set here to cache any prefix: `cache_min_tokens` 0, `cache_increment` 1) and report the cached
tokens inside the input count."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from aikeys_dev.devstack.controlplane import ControlPlane
from aikeys_dev.devstack.redis import RedisServer
from aikeys_dev.devstack.services import GatewayProcess
from aikeys_dev.devstack.upstream import MockUpstreamProcess, launch_mock_upstream
from aikeys_dev.mockupstream import tokens

from aikeys.ledger.store import Allocation, Ledger, PeriodState, connect
from aikeys.periods import Period
from tests.integration.kube import apply, apply_allocation, create_key, gateway_knows, wait_for
from tests.integration.ledgers import period_state

pytestmark = pytest.mark.integration
NS = "cache"
CACHE_SMALL_PROMPTS = {"cache_min_tokens": 0, "cache_increment": 1}
# USD per million tokens; a 5-minute cache write price too, which OpenAI-shaped usage never bills
PRICES = {
    "inputPricePerMillion": "1.25",
    "cachedInputPricePerMillion": "0.125",
    "cacheWritePricePerMillion": "1.5625",
    "outputPricePerMillion": "10.00",
}
# the fallback's: not whole nano-USD per token, so one rounding of the sum differs from one per kind
OTHER_PRICES = {
    "inputPricePerMillion": "2.5000005",
    "cachedInputPricePerMillion": "0.2500003",
    "outputPricePerMillion": "15.0000007",
}
PLAIN_PRICES = {"inputPricePerMillion": "1.25", "outputPricePerMillion": "10.00"}


@dataclass(frozen=True)
class Nano:
    """Prices in nano-USD per million tokens, as the test reads them from the manifests."""

    input: int
    cached: int
    output: int

    @classmethod
    def of(cls, prices: dict[str, str]) -> Nano:
        def nano(usd: str) -> int:
            whole, _, fraction = usd.partition(".")
            return int(whole) * 10**9 + int((fraction + "0" * 9)[:9])

        cached = prices.get("cachedInputPricePerMillion", prices["inputPricePerMillion"])
        return cls(nano(prices["inputPricePerMillion"]), nano(cached), nano(prices["outputPricePerMillion"]))

    def charge(self, uncached: int, cached: int, output: int) -> int:
        """The sum of the kinds' token × price products over a million, rounded up once."""
        scaled = uncached * self.input + cached * self.cached + output * self.output
        return -(-scaled // 10**6)


@dataclass(frozen=True)
class Seen:
    """The usage a client was shown: every input token, the cached ones among them, the output."""

    input: int
    cached: int
    output: int


@pytest.fixture(scope="module")
def second(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockUpstreamProcess]:
    mock = launch_mock_upstream(tmp_path_factory.mktemp("second"))
    mock.configure(**CACHE_SMALL_PROMPTS)
    try:
        yield mock
    finally:
        mock.stop()


def provider(cp: ControlPlane, name: str, url: str, *models: dict[str, Any]) -> None:
    body = {
        "apiVersion": "aikeys.dev/v1alpha1",
        "kind": "AIProvider",
        "metadata": {"name": name},
        "spec": {"baseURL": url, "timeout": "30s", "models": list(models)},
    }
    apply(cp, json.dumps(body), NS)


@pytest.fixture(scope="module")
def key(
    control_plane: ControlPlane,
    gateway: GatewayProcess,
    mock_upstream_process: MockUpstreamProcess,
    second: MockUpstreamProcess,
) -> str:
    cp = control_plane
    cp.kubectl("create", "namespace", NS)
    provider(
        cp,
        "p",
        mock_upstream_process.url,
        {"name": "m", **PRICES},  # chat only: the Responses API is translated
        {"name": "native", "responsesAPI": "native", "contextWindow": 128_000, **PRICES},
        {"name": "plain", **PLAIN_PRICES},
        {"name": "fb", **PRICES, "backends": [{"model": f"{NS}:q/m", "weight": 0}]},
    )
    provider(cp, "q", second.url, {"name": "m", **OTHER_PRICES})
    apply_allocation(cp, NS, "main", "100.00")
    plaintext = create_key(cp, NS, "k", "main")
    gateway_knows(gateway.openai_url, plaintext)
    return plaintext


def client(gateway: GatewayProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.openai_url, api_key=key, max_retries=0)


def charged(redis_server: RedisServer, before: PeriodState) -> PeriodState:
    def done() -> PeriodState | None:
        s = period_state(redis_server, NS, "main")
        return s if s.requests > before.requests and s.reserved == 0 else None

    return wait_for(done, 10, "the charge")


def recorded(redis_server: RedisServer, model: str) -> tuple[int, int]:
    """The input tokens, and the cached ones among them, the ledger's usage records hold for
    `model` today."""

    async def read() -> tuple[int, int]:
        c = connect(redis_server.url)
        try:
            ledger = Ledger(c)
            a = Allocation(NS, "main", 0, Period.MONTHLY)
            rows = await ledger.usage(a, [ledger.now().strftime("%Y%m%d")])
        finally:
            await c.aclose()
        mine = [r for r in rows if r.model == model]
        return sum(r.input_tokens for r in mine), sum(r.cached_tokens for r in mine)

    return asyncio.run(read())


def ask(
    ai: openai.OpenAI, api: str, model: str, stream: bool, instructions: str, turns: list[dict[str, str]]
) -> Seen:
    """One request (chat: the instructions as a system message), and the usage the client saw."""
    if api == "chat":
        messages: Any = [{"role": "system", "content": instructions}, *turns]
        if not stream:
            reply = ai.chat.completions.create(model=model, messages=messages)
            usage = reply.usage
        else:
            chunks = list(
                ai.chat.completions.create(
                    model=model, messages=messages, stream=True, stream_options={"include_usage": True}
                )
            )
            usage = chunks[-1].usage
        assert usage is not None and usage.prompt_tokens_details is not None
        cached = usage.prompt_tokens_details.cached_tokens or 0
        return Seen(usage.prompt_tokens, cached, usage.completion_tokens)
    given: Any = turns
    if not stream:
        response = ai.responses.create(model=model, instructions=instructions, input=given)
    else:
        events = list(ai.responses.create(model=model, instructions=instructions, input=given, stream=True))
        last = events[-1]
        assert last.type == "response.completed"
        response = last.response
    assert response.usage is not None
    u = response.usage
    return Seen(u.input_tokens, u.input_tokens_details.cached_tokens, u.output_tokens)


API_MODELS = [
    pytest.param("chat", f"{NS}:p/m", id="chat"),
    pytest.param("responses", f"{NS}:p/native", id="responses-native"),
    pytest.param("responses", f"{NS}:p/m", id="responses-translated"),
]
STREAMS = [pytest.param(False, id="json"), pytest.param(True, id="stream")]
FIRST = [{"role": "user", "content": "Hello, world!"}]  # 3 + 4 tokens
MORE = [{"role": "assistant", "content": "Hello from the mock."}, {"role": "user", "content": "And again?"}]


def fresh(tag: str) -> tuple[str, int]:
    """Instructions no other test sent (the mock remembers every prompt), and the tokens of the
    first request's prompt prefix: the instructions as a message, then the first user message."""
    instructions = f"Be brief, {tag}."
    return instructions, tokens.PER_MESSAGE + tokens.count_text(instructions) + 3 + 4


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize(("api", "model"), API_MODELS)
def test_a_cached_prefix_is_charged_at_the_cached_price(
    api: str,
    model: str,
    stream: bool,
    gateway: GatewayProcess,
    key: str,
    mock_upstream: MockUpstreamProcess,
    redis_server: RedisServer,
) -> None:
    mock_upstream.configure(**CACHE_SMALL_PROMPTS)
    ai, price = client(gateway, key), Nano.of(PRICES)
    instructions, prefix = fresh(uuid.uuid4().hex)
    before = period_state(redis_server, NS, "main")
    first = ask(ai, api, model, stream, instructions, FIRST)
    after_first = charged(redis_server, before)
    assert first.cached == 0
    assert after_first.spent - before.spent == price.charge(first.input, 0, first.output)
    rows_before = recorded(redis_server, model)
    second = ask(ai, api, model, stream, instructions, FIRST + MORE)
    after = charged(redis_server, after_first)
    rows_after = recorded(redis_server, model)
    assert second.cached == prefix and second.input > prefix  # the first prompt, not the new turns
    # the provider's bill: what the mock counted as cached is what the client was shown
    assert [r["billed"]["cached"] for r in mock_upstream.requests() if "billed" in r] == [0, prefix]
    assert after.spent - after_first.spent == price.charge(
        second.input - second.cached, second.cached, second.output
    )
    assert after.tokens - after_first.tokens == second.input + second.output  # every input token
    # the usage records show the cached tokens as part of the input
    assert (rows_after[0] - rows_before[0], rows_after[1] - rows_before[1]) == (second.input, second.cached)
    assert after.spent - after_first.spent < price.charge(second.input, 0, second.output)


def test_without_a_cached_price_cached_tokens_cost_the_input_price(
    gateway: GatewayProcess, key: str, mock_upstream: MockUpstreamProcess, redis_server: RedisServer
) -> None:
    mock_upstream.configure(**CACHE_SMALL_PROMPTS)
    ai, price = client(gateway, key), Nano.of(PLAIN_PRICES)
    instructions, prefix = fresh(uuid.uuid4().hex)
    start = period_state(redis_server, NS, "main")
    ask(ai, "chat", f"{NS}:p/plain", False, instructions, FIRST)
    before = charged(redis_server, start)
    seen = ask(ai, "chat", f"{NS}:p/plain", False, instructions, FIRST + MORE)
    after = charged(redis_server, before)
    assert seen.cached == prefix
    assert after.spent - before.spent == price.charge(seen.input, 0, seen.output)


@pytest.mark.parametrize("stream", STREAMS)
def test_a_fallback_is_charged_at_the_backends_prices_per_kind(
    stream: bool,
    gateway: GatewayProcess,
    key: str,
    mock_upstream: MockUpstreamProcess,
    second: MockUpstreamProcess,
    redis_server: RedisServer,
) -> None:
    """The first upstream fails (503) before answering (after a few failures its circuit opens and
    it is not even asked); the backend that answers has seen the first prompt, so the second
    request's prefix is cached there, and charged at the backend's prices."""
    ai, price = client(gateway, key), Nano.of(OTHER_PRICES)
    instructions, prefix = fresh(uuid.uuid4().hex)
    second.clear_requests()
    before = period_state(redis_server, NS, "main")
    mock_upstream.configure(fail_status=503)
    first = ask(ai, "chat", f"{NS}:p/fb", stream, instructions, FIRST)
    after_first = charged(redis_server, before)
    assert after_first.requests - before.requests == 1  # one charge, at the backend's prices
    assert after_first.spent - before.spent == price.charge(first.input, 0, first.output)
    rows_before = recorded(redis_server, f"{NS}:q/m")
    seen = ask(ai, "chat", f"{NS}:p/fb", stream, instructions, FIRST + MORE)
    after = charged(redis_server, after_first)
    rows_after = recorded(redis_server, f"{NS}:q/m")  # recorded under the backend that answered
    assert seen.cached == prefix
    assert [r["billed"]["cached"] for r in second.requests() if "billed" in r] == [0, prefix]
    assert not any("billed" in r for r in mock_upstream.requests())  # failed there, unbilled
    assert (rows_after[0] - rows_before[0], rows_after[1] - rows_before[1]) == (seen.input, seen.cached)
    uncached = seen.input - seen.cached
    assert after.spent - after_first.spent == price.charge(uncached, seen.cached, seen.output)
    # one rounding: rounding each kind's product on its own would charge more
    per_kind = sum(-(-n * p // 10**6) for n, p in ((uncached, price.input), (seen.cached, price.cached)))
    assert after.spent - after_first.spent < per_kind + -(-seen.output * price.output // 10**6)

"""The promise on every surface (issue 21): every billable input inside the bound, every sent
request charged, every backend behind its own limits and sharing rules. Real control plane,
operator, gateway, redis-server and two mock upstreams that bill for what they are sent."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aikeys_dev.devstack.controlplane import ControlPlane
from aikeys_dev.devstack.redis import RedisServer
from aikeys_dev.devstack.services import GatewayProcess
from aikeys_dev.devstack.upstream import MockUpstreamProcess, launch_mock_upstream

from aikeys.estimate import Endpoint, input_tokens
from aikeys.ledger.store import PeriodState
from aikeys.money import Price
from tests.integration.kube import apply, apply_allocation, create_key, gateway_knows, wait_for
from tests.integration.ledgers import period_state

pytestmark = pytest.mark.integration
NS, PUB, OUT = "pr", "pr-pub", "pr-out"
CHEAP, DEAR = Price.parse("1.00", "2.00"), Price.parse("3.00", "6.00")
PRICES = {"inputPricePerMillion": "1.00", "outputPricePerMillion": "2.00"}
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def second(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockUpstreamProcess]:
    mock = launch_mock_upstream(tmp_path_factory.mktemp("second"))
    try:
        yield mock
    finally:
        mock.stop()


def provider(cp: ControlPlane, ns: str, name: str, url: str, *models: dict[str, Any], **spec: Any) -> None:
    body = {
        "apiVersion": "aikeys.dev/v1alpha1",
        "kind": "AIProvider",
        "metadata": {"name": name},
        "spec": {"baseURL": url, "timeout": "10s", **spec, "models": list(models)},
    }
    apply(cp, json.dumps(body), ns)


@pytest.fixture(scope="module")
def keys(
    control_plane: ControlPlane,
    gateway: GatewayProcess,
    mock_upstream_process: MockUpstreamProcess,
    second: MockUpstreamProcess,
) -> dict[str, str]:
    cp, first = control_plane, mock_upstream_process.url
    for ns in (NS, PUB, OUT):
        cp.kubectl("create", "namespace", ns)
    native = {"responsesAPI": "native", **PRICES}
    provider(
        cp,
        NS,
        "p",
        first,
        {"name": "m", **PRICES},
        {"name": "native", **native},
        {"name": "ctx", "contextWindow": 1_000_000, **native},
        {"name": "slow", **PRICES, "backends": [{"model": f"{NS}:q/m", "weight": 0}]},
        {"name": "vialim", **PRICES, "weight": 0, "backends": [{"model": f"{NS}:q/lim", "weight": 1}]},
        timeout="1s",
    )
    dear = {"inputPricePerMillion": "3.00", "outputPricePerMillion": "6.00"}
    provider(
        cp, NS, "q", second.url, {"name": "m", **dear}, {"name": "lim", **PRICES, "limits": {"requests": 2}}
    )
    # shared with one namespace only; that namespace publishes a model to everyone on top of it
    provider(cp, NS, "priv", second.url, {"name": "m", **PRICES}, sharedWith=[PUB])
    backend = [{"model": f"{NS}:priv/m", "weight": 1}]
    provider(
        cp, PUB, "pub", first, {"name": "m", **PRICES, "weight": 0, "backends": backend}, sharedWith=["*"]
    )
    apply_allocation(cp, NS, "main", "100.00")
    apply_allocation(cp, NS, "small", "0.10")
    apply_allocation(cp, OUT, "theirs", "100.00")
    found = {
        "main": create_key(cp, NS, "main", "main"),
        "small": create_key(cp, NS, "small", "small"),
        "outsider": create_key(cp, OUT, "outsider", "theirs"),
    }
    for plaintext in found.values():
        gateway_knows(gateway.openai_url, plaintext)

    def published() -> bool:
        listed = httpx.get(f"{gateway.openai_url}/models", headers=auth(found["outsider"])).json()
        return f"{PUB}:pub/m" in {m["id"] for m in listed["data"]}

    wait_for(published, 10, "the published model")
    return found


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def post(gw: GatewayProcess, key: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{gw.openai_url}/{path}", headers=auth(key), json=body, timeout=30)


def state(redis_server: RedisServer, ns: str, name: str) -> PeriodState:
    return period_state(redis_server, ns, name)


def settled(redis_server: RedisServer, ns: str, name: str, requests: int) -> PeriodState:
    def done() -> PeriodState | None:
        s = state(redis_server, ns, name)
        return s if s.requests >= requests and s.reserved == 0 else None

    return wait_for(done, 10, f"{requests} settled requests")


# --- 1. input the bound did not see ---------------------------------------------------------------


def test_a_large_refusal_part_is_inside_the_bound(
    gateway: GatewayProcess, keys: dict[str, str], mock_upstream: MockUpstreamProcess
) -> None:
    """200 KB in an assistant message's refusal part: reserved ≈ 0.01 USD, billed 5 USD before."""
    messages = [
        *HI,
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "no " * 70_000}]},
        *HI,
    ]
    reply = post(gateway, keys["small"], "chat/completions", {"model": f"{NS}:p/m", "messages": messages})
    assert reply.status_code == 402, reply.text
    assert reply.json()["error"]["type"] == "insufficient_quota"
    assert not mock_upstream.requests()  # refused before the model


def test_input_file_data_on_a_native_responses_model_is_inside_the_bound(
    gateway: GatewayProcess, keys: dict[str, str], mock_upstream: MockUpstreamProcess
) -> None:
    data = base64.b64encode(b"%PDF-1.7 " * 40_000).decode()  # 360 KB decoded: 0.36 USD at the least
    part = {"type": "input_file", "filename": "a.pdf", "file_data": f"data:application/pdf;base64,{data}"}
    body = {"model": f"{NS}:p/native", "input": [{"role": "user", "content": [part]}]}
    reply = post(gateway, keys["small"], "responses", body)
    assert reply.status_code == 402, reply.text
    assert not mock_upstream.requests()


def test_a_continued_response_is_bounded_by_the_context_window(
    gateway: GatewayProcess, keys: dict[str, str], mock_upstream: MockUpstreamProcess
) -> None:
    """previous_response_id makes the upstream bill the whole stored conversation again."""
    first = post(
        gateway, keys["small"], "responses", {"model": f"{NS}:p/ctx", "input": "hi", "max_output_tokens": 16}
    )
    assert first.status_code == 200, first.text
    mock_upstream.clear_requests()
    more = {"input": "more", "previous_response_id": first.json()["id"], "max_output_tokens": 16}
    # the whole 1,000,000-token window at 1 USD/M is more than the 0.10 USD allocation
    reply = post(gateway, keys["small"], "responses", {"model": f"{NS}:p/ctx", **more})
    assert reply.status_code == 402, reply.text
    # a model without a context window cannot take input it cannot see
    reply = post(gateway, keys["small"], "responses", {"model": f"{NS}:p/native", **more})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert (error["code"], error["param"]) == ("context_window_required", "previous_response_id")
    assert "contextWindow" in error["message"]
    assert not mock_upstream.requests()


# --- 2. a sent request is charged ----------------------------------------------------------------------


def test_a_timed_out_attempt_and_its_fallback_are_both_charged(
    gateway: GatewayProcess,
    keys: dict[str, str],
    mock_upstream: MockUpstreamProcess,
    second: MockUpstreamProcess,
    redis_server: RedisServer,
) -> None:
    """A generates but answers after the provider's timeout, B answers: two generations, two
    charges (A's bound at A's price, B's usage at B's)."""
    second.clear_requests()
    mock_upstream.configure(latency_ms=1500)  # p's timeout is 1 s
    before = state(redis_server, NS, "main")
    body = {"model": f"{NS}:p/slow", "messages": HI, "max_tokens": 5}
    reply = post(gateway, keys["main"], "chat/completions", body)
    assert reply.status_code == 200, reply.text
    assert len(mock_upstream.requests()) == 1 and len(second.requests()) == 1
    usage = reply.json()["usage"]
    after = settled(redis_server, NS, "main", before.requests + 2)
    a_bound = CHEAP.cost(input_tokens(Endpoint.CHAT, {"messages": HI}, None), 5)
    b_usage = DEAR.cost(usage["prompt_tokens"], usage["completion_tokens"])
    assert (after.requests - before.requests, after.spent - before.spent) == (2, a_bound + b_usage)


# --- 3. every backend attempt behind its own model's rate limits ----------------------------------------


def test_a_backend_keeps_its_rate_limit_when_reached_through_another_model(
    gateway: GatewayProcess,
    keys: dict[str, str],
    mock_upstream: MockUpstreamProcess,
    second: MockUpstreamProcess,
) -> None:
    second.clear_requests()
    body = {"model": f"{NS}:p/vialim", "messages": HI, "max_tokens": 3}
    replies = [post(gateway, keys["main"], "chat/completions", body) for _ in range(3)]
    assert [r.status_code for r in replies] == [200, 200, 200]
    # q/lim allows 2 requests a minute: the third went to the model's own upstream instead
    assert len(second.requests()) == 2 and len(mock_upstream.requests()) == 1
    direct = post(gateway, keys["main"], "chat/completions", {**body, "model": f"{NS}:q/lim"})
    assert direct.status_code == 429 and "retry-after" in direct.headers


# --- 7. sharing is not transitive -----------------------------------------------------------------------


def test_a_published_model_cannot_lend_out_a_provider_shared_with_its_publisher_only(
    gateway: GatewayProcess,
    keys: dict[str, str],
    mock_upstream: MockUpstreamProcess,
    second: MockUpstreamProcess,
) -> None:
    second.clear_requests()
    direct = post(gateway, keys["outsider"], "chat/completions", {"model": f"{NS}:priv/m", "messages": HI})
    assert direct.status_code == 404
    for _ in range(4):
        reply = post(gateway, keys["outsider"], "chat/completions", {"model": f"{PUB}:pub/m", "messages": HI})
        assert reply.status_code == 200, reply.text
    assert not second.requests()  # never on priv's credentials and quota
    assert len(mock_upstream.requests()) == 4

"""The Responses API through the gateway, with the official openai SDK: a model whose upstream
speaks it natively (events passed through, stored responses routed back to it) and a chat-only
one (translated both ways) — each charged exactly what the mock counted."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import openai
import pytest
from aikeys_dev.devstack.controlplane import ControlPlane
from aikeys_dev.devstack.redis import RedisServer
from aikeys_dev.devstack.services import GatewayProcess
from aikeys_dev.devstack.upstream import MockUpstreamProcess
from pydantic import BaseModel

from aikeys.ledger.store import Allocation, Ledger, PeriodState, connect
from aikeys.money import Price
from aikeys.periods import Period
from tests.integration.kube import apply, apply_allocation, create_key, delete_key, gateway_knows, wait_for

pytestmark = pytest.mark.integration
NS = "resp"
OTHER = "resp-other"
PRICE = Price.parse("1.00", "2.00")
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
}


def provider(cp: ControlPlane, name: str, url: str, responses_api: str | None) -> None:
    model: dict[str, Any] = {"name": "m", "inputPricePerMillion": "1.00", "outputPricePerMillion": "2.00"}
    if responses_api:
        model["responsesAPI"] = responses_api
    if responses_api == "native":  # it takes previous_response_id: bounded by its context window
        model["contextWindow"] = 128_000
    body = {
        "apiVersion": "aikeys.dev/v1alpha1",
        "kind": "AIProvider",
        "metadata": {"name": name},
        "spec": {"baseURL": url, "timeout": "30s", "sharedWith": [OTHER], "models": [model]},
    }
    apply(cp, json.dumps(body), NS)


@pytest.fixture(scope="module")
def keys(
    control_plane: ControlPlane, gateway: GatewayProcess, mock_upstream_process: MockUpstreamProcess
) -> dict[str, str]:
    for ns in (NS, OTHER):
        control_plane.kubectl("create", "namespace", ns)
    provider(control_plane, "native", mock_upstream_process.url, "native")
    provider(control_plane, "chatonly", mock_upstream_process.url, None)
    apply_allocation(control_plane, NS, "main", "100.00")
    apply_allocation(control_plane, OTHER, "theirs", "100.00")
    found = {
        "main": create_key(control_plane, NS, "k", "main"),
        "other": create_key(control_plane, OTHER, "o", "theirs"),
    }
    for key in found.values():
        gateway_knows(gateway.openai_url, key)
    return found


def client(gateway: GatewayProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.openai_url, api_key=key, max_retries=0)


def ledger(redis_server: RedisServer) -> PeriodState:
    async def read() -> PeriodState:
        c = connect(redis_server.url)
        try:
            return await Ledger(c).period_state(Allocation(NS, "main", 0, Period.MONTHLY))
        finally:
            await c.aclose()

    return asyncio.run(read())


def charged(redis_server: RedisServer, before: PeriodState, requests: int = 1) -> PeriodState:
    def done() -> PeriodState | None:
        s = ledger(redis_server)
        return s if s.requests >= before.requests + requests and s.reserved == 0 else None

    return wait_for(done, 10, "the charge")


def assert_charged(before: PeriodState, after: PeriodState, usage: Any) -> None:
    assert (after.tokens - before.tokens, after.spent - before.spent) == (
        usage.input_tokens + usage.output_tokens,
        PRICE.cost(usage.input_tokens, usage.output_tokens),
    )


MODELS = [pytest.param(f"{NS}:native/m", id="native"), pytest.param(f"{NS}:chatonly/m", id="chat-only")]


@pytest.mark.parametrize("model", MODELS)
def test_a_response(
    model: str,
    gateway: GatewayProcess,
    keys: dict[str, str],
    mock_upstream: MockUpstreamProcess,
    redis_server: RedisServer,
) -> None:
    before = ledger(redis_server)
    response = client(gateway, keys["main"]).responses.create(
        model=model, instructions="Be brief.", input="Hello"
    )
    assert response.status == "completed" and response.output_text
    assert response.usage is not None
    assert_charged(before, charged(redis_server, before), response.usage)
    [sent] = mock_upstream.requests()
    if model.endswith("native/m"):
        assert (
            sent["path"] == "/v1/responses" and sent["body"]["max_output_tokens"] == 4096
        )  # the cap, injected
    else:
        assert sent["path"] == "/v1/chat/completions" and sent["body"]["max_tokens"] == 4096
        assert sent["body"]["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello"},
        ]


@pytest.mark.parametrize("model", MODELS)
def test_a_streamed_response(
    model: str,
    gateway: GatewayProcess,
    keys: dict[str, str],
    mock_upstream: MockUpstreamProcess,
    redis_server: RedisServer,
) -> None:
    before = ledger(redis_server)
    stream = client(gateway, keys["main"]).responses.create(
        model=model, input="Hello there", max_output_tokens=20, stream=True
    )
    events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response  # type: ignore[union-attr]
    assert text and final.output_text == text
    assert final.usage is not None
    assert_charged(before, charged(redis_server, before), final.usage)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("streamed", [False, True])
def test_a_tool_loop(
    model: str,
    streamed: bool,
    gateway: GatewayProcess,
    keys: dict[str, str],
    mock_upstream: MockUpstreamProcess,
    redis_server: RedisServer,
) -> None:
    c = client(gateway, keys["main"])
    before = ledger(redis_server)
    conversation: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]

    def ask() -> Any:
        if not streamed:
            return c.responses.create(model=model, input=conversation, tools=[WEATHER], store=False)  # type: ignore[list-item]
        with c.responses.stream(model=model, input=conversation, tools=[WEATHER], store=False) as s:  # type: ignore[list-item]
            return s.get_final_response()

    first = ask()
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments)["city"]
    conversation += [item.model_dump(exclude_none=True) for item in first.output]
    conversation.append({"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 °C"})
    second = ask()
    assert "sunny" in second.output_text
    after = charged(redis_server, before, 2)
    assert after.tokens - before.tokens == sum(
        r.usage.input_tokens + r.usage.output_tokens for r in (first, second)
    )


class Weather(BaseModel):
    city: str
    celsius: int
    sunny: bool


@pytest.mark.parametrize("model", MODELS)
def test_structured_output_parses(model: str, gateway: GatewayProcess, keys: dict[str, str]) -> None:
    parsed = client(gateway, keys["main"]).responses.parse(
        model=model, input="Weather as JSON", text_format=Weather
    )
    assert isinstance(parsed.output_parsed, Weather)


def test_hosted_tools_and_stored_state_on_a_chat_backend_are_a_clear_400(
    gateway: GatewayProcess, keys: dict[str, str], mock_upstream: MockUpstreamProcess
) -> None:
    c = client(gateway, keys["main"])
    with pytest.raises(openai.BadRequestError) as hosted:
        c.responses.create(model=f"{NS}:chatonly/m", input="news?", tools=[{"type": "web_search"}])
    assert hosted.value.param == "tools" and "web_search" in hosted.value.message
    with pytest.raises(openai.BadRequestError) as previous:
        c.responses.create(model=f"{NS}:chatonly/m", input="and?", previous_response_id="resp_abc")
    assert previous.value.param == "previous_response_id"
    assert not mock_upstream.requests()


def test_stored_responses_belong_to_their_namespace(
    gateway: GatewayProcess, keys: dict[str, str], mock_upstream: MockUpstreamProcess
) -> None:
    mine, theirs = client(gateway, keys["main"]), client(gateway, keys["other"])
    first = mine.responses.create(model=f"{NS}:native/m", input="Remember: blue.")
    assert mine.responses.retrieve(first.id).id == first.id
    assert [i.type for i in mine.responses.input_items.list(first.id).data] == ["message"]
    follow = mine.responses.create(
        model=f"{NS}:native/m", input="What colour?", previous_response_id=first.id
    )
    assert follow.previous_response_id == first.id
    # another namespace's key: exactly like an id that does not exist
    for call in (
        lambda: theirs.responses.retrieve(first.id),
        lambda: theirs.responses.delete(first.id),
        lambda: theirs.responses.create(model=f"{NS}:native/m", input="x", previous_response_id=first.id),
        lambda: mine.responses.retrieve("resp_doesnotexist"),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    mine.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        mine.responses.retrieve(first.id)


def test_stored_responses_belong_to_the_key_that_created_them(
    control_plane: ControlPlane,
    gateway: GatewayProcess,
    keys: dict[str, str],
    mock_upstream: MockUpstreamProcess,
) -> None:
    """Another key of the same namespace — allow-listed for the very model, or a new key with the
    name of the deleted one that created the response — reads, lists, cancels, deletes and
    continues nothing of it: exactly like an id that does not exist, and nothing reaches the
    upstream."""
    peer_key = create_key(control_plane, NS, "peer", "main", f"models: ['{NS}:native/m']")
    gone_key = create_key(control_plane, NS, "reborn", "main")
    for key in (peer_key, gone_key):
        gateway_knows(gateway.openai_url, key)
    mine, peer, gone = (client(gateway, k) for k in (keys["main"], peer_key, gone_key))
    first = mine.responses.create(model=f"{NS}:native/m", input="My secret: blue.")
    kept = gone.responses.create(model=f"{NS}:native/m", input="Reborn's secret: red.")
    delete_key(control_plane, NS, "reborn")
    reborn = client(gateway, create_key(control_plane, NS, "reborn", "main"))
    gateway_knows(gateway.openai_url, reborn.api_key)
    mock_upstream.clear_requests()

    def nothing_of(other: openai.OpenAI, rid: str) -> None:
        for call in (
            lambda: other.responses.retrieve(rid),
            lambda: other.responses.input_items.list(rid),
            lambda: other.responses.cancel(rid),
            lambda: other.responses.delete(rid),
            lambda: other.responses.create(model=f"{NS}:native/m", input="and?", previous_response_id=rid),
        ):
            with pytest.raises(openai.NotFoundError) as refused:
                call()
            assert refused.value.code == "response_not_found"

    nothing_of(peer, first.id)
    nothing_of(reborn, kept.id)
    reached = mock_upstream.requests()
    assert not [r for r in reached if first.id in r["path"] or kept.id in r["path"]]
    assert not [r for r in reached if (r.get("body") or {}).get("previous_response_id")]
    # the owner still has it, untouched
    assert mine.responses.retrieve(first.id).id == first.id
    assert [i.type for i in mine.responses.input_items.list(first.id).data] == ["message"]


def test_one_model_is_retrieved_like_openai(gateway: GatewayProcess, keys: dict[str, str]) -> None:
    c = client(gateway, keys["main"])
    model = c.models.retrieve(f"{NS}:native/m")
    assert (model.id, model.object) == (f"{NS}:native/m", "model")
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve(f"{NS}:native/nope")


def test_every_request_is_in_the_access_log_and_the_metrics(
    gateway: GatewayProcess, keys: dict[str, str]
) -> None:
    headers = {"Authorization": f"Bearer {keys['main']}", "x-request-id": "trace-unknown-url"}
    reply = httpx.get(f"{gateway.openai_url}/no/such/thing", headers=headers)
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "unknown_url"
    assert reply.headers["x-request-id"] == "trace-unknown-url"
    line = wait_for(
        lambda: next((x for x in gateway.log().splitlines() if "trace-unknown-url" in x), None),
        5,
        "the log line",
    )
    logged = json.loads(line)
    assert (logged["status"], logged["endpoint"], logged["method"]) == (404, "unmatched", "GET")
    metrics = httpx.get(f"{gateway.url}/metrics").text
    assert any(
        line.startswith("aikeys_requests_total{") and 'endpoint="unmatched"' in line and 'code="404"' in line
        for line in metrics.splitlines()
    )


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": 5}, "tools"),
        ({"tools": True}, "tools"),
        (
            {"tools": [{"type": "namespace", "name": "agents", "description": "d", "tools": 5}]},
            "tools[0].tools",
        ),
        (
            {"input": [{"role": "assistant", "content": [{"type": "refusal", "refusal": 5}]}]},
            "input[0].content[0].refusal",
        ),
        ({"reasoning": "high"}, "reasoning"),
        ({"reasoning": 1}, "reasoning"),
        ({"reasoning": ["x"]}, "reasoning"),
        ({"reasoning": True}, "reasoning"),
    ],
)
def test_a_bad_type_on_a_translated_request_is_a_400_before_the_upstream(
    fields: dict[str, Any],
    param: str,
    stream: bool,
    gateway: GatewayProcess,
    keys: dict[str, str],
    mock_upstream: MockUpstreamProcess,
    redis_server: RedisServer,
) -> None:
    before = ledger(redis_server)
    reply = httpx.post(
        f"{gateway.openai_url}/responses",
        json={"model": f"{NS}:chatonly/m", "input": "hi", "stream": stream, **fields},
        headers={"Authorization": f"Bearer {keys['main']}"},
        timeout=30,
    )
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, "invalid_type")
    assert f"'{param}'" in error["message"]
    assert not mock_upstream.requests()  # nothing was sent
    after = ledger(redis_server)
    assert (after.requests, after.spent, after.reserved) == (before.requests, before.spent, before.reserved)

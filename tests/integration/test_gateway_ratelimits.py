"""Rate limits through the gateway: exact across two gateway processes, OpenAI's headers on every
response, 429 with retry-after that the SDK's own backoff honours, per key and per model."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
from aikeys_dev.devstack.controlplane import ControlPlane
from aikeys_dev.devstack.redis import RedisServer
from aikeys_dev.devstack.services import GatewayProcess
from aikeys_dev.devstack.upstream import MockUpstreamProcess
from openai.types.chat import ChatCompletionMessageParam

from tests.integration.kube import another_gateway, apply, create_key, gateway_knows

pytestmark = pytest.mark.integration
NS = "rates"
WINDOW_S = 10  # long enough that a burst on a loaded machine stays inside one window
ROOM_S = 8  # a test starts only with at least this much of its window left
HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


def allocation(cp: ControlPlane, name: str, limits: dict[str, Any] | None = None) -> None:
    spec: dict[str, Any] = {"budget": "100.00"}
    if limits:
        spec["limits"] = limits
    body = {
        "apiVersion": "aikeys.dev/v1alpha1",
        "kind": "Allocation",
        "metadata": {"name": name},
        "spec": spec,
    }
    apply(cp, json.dumps(body), NS)


@pytest.fixture(scope="module")
def keys(
    control_plane: ControlPlane, gateway: GatewayProcess, mock_upstream_process: MockUpstreamProcess
) -> dict[str, str]:
    cp = control_plane
    cp.kubectl("create", "namespace", NS)
    model = {"inputPricePerMillion": "1.00", "outputPricePerMillion": "2.00"}
    provider = {
        "apiVersion": "aikeys.dev/v1alpha1",
        "kind": "AIProvider",
        "metadata": {"name": "mock"},
        "spec": {
            "baseURL": mock_upstream_process.url,
            "models": [
                {"name": "free", **model},
                {"name": "shared", **model, "limits": {"requests": 2, "window": f"{WINDOW_S}s"}},
            ],
        },
    }
    apply(cp, json.dumps(provider), NS)
    allocation(cp, "limited", {"requests": 3, "window": f"{WINDOW_S}s"})
    allocation(cp, "backoff", {"requests": 3, "window": f"{WINDOW_S}s"})
    allocation(cp, "open")
    allocation(cp, "open2")
    found = {
        "limited": create_key(cp, NS, "limited", "limited"),
        "backoff": create_key(cp, NS, "backoff", "backoff"),
        "tokens": create_key(cp, NS, "tokens", "open", f'limits: {{tokens: 100, window: "{WINDOW_S}s"}}'),
        "open": create_key(cp, NS, "open", "open"),
        "open2": create_key(cp, NS, "open2", "open2"),
    }
    for key in found.values():
        gateway_knows(gateway.openai_url, key)
    return found


def fresh_window(redis_server: RedisServer) -> None:
    """Make sure at least ROOM_S seconds of the current rate window (Redis's clock) are left, so
    what a test sends stays inside one window; else wait for the next."""
    seconds, micros = redis.Redis.from_url(redis_server.url).time()
    left = WINDOW_S - (seconds + micros / 1e6) % WINDOW_S
    if left < ROOM_S:
        time.sleep(left + 0.05)


def chat(gw: GatewayProcess, key: str, model: str = "free", **extra: Any) -> httpx.Response:
    return httpx.post(
        f"{gw.openai_url}/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": f"{NS}:mock/{model}", "messages": HI, "max_tokens": 5, **extra},
        timeout=30,
    )


def test_an_allocation_limit_holds_exactly_across_two_gateways(
    control_plane: ControlPlane,
    gateway: GatewayProcess,
    keys: dict[str, str],
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    # what is measured is the limit, not the failure policy: a generous Redis timeout, so that a
    # machine busy with other work never turns an admission into a fail-closed 503
    patient = {"AIKEYS_REDIS_TIMEOUT": "5"}
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    with (
        another_gateway(control_plane, redis_server.url, tmp_path / "one", keys["limited"], **patient) as one,
        another_gateway(control_plane, redis_server.url, tmp_path / "two", keys["limited"], **patient) as two,
    ):
        fresh_window(redis_server)
        with ThreadPoolExecutor(10) as pool:
            replies = list(pool.map(lambda i: chat((one, two)[i % 2], keys["limited"]), range(10)))
    codes = sorted(r.status_code for r in replies)
    assert codes == [200] * 3 + [429] * 7
    admitted = [r for r in replies if r.status_code == 200]
    assert sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in admitted) == [0, 1, 2]
    for r in replies:
        assert r.headers["x-ratelimit-limit-requests"] == "3"
        assert r.headers["x-ratelimit-reset-requests"].endswith("s")
    refused = next(r for r in replies if r.status_code == 429)
    assert 1 <= int(refused.headers["retry-after"]) <= WINDOW_S
    assert 0 < int(refused.headers["retry-after-ms"]) <= WINDOW_S * 1000
    error = refused.json()["error"]
    assert (error["code"], error["type"]) == ("rate_limit_exceeded", "requests")


def test_the_sdks_own_backoff_gets_through(
    gateway: GatewayProcess, keys: dict[str, str], redis_server: RedisServer
) -> None:
    fresh_window(redis_server)
    for _ in range(3):
        assert chat(gateway, keys["backoff"]).status_code == 200
    client = openai.OpenAI(base_url=gateway.openai_url, api_key=keys["backoff"], max_retries=2)
    started = time.monotonic()
    reply = client.chat.completions.with_raw_response.create(
        model=f"{NS}:mock/free", messages=HI, max_tokens=5
    )
    assert reply.parse().choices[0].message.content
    assert time.monotonic() - started >= 0.5  # it waited for the window, as retry-after said
    assert reply.retries_taken >= 1


def test_a_key_token_limit_counts_the_bound_then_what_was_used(
    gateway: GatewayProcess,
    keys: dict[str, str],
    redis_server: RedisServer,
    mock_upstream: MockUpstreamProcess,
) -> None:
    fresh_window(redis_server)
    # each is admitted at its bound (40 + the input's byte bound, 26: 66 of the 100) and corrected at
    # settle to what it used (8 + 16): the second fits only because the first was corrected
    first = chat(gateway, keys["tokens"], max_tokens=40)
    assert first.status_code == 200 and first.headers["x-ratelimit-limit-tokens"] == "100"
    assert first.headers["x-ratelimit-remaining-tokens"] == "34"
    second = chat(gateway, keys["tokens"], max_tokens=40)
    assert second.status_code == 200
    too_big = chat(gateway, keys["tokens"], max_tokens=500)
    assert too_big.status_code == 429 and too_big.headers["x-should-retry"] == "false"
    assert "more than the whole limit" in too_big.json()["error"]["message"]
    assert chat(gateway, keys["open"]).status_code == 200  # the same allocation, another key: unlimited


def test_a_model_limit_spans_allocations(
    gateway: GatewayProcess, keys: dict[str, str], redis_server: RedisServer
) -> None:
    fresh_window(redis_server)
    codes = [chat(gateway, keys[k], model="shared").status_code for k in ("open", "open2", "open", "open2")]
    assert codes == [200, 200, 429, 429]
    refused = chat(gateway, keys["open2"], model="shared")
    time.sleep(int(refused.headers["retry-after-ms"]) / 1000 + 0.05)
    assert chat(gateway, keys["open2"], model="shared").status_code == 200


def test_limits_need_something_to_limit(control_plane: ControlPlane) -> None:
    body = {
        "apiVersion": "aikeys.dev/v1alpha1",
        "kind": "Allocation",
        "metadata": {"name": "empty-limits"},
        "spec": {"budget": "1.00", "limits": {"window": "1m"}},
    }
    out = control_plane.kubectl("apply", "-n", NS, "-f", "-", stdin=json.dumps(body), check=False)
    assert out.returncode != 0 and "set limits.requests, limits.tokens or both" in out.stderr


def test_limits_show_in_kubectl(control_plane: ControlPlane, keys: dict[str, str]) -> None:
    wide = control_plane.kubectl("get", "allocation", "limited", "-n", NS, "-o", "wide").stdout
    header, row = wide.splitlines()[:2]
    assert "RATE REQ" in header and "WINDOW" in header
    assert row.split()[header.split().index("RATE") :][:1] == ["3"] and f"{WINDOW_S}s" in row
    keys_wide = control_plane.kubectl("get", "aikey", "tokens", "-n", NS, "-o", "wide").stdout
    assert "RATE TOKENS" in keys_wide.splitlines()[0] and "100" in keys_wide.splitlines()[1]
